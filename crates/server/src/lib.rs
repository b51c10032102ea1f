//! The natter server: HTTP and WebSocket on one port, in front of the chat
//! service.
//!
//! [`run`] is the one entry point, used by the binary and by the tests
//! alike: it takes a bound listener, a [`Config`], the store and a way to
//! build the broker, and serves until `shutdown` resolves, then drains
//! (see [`drain`]). Nothing here knows which database or broker it talks
//! to: they come in as trait objects.

mod api;
pub mod auth;
mod chat;
pub mod config;
mod http;
mod hub;
mod limits;
mod metrics;
mod outbox;
mod presence;
mod receipts;
mod session;
mod typing;
mod ws;

use std::{future::Future, sync::Arc, time::Duration};

use natter_core::{Broker, Delivery, Store};
use natter_protocol::{ServerFrame, close};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::Config;

/// The hash map of the per-delivery paths (connections by user, watermarks
/// by conversation and member, members by conversation). SipHash, std's
/// default, was ~2 % of the CPU at 150,000 deliveries/s; foldhash is
/// several times faster on short ids, and still seeded per process, so
/// keys a client chooses cannot be made to collide in advance.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::{
    chat::Chat,
    hub::Hub,
    outbox::{Close, Outgoing},
};

/// Builds the broker once the server's local [`Delivery`] exists.
pub type BrokerFactory = Box<dyn FnOnce(Arc<dyn Delivery>) -> Arc<dyn Broker> + Send>;

/// Shared state of one server instance. Every field is here because more
/// than one connection needs it.
pub(crate) struct App {
    config: Config,
    /// Validates client tokens; built once from the secret.
    verifier: auth::Verifier,
    /// Sends, syncs and membership: the chat logic above the seams.
    chat: Arc<Chat>,
    /// This instance's connections by user.
    hub: Arc<Hub>,
    /// Online/offline transitions and snapshots.
    presence: presence::Presence,
    /// This instance's registry, served at `/metrics`.
    metrics: Arc<metrics::Metrics>,
    /// Kept for health checks; the chat service publishes through it.
    broker: Arc<dyn Broker>,
    /// Every session task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// Every session's read loop, so shutdown knows when no new request can
    /// arrive.
    readers: TaskTracker,
    /// Cancelled when shutdown starts: stop accepting, stop reading.
    shutdown: CancellationToken,
}

/// Serves on `listener` until `shutdown` resolves, then drains gracefully.
pub async fn run(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    broker: BrokerFactory,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let verifier = auth::Verifier::new(&config.jwt_secret, config.jwt_leeway)
        .map_err(|e| ServerError::Config(format!("JWT secret: {e}")))?;
    let shutdown_started = CancellationToken::new();
    let hub = Arc::new(Hub::new(config.max_connections_per_user));
    let broker = broker(hub.clone());
    let metrics = Arc::new(metrics::Metrics::default());
    let chat = Chat::start(
        store.clone(),
        broker.clone(),
        &config,
        metrics.clone(),
        shutdown_started.clone(),
    );
    let presence = presence::Presence::start(
        store.clone(),
        broker.clone(),
        config.presence_grace,
        config.large_conversation,
        shutdown_started.clone(),
    );
    let app = Arc::new(App {
        verifier,
        config,
        chat,
        hub,
        presence,
        metrics,
        broker,
        tracker: TaskTracker::new(),
        readers: TaskTracker::new(),
        shutdown: shutdown_started,
    });
    // The checks over every connection: one task, two timers.
    tokio::spawn({
        let app = app.clone();
        async move {
            let stop = app.shutdown.clone();
            tokio::join!(
                app.hub.heartbeat(app.config.heartbeat, stop.clone()),
                app.hub.expire_tokens(app.config.jwt_leeway, stop),
            );
        }
    });
    // HTTP keeps being served while draining, so load balancers see /ready
    // turn 503 (and new upgrades are refused) instead of a closed port.
    let http_connections = TaskTracker::new();
    let stop_http = CancellationToken::new();
    let accept = tokio::spawn(http::accept_loop(
        listener,
        http::router(app.clone()),
        app.config.header_read_timeout,
        stop_http.clone(),
        http_connections.clone(),
    ));
    shutdown.await;
    drain(&app).await;
    stop_http.cancel();
    let _ = accept.await;
    http_connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_connections.wait()).await;
    store.close().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Graceful shutdown: stop reading, commit and ack what is in flight, then
/// tell every client to reconnect elsewhere, in waves spread over half the
/// deadline so the other instances do not get every client at once.
async fn drain(app: &App) {
    let deadline = app.config.shutdown_deadline;
    let started = tokio::time::Instant::now();
    app.shutdown.cancel();
    for conn in app.hub.all() {
        conn.outbox.stop_reading();
    }
    app.readers.close();
    let _ = tokio::time::timeout(deadline / 4, app.readers.wait()).await;
    app.chat.flush().await;
    let connections = app.hub.all();
    let waves = 10.min(connections.len().max(1));
    let per_wave = connections.len().div_ceil(waves).max(1);
    let spread = deadline / 2;
    for (i, wave) in connections.chunks(per_wave).enumerate() {
        for conn in wave {
            let after_ms = rand::random_range(0..=spread.as_millis().max(1) as u64);
            let frame = chat::json(&ServerFrame::Reconnect { after_ms });
            let _ = conn
                .outbox
                .push(Outgoing::Text(frame), natter_core::EventKind::Durable);
            conn.outbox.close(Close {
                code: close::GOING_AWAY,
                reason: "server shutting down",
                flush_first: true,
            });
        }
        if i + 1 < waves {
            tokio::time::sleep(spread / waves as u32).await;
        }
    }
    app.tracker.close();
    let left = deadline.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with sessions still open");
    }
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "drained");
}
