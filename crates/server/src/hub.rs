//! This instance's open connections, by user: the local end of fan-out.
//!
//! The hub is the broker's [`Delivery`]: an event addressed to users is
//! pushed into the outbox of each of their connections here, as shared
//! bytes. It never awaits: a connection that cannot take an event is closed
//! by its outbox, never waited for. It also owns what is checked across all
//! connections on a timer: the heartbeat and token expiry, one task each
//! rather than a timer per connection.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use natter_core::{Delivery, Event, EventKind, SessionId, UserId, time};
use natter_protocol::close;
use tokio_util::sync::CancellationToken;

use crate::{
    Map,
    outbox::{Close, Outbox, Outgoing},
};

/// One WebSocket connection as the rest of the server sees it.
#[derive(Debug)]
pub struct Connection {
    pub session: SessionId,
    pub user: UserId,
    pub outbox: Outbox,
    /// When the client was last heard from (epoch ms), for the heartbeat.
    last_heard: AtomicI64,
    /// When the connection's token expires (epoch seconds); raised by
    /// `refresh_token`.
    expires_at: AtomicU64,
}

impl Connection {
    pub fn new(session: SessionId, user: UserId, outbox: Outbox, expires_at: u64) -> Self {
        Self {
            session,
            user,
            outbox,
            last_heard: AtomicI64::new(time::now_ms()),
            expires_at: AtomicU64::new(expires_at),
        }
    }

    pub fn heard(&self) {
        self.last_heard.store(time::now_ms(), Ordering::Relaxed);
    }

    pub fn silent_ms(&self) -> i64 {
        time::now_ms() - self.last_heard.load(Ordering::Relaxed)
    }

    pub fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    pub fn set_expires_at(&self, at: u64) {
        self.expires_at.fetch_max(at, Ordering::Relaxed);
    }
}

/// How many parts the heartbeat splits the connections into, each pinged
/// at its own moment of the interval.
const HEARTBEAT_SLOTS: u64 = 64;

#[derive(Debug)]
pub struct Hub {
    users: Mutex<Map<UserId, Vec<Arc<Connection>>>>,
    /// Connections a user may hold; a new one beyond closes the oldest (4008).
    max_per_user: usize,
    /// Connections by the second their token expires.
    expiries: Mutex<BTreeMap<u64, Vec<Weak<Connection>>>>,
}

impl Hub {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            users: Mutex::default(),
            max_per_user: max_per_user.max(1),
            expiries: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map<UserId, Vec<Arc<Connection>>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; returns whether it is the user's first here. A
    /// user at the limit loses their oldest connection, closed with 4008.
    pub fn register(&self, conn: Arc<Connection>) -> bool {
        self.watch_expiry(&conn);
        let mut users = self.lock();
        let conns = users.entry(conn.user.clone()).or_default();
        let first = conns.is_empty();
        if conns.len() >= self.max_per_user {
            let oldest = conns.remove(0);
            oldest.outbox.close(Close {
                code: close::TOO_MANY_CONNECTIONS,
                reason: "too many connections",
                flush_first: true,
            });
        }
        conns.push(conn);
        first
    }

    /// Removes a connection; returns whether it was the user's last here.
    pub fn unregister(&self, conn: &Connection) -> bool {
        let mut users = self.lock();
        let Some(conns) = users.get_mut(&conn.user) else {
            return false;
        };
        let before = conns.len();
        conns.retain(|c| c.session != conn.session);
        let last = conns.is_empty() && before > 0;
        if conns.is_empty() {
            users.remove(&conn.user);
        }
        last
    }

    /// Open connections on this instance.
    pub fn connection_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Every open connection, for shutdown.
    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.lock().values().flatten().cloned().collect()
    }

    /// The open connections in one heartbeat slot.
    fn in_slot(&self, slot: u64) -> Vec<Arc<Connection>> {
        let users = self.lock();
        let conns = users.values().flatten();
        conns
            .filter(|c| c.session.0 % HEARTBEAT_SLOTS == slot)
            .cloned()
            .collect()
    }

    /// Makes sure the connection is checked when its token expires.
    pub fn watch_expiry(&self, conn: &Arc<Connection>) {
        self.expiries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(conn.expires_at())
            .or_default()
            .push(Arc::downgrade(conn));
    }

    /// Closes connections whose token expired (4001), checking every second.
    pub async fn expire_tokens(&self, leeway: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = (time::now_ms() / 1000) as u64;
            let due = {
                let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
                let later = expiries.split_off(&now.saturating_sub(leeway.as_secs()));
                std::mem::replace(&mut *expiries, later)
            };
            for conn in due.into_values().flatten().filter_map(|c| c.upgrade()) {
                if conn.expires_at() + leeway.as_secs() < now {
                    conn.outbox.close(Close {
                        code: close::TOKEN_EXPIRED,
                        reason: "token expired",
                        flush_first: true,
                    });
                } else {
                    // Refreshed since it was filed: file it again.
                    self.watch_expiry(&conn);
                }
            }
        }
    }

    /// The heartbeat. Each interval, a connection silent for two intervals
    /// is dropped and every other one is pinged: not all at once, but a
    /// [`HEARTBEAT_SLOTS`]th of them at a time, by session id, spread over
    /// the interval. Pinging every connection in one go put thousands of
    /// writes (and as many pongs to read) in front of whatever was sent at
    /// that moment: in `natter-bench bigroom` the message that met it
    /// reached its last member 65-100 ms late, the p99 of the whole run.
    pub async fn heartbeat(&self, every: Duration, stop: CancellationToken) {
        let tick = (every / HEARTBEAT_SLOTS as u32).max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = 2 * every.as_millis() as i64;
        for slot in (0..HEARTBEAT_SLOTS).cycle() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for conn in self.in_slot(slot) {
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
                if event.except_session.as_ref() == Some(&conn.session) {
                    continue;
                }
                let item = match &event.message {
                    Some(tag) => Outgoing::Message(event.payload.clone(), tag.clone()),
                    None => Outgoing::Text(event.payload.clone()),
                };
                // A refused push closes that connection; its client
                // recovers with `sync`. Nothing else to do here.
                let _ = conn.outbox.push(item, event.kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinged(conn: &Connection) -> bool {
        let (queued, _) = conn.outbox.take();
        queued.iter().any(|o| matches!(o, Outgoing::Ping))
    }

    /// Each tick pings one slot of connections; one interval pings them all.
    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_pings_a_slot_at_a_time() {
        let every = Duration::from_millis(3200);
        let tick = every / HEARTBEAT_SLOTS as u32;
        let hub = Arc::new(Hub::new(1));
        let conns: Vec<_> = (0..4 * HEARTBEAT_SLOTS)
            .map(|i| {
                let user = UserId::new_unchecked(format!("u{i}"));
                let outbox = Outbox::new(1 << 20, Arc::default());
                let conn = Arc::new(Connection::new(SessionId(i * 7919), user, outbox, u64::MAX));
                hub.register(conn.clone());
                conn
            })
            .collect();
        let stop = CancellationToken::new();
        tokio::spawn({
            let (hub, stop) = (hub.clone(), stop.clone());
            async move { hub.heartbeat(every, stop).await }
        });
        let mut pinged_at = vec![None; conns.len()];
        // Look half-way between ticks.
        tokio::time::sleep(tick / 2).await;
        for t in 0..HEARTBEAT_SLOTS {
            tokio::time::sleep(tick).await;
            for (i, conn) in conns.iter().enumerate() {
                if pinged(conn) {
                    assert_eq!(pinged_at[i], None, "connection {i} pinged twice");
                    pinged_at[i] = Some(t);
                }
            }
            let this_tick = pinged_at.iter().filter(|p| **p == Some(t)).count();
            assert_eq!(this_tick, 4, "tick {t} pinged {this_tick} connections");
        }
        assert!(
            pinged_at.iter().all(Option::is_some),
            "one interval pings all"
        );
        stop.cancel();
    }
}
