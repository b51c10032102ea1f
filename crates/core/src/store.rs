//! The `Store` seam: everything natter keeps durably.
//!
//! One trait, one implementation per database (`natter-store`). The chat
//! logic above calls only this trait. Implementations keep their SQL and
//! migrations to themselves and must uphold the invariants written on each
//! method: they are what the protocol's guarantees rest on.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{
    ids::{ConversationId, MessageId, UserId},
    message::{NewMessage, StoredMessage},
};

/// What can go wrong in a store. `Unavailable` is the database's own failure;
/// the others are answers about the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("unknown user {0}")]
    UnknownUser(UserId),
    #[error("invalid data: {0}")]
    Invalid(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: Option<String>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub id: UserId,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    pub id: ConversationId,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(rename = "participants")]
    pub members: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationInfo {
    pub id: ConversationId,
    pub title: Option<String>,
    pub created_at: i64,
    pub last_seq: i64,
    pub members: Vec<UserId>,
}

/// A conversation as its member sees it in a list: for `GET /api/conversations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: ConversationInfo,
    pub last_message: Option<StoredMessage>,
    /// The member's read watermark: every message up to this `seq` is read.
    pub read_seq: i64,
    /// Messages after `read_seq` that others sent.
    pub unread: i64,
}

/// A committed send: the stored message, and whether it was stored by an
/// earlier send with the same `clientMessageId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: StoredMessage,
    pub duplicate: bool,
}

/// Which messages a reconnecting user missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncQuery {
    pub user: UserId,
    /// Exact positions: the client has every message of the conversation up
    /// to this `seq`.
    pub cursors: BTreeMap<ConversationId, i64>,
    /// The original design's form: the client has everything committed up to
    /// and including this message. Used for conversations without a cursor.
    pub after_message: Option<MessageId>,
    /// At most this many messages in the page.
    pub limit: usize,
}

/// One page of missed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPage {
    /// Grouped by conversation, each group in `seq` order.
    pub messages: Vec<StoredMessage>,
    /// For every conversation of the user: the `seq` the client is complete
    /// up to once it has this page. Sending these back continues the sync.
    pub cursors: BTreeMap<ConversationId, i64>,
    /// Whether messages remain after this page.
    pub has_more: bool,
}

/// A bulk load: the shape of a converted export of the original design.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportData {
    #[serde(default)]
    pub users: Vec<NewUser>,
    #[serde(default)]
    pub conversations: Vec<NewConversation>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub users_created: u64,
    pub conversations_created: u64,
    pub members_added: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One round trip to the database, for health checks.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError>;

    /// Creates a user. `Err(Conflict)` if the id is taken.
    async fn add_user(&self, user: NewUser) -> Result<User, StoreError>;

    /// Records when a user was last connected.
    async fn set_last_seen(&self, user: &UserId, at_ms: i64) -> Result<(), StoreError>;

    /// Creates a conversation with its members. `Err(Conflict)` if the id is
    /// taken, `Err(UnknownUser)` if a member does not exist.
    async fn create_conversation(
        &self,
        conversation: NewConversation,
    ) -> Result<ConversationInfo, StoreError>;

    /// The conversation with its members, or `None` if it does not exist.
    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationInfo>, StoreError>;

    /// The conversations a user is a member of.
    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError>;

    /// Commits a batch of sends in ONE transaction (group commit) and returns
    /// one result per send, in batch order. For each send, inside that
    /// transaction: a send whose `(conversation, sender, client_message_id)`
    /// is already stored returns the stored message with `duplicate: true`;
    /// otherwise it gets the conversation's next `seq` (gapless, from 1) and
    /// is inserted. The call returns only once the transaction is durable
    /// under the configured policy. A send to a missing conversation fails
    /// alone (`NotFound`); a database failure fails the whole batch.
    async fn append(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError>;

    /// One page of the messages a user missed, read from one consistent
    /// snapshot. `Err(NotFound)` if `after_message` names no message of the
    /// user's conversations.
    async fn sync(&self, query: SyncQuery) -> Result<SyncPage, StoreError>;

    /// Loads users and conversations in one transaction. Idempotent: existing
    /// users and conversations are kept, missing members are added. On any
    /// error nothing is changed and the error names the offending entry.
    async fn import(&self, data: ImportData) -> Result<ImportReport, StoreError>;

    /// Users who share with `user` at least one conversation of at most
    /// `max_members` members (never `user` itself), with their `last_seen`:
    /// one query, whatever their number. Larger conversations do not make
    /// contacts: presence among N members costs N² events.
    async fn contacts_of(&self, user: &UserId, max_members: usize)
    -> Result<Vec<User>, StoreError>;

    /// One stored message by id.
    async fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// The delivered watermark of each `(conversation, member)` pair: every
    /// message up to it has reached one of the member's devices. 0 when
    /// nothing was delivered yet or the pair is not a membership.
    async fn delivered_watermarks(
        &self,
        keys: Vec<(ConversationId, UserId)>,
    ) -> Result<Vec<i64>, StoreError>;

    /// Raises delivered watermarks, in one transaction; never lowers one.
    /// Returns, for each update, the watermark before it (so a caller racing
    /// another instance learns what it advanced). Non-memberships are
    /// skipped and report `i64::MAX` (nothing advanced).
    async fn advance_delivered(
        &self,
        updates: Vec<(ConversationId, UserId, i64)>,
    ) -> Result<Vec<i64>, StoreError>;

    /// Raises a member's read watermark to `seq` (never lowers it) and
    /// returns the watermark before. `Err(NotFound)` if not a member.
    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        seq: i64,
    ) -> Result<i64, StoreError>;

    /// The user's conversations with their last message, the user's read
    /// watermark and unread count, most recently active first.
    async fn conversation_summaries(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConversationSummary>, StoreError>;

    /// Up to `limit` messages of a conversation with `seq < before` (all when
    /// `None`), newest first.
    async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Adds a member; `Ok(false)` if already one. `Err(NotFound)` for a
    /// missing conversation, `Err(UnknownUser)` for a missing user.
    async fn add_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, StoreError>;

    /// Removes a member with their watermarks; `Ok(false)` if not one.
    /// `Err(NotFound)` for a missing conversation.
    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, StoreError>;

    /// Flushes and closes; later calls fail with `Unavailable`.
    async fn close(&self);
}
