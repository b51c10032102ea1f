//! Everything a server instance is configured with. Built by the binary from
//! flags and environment, or directly by tests.

use std::{fmt, time::Duration};

use natter_core::Limits;

#[derive(Clone)]
pub struct Config {
    /// HS256 key for client tokens. Never printed (see the `Debug` impl).
    pub jwt_secret: Vec<u8>,
    /// Clock skew tolerated on `exp`.
    pub jwt_leeway: Duration,
    /// How often the server pings; a connection silent for two intervals is dropped.
    pub heartbeat: Duration,
    /// Largest WebSocket message a client may send; larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Bytes queued for one connection before it counts as too slow (1013).
    pub outbox_bytes: usize,
    /// Message content rules.
    pub limits: Limits,
    /// Sends committed in one transaction at most (group commit).
    pub max_batch: usize,
    /// Messages per `sync` page.
    pub sync_page: usize,
    /// Sends per user per minute (0: unlimited). Enforced by the rate limiter.
    pub rate_limit_per_minute: u32,
    /// Sends a user may burst above the steady rate.
    pub rate_limit_burst: u32,
    /// How long a graceful shutdown may take before connections are cut.
    pub shutdown_deadline: Duration,
    /// How long a client may take to send its HTTP request headers.
    pub header_read_timeout: Duration,
    /// Connections one user may hold; one more closes the oldest (4008).
    pub max_connections_per_user: usize,
    /// How long after a user's last connection closes they go offline.
    pub presence_grace: Duration,
    /// At most one `isTyping: true` forwarded per user and conversation per interval.
    pub typing_throttle: Duration,
    /// A typing indicator not renewed within this ends by itself.
    pub typing_expiry: Duration,
    /// Conversations with more members than this skip what costs members²
    /// events: delivery receipts, read receipts to others (the reader's own
    /// devices still get theirs) and presence between their members.
    pub large_conversation: usize,
    /// Under load, how long an ack may wait for the delivery receipts of
    /// its message, to leave in the same socket write as them: one write
    /// to the sender instead of two. It leaves sooner, once every recipient
    /// on this instance has been written to and receipted (at once when
    /// none is connected). Zero: acks leave at commit.
    pub ack_wait: Duration,
    /// "Under load": in commits of at least this many sends. A light load
    /// has cores to spare for a second write, and its acks go at once.
    pub ack_wait_batch: usize,
    /// The credential of the admin HTTP endpoints (`Authorization: Bearer
    /// <token>`). None: the admin endpoints are off. Never printed.
    pub admin_token: Option<String>,
}

impl Config {
    pub fn new(jwt_secret: impl Into<Vec<u8>>) -> Self {
        Self {
            jwt_secret: jwt_secret.into(),
            jwt_leeway: Duration::from_secs(5),
            heartbeat: Duration::from_secs(30),
            max_frame_bytes: 64 * 1024,
            outbox_bytes: 1024 * 1024,
            limits: Limits::default(),
            max_batch: 1024,
            sync_page: 500,
            rate_limit_per_minute: 60,
            rate_limit_burst: 10,
            shutdown_deadline: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_user: 20,
            presence_grace: Duration::from_secs(5),
            typing_throttle: Duration::from_secs(2),
            typing_expiry: Duration::from_secs(6),
            large_conversation: 100,
            ack_wait: Duration::from_millis(20),
            ack_wait_batch: 16,
            admin_token: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("jwt_secret", &"<redacted>")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("heartbeat", &self.heartbeat)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("outbox_bytes", &self.outbox_bytes)
            .field("limits", &self.limits)
            .field("max_batch", &self.max_batch)
            .field("sync_page", &self.sync_page)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("presence_grace", &self.presence_grace)
            .field("typing_throttle", &self.typing_throttle)
            .field("typing_expiry", &self.typing_expiry)
            .field("large_conversation", &self.large_conversation)
            .field("ack_wait", &self.ack_wait)
            .field("ack_wait_batch", &self.ack_wait_batch)
            .finish()
    }
}
