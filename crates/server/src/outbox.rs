//! The bounded queue between everything that sends to a connection (fan-out,
//! acks, replies) and that connection's writer task, plus the signals the
//! connection's two tasks wait on.
//!
//! Built for many idle connections: a `VecDeque` that is empty owns no
//! memory, and the tasks are woken through `AtomicWaker`s (a pointer and a
//! state word each) instead of channels or `Notify`s, whose wait futures
//! would sit in every idle task.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use natter_core::{EventKind, MessageTag};

use crate::metrics::Metrics;

/// One thing for the writer to put on the wire.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A JSON text frame, possibly shared with other connections.
    Text(Bytes),
    /// A `new_message` frame: once written, a delivery to report.
    Message(Bytes, Arc<MessageTag>),
    Ping,
    Pong(Vec<u8>),
}

impl Outgoing {
    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Text(b) | Self::Message(b, _) => b.len(),
            Self::Ping => 0,
            Self::Pong(p) => p.len(),
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing; nothing more is queued.
    Closed,
    /// The queue is over its byte limit: the connection is being closed with
    /// 1013 (a droppable event is simply dropped and not reported here).
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

/// What wakes the reader besides its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The connection is being closed.
    Closing,
    /// The server is draining: read no more requests.
    Draining,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    close: Option<Close>,
    draining: bool,
    /// The reader waits for room (a `sync` replay): wake it on `take`.
    reader_wants_room: bool,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// The writer task, woken when something is queued or a close requested.
    writer: AtomicWaker,
    /// The reader task, woken on close, on drain, and on room when it waits.
    reader: AtomicWaker,
    max_bytes: usize,
    /// Queued bytes, drops and slow-consumer closes are counted here.
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub fn new(max_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::default(),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            max_bytes,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned queue only means a panic elsewhere; its data is still a queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. Ephemeral events are dropped, silently, once the queue
    /// is half full; anything else past the limit closes the connection.
    pub fn push(&self, item: Outgoing, kind: EventKind) -> Result<(), PushError> {
        if self.queue(item, kind)? {
            self.writer.wake();
        }
        Ok(())
    }

    /// Queues a frame like [`push`](Self::push) but leaves the writer asleep
    /// until the next push or [`announce`](Self::announce): for a frame that
    /// others are about to follow, so that they leave in one write.
    pub fn push_quietly(&self, item: Outgoing, kind: EventKind) -> Result<(), PushError> {
        self.queue(item, kind).map(drop)
    }

    /// Wakes the writer for what [`push_quietly`](Self::push_quietly) queued.
    pub fn announce(&self) {
        self.writer.wake();
    }

    /// Whether the item was queued (an ephemeral one may be dropped).
    fn queue(&self, item: Outgoing, kind: EventKind) -> Result<bool, PushError> {
        let size = item.payload_len();
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        if kind == EventKind::Ephemeral && state.bytes + size > self.max_bytes / 2 {
            self.metrics.slow_consumer_drops.inc();
            return Ok(false);
        }
        if state.bytes + size > self.max_bytes {
            state.close = Some(Close {
                code: natter_protocol::close::TRY_AGAIN_LATER,
                reason: "connection too slow",
                flush_first: false,
            });
            drop(state);
            self.metrics.slow_consumer_closes.inc();
            self.writer.wake();
            self.reader.wake();
            return Err(PushError::Full);
        }
        state.bytes += size;
        state.queue.push_back(item);
        drop(state);
        self.metrics.outbox_queued_bytes.inc_by(size as i64);
        Ok(true)
    }

    /// Queues a frame once the queue has room for it: for replies the
    /// connection asked for (a `sync` page), which must not count as falling
    /// behind. Called by the reader task only.
    pub async fn push_when_room(&self, item: Outgoing) -> Result<(), PushError> {
        let mut item = Some(item);
        poll_fn(|cx| {
            self.reader.register(cx.waker());
            let mut state = self.lock();
            if state.close.is_some() {
                return Poll::Ready(Err(PushError::Closed));
            }
            let size = item.as_ref().map_or(0, Outgoing::payload_len);
            if state.bytes + size > self.max_bytes / 2 && !state.queue.is_empty() {
                state.reader_wants_room = true;
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                state.bytes += size;
                state.queue.push_back(item);
            }
            drop(state);
            self.metrics.outbox_queued_bytes.inc_by(size as i64);
            self.writer.wake();
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Asks the writer to close the connection. The first close wins.
    pub fn close(&self, close: Close) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(close);
        }
        drop(state);
        self.writer.wake();
        self.reader.wake();
    }

    /// Tells the reader to stop taking requests (graceful shutdown).
    pub fn stop_reading(&self) {
        self.lock().draining = true;
        self.reader.wake();
    }

    /// The code of the requested close, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.lock().close.map(|c| c.code)
    }

    /// For the reader: ready when it must stop reading.
    pub fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<Stop> {
        self.reader.register(cx.waker());
        let state = self.lock();
        if state.close.is_some() {
            Poll::Ready(Stop::Closing)
        } else if state.draining {
            Poll::Ready(Stop::Draining)
        } else {
            Poll::Pending
        }
    }

    /// For the reader: waits until a close is requested.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            self.reader.register(cx.waker());
            if self.lock().close.is_some() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// For the writer: waits until there is something to write or a close.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            self.writer.register(cx.waker());
            let state = self.lock();
            if state.queue.is_empty() && state.close.is_none() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Takes everything queued, and the close if one was requested. The
    /// queue's allocation goes with it, so an idle connection keeps none.
    pub fn take(&self) -> (VecDeque<Outgoing>, Option<Close>) {
        let mut state = self.lock();
        let close = state.close;
        let mut queue = std::mem::take(&mut state.queue);
        if close.is_some_and(|c| !c.flush_first) {
            queue.clear();
        }
        let taken = std::mem::take(&mut state.bytes);
        let wake_reader = std::mem::take(&mut state.reader_wants_room);
        drop(state);
        self.metrics.outbox_queued_bytes.dec_by(taken as i64);
        if wake_reader {
            self.reader.wake();
        }
        (queue, close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_ephemeral_first_then_closes() {
        let o = Outbox::new(120, Arc::default());
        let frame = || Outgoing::Text(Bytes::from_static(&[b'x'; 30]));
        assert_eq!(o.push(frame(), EventKind::Durable), Ok(()));
        assert_eq!(o.push(frame(), EventKind::Ephemeral), Ok(()));
        assert_eq!(
            o.push(frame(), EventKind::Ephemeral),
            Ok(()),
            "dropped silently"
        );
        assert_eq!(o.lock().bytes, 60);
        assert_eq!(o.push(frame(), EventKind::Durable), Ok(()));
        assert_eq!(o.push(frame(), EventKind::Durable), Ok(()));
        assert_eq!(o.lock().bytes, 120);
        assert_eq!(o.push(frame(), EventKind::Durable), Err(PushError::Full));
        assert_eq!(o.push(frame(), EventKind::Durable), Err(PushError::Closed));
        let (out, close) = o.take();
        assert_eq!(close.map(|c| c.code), Some(1013));
        assert!(out.is_empty(), "a slow consumer's backlog is discarded");
    }

    #[test]
    fn an_idle_outbox_owns_no_queue_memory() {
        let o = Outbox::new(100, Arc::default());
        o.push(Outgoing::Ping, EventKind::Durable).expect("room");
        let (out, _) = o.take();
        assert_eq!(out.len(), 1);
        assert_eq!(o.lock().queue.capacity(), 0);
    }
}
