//! Between rows and domain types.

use natter_core::{ConversationId, MessageId, StoredMessage, UserId, store::User};
use rusqlite::{Connection, Row, TransactionBehavior, ffi};

use super::error::Result;

/// A `messages` row selected as `id, conversation_id, seq, sender, content,
/// content_type, client_message_id, sent_at`.
pub(crate) fn message(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: MessageId::new_unchecked(r.get::<_, String>(0)?),
        conversation: ConversationId::new_unchecked(r.get::<_, String>(1)?),
        seq: r.get(2)?,
        sender: UserId::new_unchecked(r.get::<_, String>(3)?),
        content: r.get(4)?,
        content_type: r.get(5)?,
        client_message_id: r.get(6)?,
        sent_at: r.get(7)?,
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
