//! The bounded queue between everything that sends to a connection (fan-out,
//! acks, replies) and that connection's writer task.
//!
//! A plain mutex-guarded `VecDeque` rather than a channel: an empty
//! `VecDeque` owns no memory, while a bounded tokio channel allocates its
//! first block of slots up front, for every idle connection.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;
use natter_core::EventKind;
use tokio::sync::Notify;

/// One thing for the writer to put on the wire.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A JSON text frame, possibly shared with other connections.
    Text(Bytes),
    Ping,
    Pong(Vec<u8>),
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing; nothing more is queued.
    Closed,
    /// The queue is over its byte limit: the connection must be closed with
    /// 1013 (a droppable event was simply dropped and not reported here).
    Full,
}

/// A close the writer must send after what is already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
    /// Whether the frames queued before the close are still worth sending.
    pub flush_first: bool,
}

impl Close {
    /// Drop the connection without a close frame: the peer is gone or not
    /// answering. 1006 is the RFC's code for exactly that, never sent.
    pub const ABANDON: Close = Close {
        code: 1006,
        reason: "",
        flush_first: false,
    };

    pub fn sends_frame(&self) -> bool {
        self.code != Self::ABANDON.code
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    close: Option<Close>,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when something is queued or a close is requested.
    wake_writer: Notify,
    /// Wakes producers that wait for room (sync replays).
    room: Notify,
    /// Wakes the reader when a close is requested.
    closed: Notify,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            wake_writer: Notify::new(),
            room: Notify::new(),
            closed: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned queue only means a panic elsewhere; its data is still a queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. Ephemeral events are dropped, silently, once the queue
    /// is half full; anything else past the limit closes the connection.
    pub fn push(&self, item: Outgoing, kind: EventKind) -> Result<(), PushError> {
        let size = match &item {
            Outgoing::Text(b) => b.len(),
            Outgoing::Ping => 0,
            Outgoing::Pong(p) => p.len(),
        };
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        if kind == EventKind::Ephemeral && state.bytes + size > self.max_bytes / 2 {
            return Ok(());
        }
        if state.bytes + size > self.max_bytes {
            state.close = Some(Close {
                code: natter_protocol::close::TRY_AGAIN_LATER,
                reason: "connection too slow",
                flush_first: false,
            });
            drop(state);
            self.wake_writer.notify_one();
            self.closed.notify_waiters();
            return Err(PushError::Full);
        }
        state.bytes += size;
        state.queue.push_back(item);
        drop(state);
        self.wake_writer.notify_one();
        Ok(())
    }

    /// Queues a frame once the queue has room for it: for replies the
    /// connection asked for (a `sync` page), which must not count as falling
    /// behind.
    pub async fn push_when_room(&self, payload: Bytes) -> Result<(), PushError> {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.lock();
                if state.close.is_some() {
                    return Err(PushError::Closed);
                }
                if state.bytes + payload.len() <= self.max_bytes / 2 || state.queue.is_empty() {
                    state.bytes += payload.len();
                    state.queue.push_back(Outgoing::Text(payload));
                    drop(state);
                    self.wake_writer.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Asks the writer to close the connection. The first close wins.
    pub fn close(&self, close: Close) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(close);
        }
        drop(state);
        self.wake_writer.notify_one();
        self.room.notify_waiters();
        self.closed.notify_waiters();
    }

    /// Resolves once a close has been requested.
    pub async fn closing(&self) {
        loop {
            let closed = self.closed.notified();
            if self.is_closing() {
                return;
            }
            closed.await;
        }
    }

    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Bytes queued and not yet handed to the socket.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The code of the requested close, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.lock().close.map(|c| c.code)
    }

    /// Waits until there is something for the writer.
    pub async fn wait(&self) {
        self.wake_writer.notified().await;
    }

    /// Takes everything queued, and the close if one was requested.
    pub fn take(&self, into: &mut Vec<Outgoing>) -> Option<Close> {
        let mut state = self.lock();
        let close = state.close;
        if close.is_none_or(|c| c.flush_first) {
            into.extend(state.queue.drain(..));
        } else {
            state.queue.clear();
        }
        state.bytes = 0;
        if state.queue.capacity() > 64 {
            state.queue = VecDeque::new();
        }
        drop(state);
        self.room.notify_waiters();
        close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_ephemeral_first_then_closes() {
        let o = Outbox::new(100);
        let frame = || Outgoing::Text(Bytes::from_static(&[b'x'; 30]));
        assert_eq!(o.push(frame(), EventKind::Durable), Ok(()));
        assert_eq!(o.push(frame(), EventKind::Ephemeral), Ok(()));
        assert_eq!(o.queued_bytes(), 60);
        assert_eq!(
            o.push(frame(), EventKind::Ephemeral),
            Ok(()),
            "dropped silently"
        );
        assert_eq!(o.queued_bytes(), 60);
        assert_eq!(o.push(frame(), EventKind::Durable), Ok(()));
        assert_eq!(o.push(frame(), EventKind::Durable), Err(PushError::Full));
        assert_eq!(o.push(frame(), EventKind::Durable), Err(PushError::Closed));
        let mut out = Vec::new();
        let close = o.take(&mut out).expect("closing");
        assert_eq!(close.code, 1013);
        assert!(out.is_empty(), "a slow consumer's backlog is discarded");
    }
}
