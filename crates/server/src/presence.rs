//! Presence: a user is online while one of their connections is open, on
//! any device. Going offline waits a grace period, so a reconnect (a page
//! reload, a network switch) does not flap. Every change reaches the users
//! who share a conversation with them in one broadcast, and a new
//! connection gets the current presence of its contacts right after
//! `connection_established`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use natter_core::{Broker, EventKind, Store, UserId, time};
use natter_protocol::ServerFrame;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{chat::json, hub::Connection, outbox::Outgoing};

enum Change {
    /// A connection opened; `first` when the user had none on this instance.
    Connected { conn: Arc<Connection>, first: bool },
    /// The user's last connection on this instance closed.
    Disconnected(UserId),
}

/// The hub's handle to the presence task.
#[derive(Debug, Clone)]
pub struct Presence(mpsc::UnboundedSender<Change>);

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Connected { conn, first } => write!(f, "Connected({}, {first})", conn.user),
            Change::Disconnected(user) => write!(f, "Disconnected({user})"),
        }
    }
}

impl Presence {
    pub fn start(
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        grace: Duration,
        max_members: usize,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            store,
            broker,
            grace,
            max_members,
            online: HashSet::new(),
            leaving: HashMap::new(),
        };
        tokio::spawn(task.run(rx, stop));
        Presence(tx)
    }

    pub fn connected(&self, conn: Arc<Connection>, first: bool) {
        let _ = self.0.send(Change::Connected { conn, first });
    }

    pub fn disconnected(&self, user: UserId) {
        let _ = self.0.send(Change::Disconnected(user));
    }
}

struct Task {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    grace: Duration,
    /// Only conversations up to this size make contacts.
    max_members: usize,
    /// Users with a connection here, or within their grace period.
    online: HashSet<UserId>,
    /// Users whose last connection closed, and when they go offline.
    leaving: HashMap<UserId, Instant>,
}

impl Task {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval((self.grace / 4).max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(Change::Connected { conn, first }) => self.connected(conn, first).await,
                    Some(Change::Disconnected(user)) => {
                        self.leaving.insert(user, Instant::now() + self.grace);
                    }
                    None => break,
                },
                _ = sweep.tick() => self.sweep().await,
                _ = stop.cancelled() => break,
            }
        }
        // Shutting down: whoever is online here was last seen now.
        let now = time::now_ms();
        for user in self.online.drain() {
            let _ = self.store.set_last_seen(&user, now).await;
        }
    }

    async fn connected(&mut self, conn: Arc<Connection>, first: bool) {
        let user = conn.user.clone();
        let returning = self.leaving.remove(&user).is_some();
        if first && !returning && self.online.insert(user.clone()) {
            self.broadcast(&user, None).await;
        }
        self.snapshot(&conn).await;
    }

    /// One `presence_update` per contact, to the new connection only.
    async fn snapshot(&self, conn: &Connection) {
        let contacts = match self.store.contacts_of(&conn.user, self.max_members).await {
            Ok(contacts) => contacts,
            Err(e) => return tracing::warn!(error = %e, "cannot read contacts"),
        };
        let now = time::now_ms();
        for contact in contacts {
            let online = self.online.contains(&contact.id);
            let frame = update(&contact.id, online, now, contact.last_seen);
            let _ = conn
                .outbox
                .push(Outgoing::Text(json(&frame)), EventKind::Ephemeral);
        }
    }

    async fn sweep(&mut self) {
        let now = Instant::now();
        let gone: Vec<UserId> = self
            .leaving
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(user, _)| user.clone())
            .collect();
        for user in gone {
            self.leaving.remove(&user);
            self.online.remove(&user);
            let last_seen = time::now_ms();
            if let Err(e) = self.store.set_last_seen(&user, last_seen).await {
                tracing::warn!(error = %e, "cannot store last seen");
            }
            self.broadcast(&user, Some(last_seen)).await;
        }
    }

    /// Tells every contact: one query for the audience, one publish.
    async fn broadcast(&self, user: &UserId, offline_since: Option<i64>) {
        let contacts = match self.store.contacts_of(user, self.max_members).await {
            Ok(contacts) => contacts,
            Err(e) => return tracing::warn!(error = %e, "cannot read contacts"),
        };
        if contacts.is_empty() {
            return;
        }
        let frame = update(user, offline_since.is_none(), time::now_ms(), offline_since);
        self.broker.publish(natter_core::Event {
            audience: contacts.into_iter().map(|c| c.id).collect(),
            except_session: None,
            kind: EventKind::Ephemeral,
            payload: json(&frame),
            message: None,
        });
    }
}

fn update(user: &UserId, online: bool, now: i64, last_seen: Option<i64>) -> ServerFrame {
    ServerFrame::PresenceUpdate {
        user_id: user.to_string(),
        status: if online { "online" } else { "offline" }.to_string(),
        timestamp: now,
        last_seen: if online {
            None
        } else {
            last_seen.map(time::iso8601)
        },
    }
}
