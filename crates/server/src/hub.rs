//! This instance's open connections, by user: the local end of fan-out.
//!
//! The hub is the broker's [`Delivery`]: an event addressed to users is
//! pushed into the outbox of each of their connections here, as shared
//! bytes. It never awaits: a connection that cannot take an event is closed
//! by its outbox, never waited for.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicI64, Ordering},
    },
};

use std::time::Duration;

use natter_core::{Delivery, Event, EventKind, SessionId, UserId};
use tokio_util::sync::CancellationToken;

use crate::outbox::{Close, Outbox, Outgoing};

/// One WebSocket connection as the rest of the server sees it.
#[derive(Debug)]
pub struct Connection {
    pub session: SessionId,
    pub user: UserId,
    pub outbox: Outbox,
    /// When the client was last heard from (epoch ms), for the heartbeat.
    last_heard: AtomicI64,
}

impl Connection {
    pub fn new(session: SessionId, user: UserId, outbox: Outbox) -> Self {
        Self {
            session,
            user,
            outbox,
            last_heard: AtomicI64::new(natter_core::time::now_ms()),
        }
    }

    pub fn heard(&self) {
        self.last_heard
            .store(natter_core::time::now_ms(), Ordering::Relaxed);
    }

    pub fn silent_ms(&self) -> i64 {
        natter_core::time::now_ms() - self.last_heard.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Hub {
    users: Mutex<HashMap<UserId, Vec<Arc<Connection>>>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, Vec<Arc<Connection>>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, conn: Arc<Connection>) {
        self.lock().entry(conn.user.clone()).or_default().push(conn);
    }

    pub fn unregister(&self, conn: &Connection) {
        let mut users = self.lock();
        if let Some(conns) = users.get_mut(&conn.user) {
            conns.retain(|c| c.session != conn.session);
            if conns.is_empty() {
                users.remove(&conn.user);
            }
        }
    }

    /// Open connections on this instance.
    pub fn connection_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Every open connection, for shutdown.
    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.lock().values().flatten().cloned().collect()
    }

    /// The heartbeat, for every connection at once: one timer per instance
    /// rather than one per connection. Each interval, a connection silent
    /// for two intervals is dropped and every other one is pinged.
    pub async fn heartbeat(&self, every: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = 2 * every.as_millis() as i64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for conn in self.all() {
                if conn.silent_ms() > limit {
                    tracing::debug!(session = %conn.session, "heartbeat timeout");
                    conn.outbox.close(Close::ABANDON);
                } else {
                    let _ = conn.outbox.push(Outgoing::Ping, EventKind::Durable);
                }
            }
        }
    }
}

impl Delivery for Hub {
    fn deliver(&self, event: &Event) {
        let users = self.lock();
        for user in event.audience.iter() {
            for conn in users.get(user).into_iter().flatten() {
                if event.except_session.as_ref() != Some(&conn.session) {
                    // A refused push closes that connection; its client
                    // recovers with `sync`. Nothing else to do here.
                    let _ = conn
                        .outbox
                        .push(Outgoing::Text(event.payload.clone()), event.kind);
                }
            }
        }
    }
}
