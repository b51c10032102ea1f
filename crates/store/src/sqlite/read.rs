//! The reads; each function runs on a read-only connection.

use std::collections::BTreeMap;

use natter_core::{
    ConversationId, MessageId, StoredMessage, UserId,
    store::{ConversationInfo, ConversationSummary, StoreError, SyncPage, SyncQuery, User},
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{error::Result, rows};

pub(crate) fn ping(conn: &Connection) -> Result<()> {
    conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
    Ok(())
}

pub(crate) fn user(conn: &Connection, id: &UserId) -> Result<Option<User>> {
    let user = conn
        .prepare_cached("SELECT id, name, created_at, last_seen FROM users WHERE id = ?1")?
        .query_row([id.as_str()], rows::user)
        .optional()?;
    Ok(user)
}

/// The conversation and its members (sorted), read in one snapshot.
pub(crate) fn conversation(
    conn: &mut Connection,
    id: &ConversationId,
) -> Result<Option<ConversationInfo>> {
    let tx = conn.transaction()?;
    let found = tx
        .prepare_cached(concat!(
            "SELECT c.title, c.created_at, ",
            rows::last_seq_of_c!(),
            " FROM conversations c WHERE c.id = ?1"
        ))?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((title, created_at, last_seq)) = found else {
        return Ok(None);
    };
    let members = tx
        .prepare_cached("SELECT user_id FROM members WHERE conversation_id = ?1 ORDER BY user_id")?
        .query_map([id.as_str()], |r| {
            Ok(UserId::new_unchecked(r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(ConversationInfo {
        id: id.clone(),
        title,
        created_at,
        last_seq,
        members,
    }))
}

/// The ids of the user's conversations, sorted.
pub(crate) fn conversations_of(conn: &Connection, user: &UserId) -> Result<Vec<ConversationId>> {
    let ids = conn
        .prepare_cached(
            "SELECT conversation_id FROM members WHERE user_id = ?1 ORDER BY conversation_id",
        )?
        .query_map([user.as_str()], |r| {
            Ok(ConversationId::new_unchecked(r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// One page of missed messages; see `Store::sync`.
///
/// Everything is read in one deferred transaction: on a WAL database it is
/// one snapshot, so `last_seq` and the messages agree even while sends are
/// being committed.
pub(crate) fn sync(conn: &mut Connection, query: &SyncQuery) -> Result<SyncPage> {
    let tx = conn.transaction()?;
    let conversations = user_conversations(&tx, &query.user)?;
    let after = match &query.after_message {
        Some(id) => Some(message_position(&tx, id, &conversations)?),
        None => None,
    };
    let mut page = SyncPage {
        messages: Vec::new(),
        cursors: BTreeMap::new(),
        has_more: false,
    };
    for (conversation, last_seq) in conversations {
        let start = start_seq(&tx, &conversation, query, after)?.clamp(0, last_seq);
        let room = query.limit.saturating_sub(page.messages.len());
        let messages = messages_after(&tx, &conversation, start, room)?;
        // Either the last message returned, or where the client already is.
        let cursor = messages.last().map_or(start, |m| m.seq);
        page.has_more |= cursor < last_seq;
        page.cursors.insert(conversation, cursor);
        page.messages.extend(messages);
    }
    Ok(page)
}

/// The user's conversations with their `last_seq`, ordered by id.
fn user_conversations(conn: &Connection, user: &UserId) -> Result<Vec<(ConversationId, i64)>> {
    let list = conn
        .prepare_cached(concat!(
            "SELECT c.id, ",
            rows::last_seq_of_c!(),
            " FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = ?1 ORDER BY m.conversation_id"
        ))?
        .query_map([user.as_str()], |r| {
            Ok((
                ConversationId::new_unchecked(r.get::<_, String>(0)?),
                r.get(1)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(list)
}

/// The commit position of `after_message`; `NotFound` unless it is a message
/// of one of the user's conversations (anything else must not be revealed).
fn message_position(
    conn: &Connection,
    id: &MessageId,
    conversations: &[(ConversationId, i64)],
) -> Result<i64> {
    let found: Option<(i64, String)> = conn
        .prepare_cached("SELECT pos, conversation_id FROM messages WHERE id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match found {
        Some((pos, conv)) if conversations.iter().any(|(c, _)| c.as_str() == conv) => Ok(pos),
        _ => Err(StoreError::NotFound(format!("message {id}")).into()),
    }
}

/// Where the client is in a conversation: its cursor if it sent one; else,
/// with `after_message` at commit position `after`, the newest message of
/// the conversation committed no later than it; else the beginning.
fn start_seq(
    conn: &Connection,
    conversation: &ConversationId,
    query: &SyncQuery,
    after: Option<i64>,
) -> Result<i64> {
    if let Some(&cursor) = query.cursors.get(conversation) {
        return Ok(cursor);
    }
    let Some(after) = after else {
        return Ok(0);
    };
    // seq and pos grow together within a conversation, so walking seq down
    // from the newest stops at the first message at or before `after`.
    let seq = conn
        .prepare_cached(
            "SELECT seq FROM messages WHERE conversation_id = ?1 AND pos <= ?2
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![conversation.as_str(), after], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0))
}

/// Up to `limit` messages of the conversation after `seq`, in order.
fn messages_after(
    conn: &Connection,
    conversation: &ConversationId,
    seq: i64,
    limit: usize,
) -> Result<Vec<StoredMessage>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let messages = conn
        .prepare_cached(
            "SELECT id, conversation_id, seq, sender, content, content_type,
                    client_message_id, sent_at
             FROM messages WHERE conversation_id = ?1 AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?
        .query_map(params![conversation.as_str(), seq, limit], rows::message)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(messages)
}

/// The users sharing a conversation with `user`, `user` excluded, sorted by
/// id: one query, a self-join of `members` (the user's memberships by
/// `members_by_user`, their co-members by the primary key).
pub(crate) fn contacts_of(
    conn: &Connection,
    user: &UserId,
    max_members: usize,
) -> Result<Vec<User>> {
    // The size check counts at most max_members + 1 rows per conversation.
    let users = conn
        .prepare_cached(
            "SELECT u.id, u.name, u.created_at, u.last_seen FROM users u
             WHERE u.id IN (SELECT DISTINCT other.user_id
                            FROM members me
                            JOIN members other ON other.conversation_id = me.conversation_id
                            WHERE me.user_id = ?1 AND other.user_id <> ?1
                              AND (SELECT count(*) FROM (SELECT 1 FROM members size
                                                         WHERE size.conversation_id = me.conversation_id
                                                         LIMIT ?2 + 1)) <= ?2)
             ORDER BY u.id",
        )?
        .query_map(params![user.as_str(), max_members as i64], rows::user)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(users)
}

pub(crate) fn message(conn: &Connection, id: &MessageId) -> Result<Option<StoredMessage>> {
    let message = conn
        .prepare_cached(
            "SELECT id, conversation_id, seq, sender, content, content_type,
                    client_message_id, sent_at
             FROM messages WHERE id = ?1",
        )?
        .query_row([id.as_str()], rows::message)
        .optional()?;
    Ok(message)
}

/// The delivered watermark of each pair, in order, from one snapshot; 0 for
/// a pair that is not a membership.
pub(crate) fn delivered_watermarks(
    conn: &mut Connection,
    keys: &[(ConversationId, UserId)],
) -> Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let mut stmt = tx.prepare_cached(
        "SELECT delivered_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2",
    )?;
    let values = keys
        .iter()
        .map(|(conversation, user)| {
            let value = stmt
                .query_row(params![conversation.as_str(), user.as_str()], |r| r.get(0))
                .optional()?;
            Ok(value.unwrap_or(0))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(values)
}

/// The user's conversations, most recently active first (by the time of
/// their last message, or of their creation if they have none), read in one
/// snapshot: one query for the summaries, one for the members of them all.
///
/// The last message is found by `UNIQUE (conversation_id, seq)` at its
/// largest seq; the unread count is a range scan of the same index over the
/// messages after `read_seq`. Sorting is over the user's conversations only.
pub(crate) fn conversation_summaries(
    conn: &mut Connection,
    user: &UserId,
) -> Result<Vec<ConversationSummary>> {
    let tx = conn.transaction()?;
    let mut members = co_members(&tx, user)?;
    let mut summaries = tx
        .prepare_cached(concat!(
            "SELECT c.id, c.title, c.created_at, coalesce(l.seq, 0), m.read_seq,
                    (SELECT count(*) FROM messages u
                     WHERE u.conversation_id = m.conversation_id AND u.seq > m.read_seq
                       AND u.sender <> m.user_id),
                    l.id, l.conversation_id, l.seq, l.sender, l.content, l.content_type,
                    l.client_message_id, l.sent_at
             FROM members m
             JOIN conversations c ON c.id = m.conversation_id
             LEFT JOIN messages l ON l.conversation_id = m.conversation_id AND l.seq = ",
            rows::last_seq_of_c!(),
            "
             WHERE m.user_id = ?1
             ORDER BY coalesce(l.sent_at, c.created_at) DESC, l.pos DESC, c.id"
        ))?
        .query_map([user.as_str()], rows::summary)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for summary in &mut summaries {
        let info = &mut summary.conversation;
        info.members = members.remove(&info.id).unwrap_or_default();
    }
    Ok(summaries)
}

/// The members of each of the user's conversations, each list sorted.
fn co_members(conn: &Connection, user: &UserId) -> Result<BTreeMap<ConversationId, Vec<UserId>>> {
    let mut members: BTreeMap<ConversationId, Vec<UserId>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT other.conversation_id, other.user_id
         FROM members me
         JOIN members other ON other.conversation_id = me.conversation_id
         WHERE me.user_id = ?1
         ORDER BY other.conversation_id, other.user_id",
    )?;
    let mut rows = stmt.query([user.as_str()])?;
    while let Some(r) = rows.next()? {
        let conversation = ConversationId::new_unchecked(r.get::<_, String>(0)?);
        let member = UserId::new_unchecked(r.get::<_, String>(1)?);
        members.entry(conversation).or_default().push(member);
    }
    Ok(members)
}

/// Up to `limit` messages of the conversation with `seq < before`, newest
/// first: a backward range scan of `UNIQUE (conversation_id, seq)`.
pub(crate) fn history(
    conn: &Connection,
    conversation: &ConversationId,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredMessage>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let before = before.unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let messages = conn
        .prepare_cached(
            "SELECT id, conversation_id, seq, sender, content, content_type,
                    client_message_id, sent_at
             FROM messages WHERE conversation_id = ?1 AND seq < ?2
             ORDER BY seq DESC LIMIT ?3",
        )?
        .query_map(params![conversation.as_str(), before, limit], rows::message)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(messages)
}
