//! The `Broker` seam: how an event reaches every connection of its audience,
//! on this instance and on the others.
//!
//! The chat logic publishes each event once, already serialized; a broker
//! hands it to the [`Delivery`] of every instance (in-process: just this
//! one; Redis: all of them). Brokers are at-most-once: what they lose, a
//! client recovers with `sync`, because every message is committed before it
//! is published.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ConversationId, MessageId, SessionId, UserId};

/// How much an event matters to a connection that cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Messages and receipts: recoverable by `sync`, never silently dropped.
    Durable,
    /// Typing and presence: dropped first when a connection falls behind.
    Ephemeral,
}

/// One serialized server frame and who should get it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Every connection of these users gets the frame...
    pub audience: Arc<[UserId]>,
    /// ...except this one (the sender's own connection, which gets an ack).
    pub except_session: Option<SessionId>,
    pub kind: EventKind,
    /// The frame's JSON, serialized once and shared by every recipient.
    pub payload: Bytes,
    /// Set on `new_message` events: what a delivery receipt needs to know.
    pub message: Option<Arc<MessageTag>>,
}

/// Which message a `new_message` frame carries, so that writing it to a
/// recipient's socket can be reported as a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTag {
    pub conversation: ConversationId,
    pub seq: i64,
    pub id: MessageId,
    pub sender: UserId,
    /// When the message was committed (epoch µs), for fan-out latency.
    pub committed_at_us: i64,
    /// Whether its deliveries are reported back to the sender: not in large
    /// conversations, where every message would bring members-1 receipts.
    pub receipt: bool,
}

/// The local end of fan-out: hands an event to this instance's connections.
pub trait Delivery: Send + Sync + 'static {
    fn deliver(&self, event: &Event);
}

pub trait Broker: Send + Sync + 'static {
    /// Sends the event to every instance, this one included. Events published
    /// from one instance reach each instance in publish order. Never blocks.
    fn publish(&self, event: Event);

    /// Whether the broker can currently reach every instance (health checks).
    fn is_healthy(&self) -> bool;

    /// Whether events travel through an external service to other
    /// instances (false for the in-process broker).
    fn is_shared(&self) -> bool;
}
