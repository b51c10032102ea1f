//! Between rows and domain types.

use natter_core::{
    ConversationId, MessageId, StoredMessage, UserId,
    store::{ConversationInfo, ConversationSummary, User},
};
use rusqlite::{Connection, Row, TransactionBehavior, ffi};

use super::error::Result;

/// SQL for the newest `seq` of the conversation aliased `c`, 0 before its
/// first message: one seek of `UNIQUE (conversation_id, seq)`. A macro so
/// that statements can `concat!` it into one literal.
macro_rules! last_seq_of_c {
    () => {
        "coalesce((SELECT max(s.seq) FROM messages s WHERE s.conversation_id = c.id), 0)"
    };
}
pub(crate) use last_seq_of_c;

/// A `messages` row selected as `id, conversation_id, seq, sender, content,
/// content_type, client_message_id, sent_at`.
pub(crate) fn message(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    message_at(r, 0)
}

/// The same eight `messages` columns, starting at column `at`.
fn message_at(r: &Row<'_>, at: usize) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: MessageId::new_unchecked(r.get::<_, String>(at)?),
        conversation: ConversationId::new_unchecked(r.get::<_, String>(at + 1)?),
        seq: r.get(at + 2)?,
        sender: UserId::new_unchecked(r.get::<_, String>(at + 3)?),
        content: r.get(at + 4)?,
        content_type: r.get(at + 5)?,
        client_message_id: r.get(at + 6)?,
        sent_at: r.get(at + 7)?,
    })
}

/// A summary row selected as `id, title, created_at, last_seq` of the
/// conversation, the member's `read_seq`, the unread count, then the eight
/// columns of [`message`] for the last message (all NULL when there is
/// none). The members are left empty for the caller to fill.
pub(crate) fn summary(r: &Row<'_>) -> rusqlite::Result<ConversationSummary> {
    let last_message = match r.get::<_, Option<String>>(6)? {
        Some(_) => Some(message_at(r, 6)?),
        None => None,
    };
    Ok(ConversationSummary {
        conversation: ConversationInfo {
            id: ConversationId::new_unchecked(r.get::<_, String>(0)?),
            title: r.get(1)?,
            created_at: r.get(2)?,
            last_seq: r.get(3)?,
            members: Vec::new(),
        },
        last_message,
        read_seq: r.get(4)?,
        unread: r.get(5)?,
    })
}

/// A `users` row selected as `id, name, created_at, last_seen`.
pub(crate) fn user(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId::new_unchecked(r.get::<_, String>(0)?),
        name: r.get(1)?,
        created_at: r.get(2)?,
        last_seen: r.get(3)?,
    })
}

/// Whether a user row exists.
pub(crate) fn user_exists(conn: &Connection, id: &UserId) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?;
    Ok(stmt.exists([id.as_str()])?)
}

/// Whether a conversation row exists.
pub(crate) fn conversation_exists(conn: &Connection, id: &ConversationId) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")?;
    Ok(stmt.exists([id.as_str()])?)
}

/// Starts a write transaction that takes the write lock at once, so it can
/// never fail half-way with `SQLITE_BUSY` when upgrading a read.
pub(crate) fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Whether a statement failed on a foreign key (and was undone on its own,
/// leaving the transaction usable).
pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}
