//! The writes; each function runs on the writer thread.

use std::collections::{BTreeSet, HashMap};

use natter_core::{
    ConversationId, NewMessage, StoredMessage, UserId,
    store::{
        Appended, ConversationInfo, ImportData, ImportReport, NewConversation, NewUser, StoreError,
        User,
    },
    time::now_ms,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    error::Result,
    rows::{self, conversation_exists, immediate, is_foreign_key_violation, user_exists},
};

/// One send's outcome, or `Err` for a database failure that fails the batch.
type Outcome = Result<Result<Appended, StoreError>>;

/// The newest `seq` of each conversation sends went to, as committed.
///
/// Only the writer thread assigns `seq`, and conversations are never
/// deleted, so this saves a read per send. It is updated after a commit
/// succeeds, never from a transaction that may yet roll back.
#[derive(Debug, Default)]
pub(crate) struct LastSeqs(HashMap<ConversationId, i64>);

impl LastSeqs {
    /// Past this many conversations the cache starts over, bounding memory.
    const MAX: usize = 100_000;

    fn merge(&mut self, batch: HashMap<ConversationId, i64>) {
        if self.0.len() + batch.len() > Self::MAX {
            self.0.clear();
        }
        self.0.extend(batch);
    }
}

/// Commits a batch of sends in one transaction; see `Store::append`.
pub(crate) fn append(
    conn: &mut Connection,
    committed: &mut LastSeqs,
    batch: Vec<NewMessage>,
) -> Result<Vec<Result<Appended, StoreError>>> {
    let tx = immediate(conn)?;
    // The newest seq of each conversation in this batch, not yet committed.
    let mut seqs = HashMap::new();
    let outcomes = batch
        .into_iter()
        .map(|m| append_one(&tx, committed, &mut seqs, m))
        .collect::<Result<Vec<_>>>()?;
    tx.commit()?;
    committed.merge(seqs);
    Ok(outcomes)
}

/// One send inside the batch's transaction. A duplicate earlier in the same
/// batch is found too, since this transaction sees its own inserts.
fn append_one(
    tx: &Connection,
    committed: &LastSeqs,
    seqs: &mut HashMap<ConversationId, i64>,
    m: NewMessage,
) -> Outcome {
    let last_seq = match seqs
        .get(&m.conversation)
        .or(committed.0.get(&m.conversation))
    {
        Some(seq) => *seq,
        None => match stored_last_seq(tx, &m.conversation)? {
            Some(seq) => seq,
            None => {
                let what = format!("conversation {}", m.conversation);
                return Ok(Err(StoreError::NotFound(what)));
            }
        },
    };
    let seq = last_seq + 1;
    match insert_message(tx, &m, seq) {
        Ok(1) => {}
        // The (conversation, sender, client_message_id) is taken: a retry.
        Ok(_) => {
            let message =
                stored_duplicate(tx, &m)?.ok_or_else(|| rusqlite::Error::QueryReturnedNoRows)?;
            return Ok(Ok(Appended {
                message,
                duplicate: true,
            }));
        }
        Err(e) if is_foreign_key_violation(&e) => {
            return Ok(Err(StoreError::UnknownUser(m.sender)));
        }
        Err(e) => return Err(e.into()),
    }
    // Only a stored message takes its seq: a refused one leaves no gap.
    seqs.insert(m.conversation.clone(), seq);
    Ok(Ok(Appended {
        message: stored(m, seq),
        duplicate: false,
    }))
}

/// The message already stored for this send's `client_message_id`, if any.
fn stored_duplicate(tx: &Connection, m: &NewMessage) -> Result<Option<StoredMessage>> {
    let Some(client_id) = &m.client_message_id else {
        return Ok(None);
    };
    let found = tx
        .prepare_cached(
            "SELECT id, conversation_id, seq, sender, content, content_type,
                    client_message_id, sent_at
             FROM messages
             WHERE conversation_id = ?1 AND sender = ?2 AND client_message_id = ?3",
        )?
        .query_row(
            params![m.conversation.as_str(), m.sender.as_str(), client_id],
            rows::message,
        )
        .optional()?;
    Ok(found)
}

/// The conversation's newest `seq` in the database (0 before its first
/// message), or `None` if it does not exist.
fn stored_last_seq(tx: &Connection, conversation: &ConversationId) -> Result<Option<i64>> {
    let seq = tx
        .prepare_cached(concat!(
            "SELECT ",
            rows::last_seq_of_c!(),
            " FROM conversations c WHERE c.id = ?1"
        ))?
        .query_row([conversation.as_str()], |r| r.get(0))
        .optional()?;
    Ok(seq)
}

/// Inserts unless the send's client id is taken; the rows inserted (0 or 1).
fn insert_message(tx: &Connection, m: &NewMessage, seq: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender, content, content_type,
                               client_message_id, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (client_message_id, conversation_id, sender)
             WHERE client_message_id IS NOT NULL DO NOTHING",
    )?
    .execute(params![
        m.id.as_str(),
        m.conversation.as_str(),
        seq,
        m.sender.as_str(),
        m.content,
        m.content_type,
        m.client_message_id,
        m.sent_at,
    ])
}

fn stored(m: NewMessage, seq: i64) -> StoredMessage {
    StoredMessage {
        id: m.id,
        conversation: m.conversation,
        seq,
        sender: m.sender,
        content: m.content,
        content_type: m.content_type,
        client_message_id: m.client_message_id,
        sent_at: m.sent_at,
    }
}

/// Creates a user; `Conflict` if the id is taken.
pub(crate) fn add_user(conn: &Connection, user: NewUser) -> Result<User> {
    let now = now_ms();
    if !insert_user(conn, &user, now)? {
        return Err(StoreError::Conflict(format!("user {}", user.id)).into());
    }
    Ok(User {
        id: user.id,
        name: user.name,
        created_at: now,
        last_seen: None,
    })
}

/// `NotFound` if the user does not exist, so a caller bug is not silent.
pub(crate) fn set_last_seen(conn: &Connection, user: &UserId, at_ms: i64) -> Result<()> {
    let changed = conn
        .prepare_cached("UPDATE users SET last_seen = ?2 WHERE id = ?1")?
        .execute(params![user.as_str(), at_ms])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("user {user}")).into());
    }
    Ok(())
}

/// Creates a conversation and its (deduplicated) members in one transaction.
pub(crate) fn create_conversation(
    conn: &mut Connection,
    new: NewConversation,
) -> Result<ConversationInfo> {
    let tx = immediate(conn)?;
    let now = now_ms();
    if !insert_conversation(&tx, &new.id, new.title.as_deref(), now)? {
        return Err(StoreError::Conflict(format!("conversation {}", new.id)).into());
    }
    let members: BTreeSet<UserId> = new.members.into_iter().collect();
    for user in &members {
        if !user_exists(&tx, user)? {
            return Err(StoreError::UnknownUser(user.clone()).into());
        }
        insert_member(&tx, &new.id, user, now)?;
    }
    tx.commit()?;
    Ok(ConversationInfo {
        id: new.id,
        title: new.title,
        created_at: now,
        last_seq: 0,
        members: members.into_iter().collect(),
    })
}

/// Loads users, then conversations and their members, in one transaction;
/// see `Store::import`. Returning early drops the transaction: a rollback.
pub(crate) fn import(conn: &mut Connection, data: &ImportData) -> Result<ImportReport> {
    check_repeats(data)?;
    let tx = immediate(conn)?;
    let now = now_ms();
    let mut report = ImportReport::default();
    for user in &data.users {
        report.users_created += u64::from(insert_user(&tx, user, now)?);
    }
    for conv in &data.conversations {
        report.conversations_created += u64::from(insert_conversation(
            &tx,
            &conv.id,
            conv.title.as_deref(),
            now,
        )?);
        for user in &conv.members {
            if !user_exists(&tx, user)? {
                let msg = format!("conversation {}: unknown participant {user}", conv.id);
                return Err(StoreError::Invalid(msg).into());
            }
            report.members_added += u64::from(insert_member(&tx, &conv.id, user, now)?);
        }
    }
    tx.commit()?;
    Ok(report)
}

/// An id listed more than once in one file must say the same thing each
/// time (same user name, same conversation title); otherwise which one wins
/// would be an accident of order, so the file is refused. Repeated
/// conversation entries may list different members: they are all added,
/// as a second import of the same conversation would.
fn check_repeats(data: &ImportData) -> Result<(), StoreError> {
    let mut names = HashMap::new();
    for u in &data.users {
        if names
            .insert(&u.id, &u.name)
            .is_some_and(|name| name != &u.name)
        {
            return Err(StoreError::Invalid(format!(
                "user {}: listed twice with different names",
                u.id
            )));
        }
    }
    let mut titles = HashMap::new();
    for c in &data.conversations {
        if titles
            .insert(&c.id, &c.title)
            .is_some_and(|title| title != &c.title)
        {
            return Err(StoreError::Invalid(format!(
                "conversation {}: listed twice with different titles",
                c.id
            )));
        }
    }
    Ok(())
}

/// Inserts a user unless the id exists; whether it was inserted.
fn insert_user(conn: &Connection, user: &NewUser, now: i64) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO users (id, name, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![user.id.as_str(), user.name, now])?;
    Ok(inserted == 1)
}

/// Inserts a conversation unless the id exists; whether it was inserted.
fn insert_conversation(
    conn: &Connection,
    id: &ConversationId,
    title: Option<&str>,
    now: i64,
) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO conversations (id, title, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id.as_str(), title, now])?;
    Ok(inserted == 1)
}

/// Adds a member unless already one; whether it was added.
fn insert_member(
    conn: &Connection,
    conv: &ConversationId,
    user: &UserId,
    now: i64,
) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            // A new member starts caught up on delivery: the history before
            // they joined is not news to its senders.
            concat!(
                "INSERT INTO members (conversation_id, user_id, joined_at, delivered_seq)
                 SELECT ?1, ?2, ?3, ",
                rows::last_seq_of_c!(),
                " FROM conversations c WHERE c.id = ?1
                 ON CONFLICT (conversation_id, user_id) DO NOTHING"
            ),
        )?
        .execute(params![conv.as_str(), user.as_str(), now])?;
    Ok(inserted == 1)
}

/// A member's watermark: one of the two `seq` columns of `members`.
#[derive(Debug, Clone, Copy)]
enum Watermark {
    Delivered,
    Read,
}

impl Watermark {
    fn select_sql(self) -> &'static str {
        match self {
            Self::Delivered => {
                "SELECT delivered_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2"
            }
            Self::Read => {
                "SELECT read_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2"
            }
        }
    }

    fn update_sql(self) -> &'static str {
        match self {
            Self::Delivered => {
                "UPDATE members SET delivered_seq = ?3 WHERE conversation_id = ?1 AND user_id = ?2"
            }
            Self::Read => {
                "UPDATE members SET read_seq = ?3 WHERE conversation_id = ?1 AND user_id = ?2"
            }
        }
    }
}

/// Raises a member's watermark to `seq` if it is lower; the value before, or
/// `None` if the pair is not a membership. Inside the caller's transaction.
fn raise(
    tx: &Connection,
    mark: Watermark,
    conversation: &ConversationId,
    user: &UserId,
    seq: i64,
) -> Result<Option<i64>> {
    let key = params![conversation.as_str(), user.as_str()];
    let Some(previous) = tx
        .prepare_cached(mark.select_sql())?
        .query_row(key, |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
    if previous < seq {
        tx.prepare_cached(mark.update_sql())?.execute(params![
            conversation.as_str(),
            user.as_str(),
            seq
        ])?;
    }
    Ok(Some(previous))
}

/// Raises delivered watermarks in one transaction; see
/// `Store::advance_delivered`. A pair listed twice sees the first raise.
pub(crate) fn advance_delivered(
    conn: &mut Connection,
    updates: &[(ConversationId, UserId, i64)],
) -> Result<Vec<i64>> {
    let tx = immediate(conn)?;
    let before = updates
        .iter()
        .map(|(conversation, user, seq)| {
            let previous = raise(&tx, Watermark::Delivered, conversation, user, *seq)?;
            Ok(previous.unwrap_or(i64::MAX))
        })
        .collect::<Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(before)
}

/// Raises a read watermark; `NotFound` if the user is not a member.
pub(crate) fn mark_read(
    conn: &mut Connection,
    conversation: &ConversationId,
    user: &UserId,
    seq: i64,
) -> Result<i64> {
    let tx = immediate(conn)?;
    let Some(previous) = raise(&tx, Watermark::Read, conversation, user, seq)? else {
        let what = format!("member {user} of conversation {conversation}");
        return Err(StoreError::NotFound(what).into());
    };
    tx.commit()?;
    Ok(previous)
}

/// Adds a member with fresh (0) watermarks; `Ok(false)` if already one.
pub(crate) fn add_member(
    conn: &mut Connection,
    conversation: &ConversationId,
    user: &UserId,
) -> Result<bool> {
    let tx = immediate(conn)?;
    if !conversation_exists(&tx, conversation)? {
        return Err(StoreError::NotFound(format!("conversation {conversation}")).into());
    }
    if !user_exists(&tx, user)? {
        return Err(StoreError::UnknownUser(user.clone()).into());
    }
    let added = insert_member(&tx, conversation, user, now_ms())?;
    tx.commit()?;
    Ok(added)
}

/// Deletes a membership row, and with it the member's watermarks;
/// `Ok(false)` if the user was not a member.
pub(crate) fn remove_member(
    conn: &mut Connection,
    conversation: &ConversationId,
    user: &UserId,
) -> Result<bool> {
    let tx = immediate(conn)?;
    if !conversation_exists(&tx, conversation)? {
        return Err(StoreError::NotFound(format!("conversation {conversation}")).into());
    }
    let removed = tx
        .prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")?
        .execute(params![conversation.as_str(), user.as_str()])?;
    tx.commit()?;
    Ok(removed == 1)
}
