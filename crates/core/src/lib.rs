//! natter's chat domain, independent of any deployment.
//!
//! This crate owns what a chat *is*: the ids and their rules, what makes a
//! message valid, and the two seams where deployments differ: the [`Store`]
//! (where messages are durably kept) and the [`Broker`] (how events reach the
//! connections of other instances). It does no IO and knows neither SQLite,
//! PostgreSQL nor Redis; the crates that implement the seams depend on it,
//! never the reverse.

pub mod broker;
pub mod ids;
pub mod message;
pub mod store;
pub mod time;

pub use broker::{Broker, Delivery, Event, EventKind, MessageTag, OnRelease};
pub use ids::{ConversationId, IdError, MessageId, SessionId, UserId};
pub use message::{Limits, MessageError, NewMessage, StoredMessage};
pub use store::{
    Appended, ConversationInfo, ConversationSummary, ImportData, ImportReport, NewConversation,
    NewUser, Store, StoreError, SyncPage, SyncQuery, User,
};
