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
#[derive(Debug)]
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
    /// Run once every holder of the tag has let go of it: on this instance,
    /// once each recipient's copy is written and its delivery handled.
    pub on_release: Option<OnRelease>,
}

/// A closure run when dropped, exactly once.
pub struct OnRelease(Option<Box<dyn FnOnce() + Send + Sync>>);

impl OnRelease {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(f)))
    }
}

impl Drop for OnRelease {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for OnRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRelease")
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn on_release_runs_once_when_the_last_holder_lets_go() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let tag = Arc::new(MessageTag {
            conversation: ConversationId::new_unchecked("c"),
            seq: 1,
            id: MessageId::new_unchecked("m"),
            sender: UserId::new_unchecked("s"),
            committed_at_us: 0,
            receipt: true,
            on_release: Some(OnRelease::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })),
        });
        let copy = tag.clone();
        drop(tag);
        assert_eq!(runs.load(Ordering::SeqCst), 0, "a holder is left");
        drop(copy);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
