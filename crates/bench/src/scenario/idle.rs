//! `idle`: C authenticated connections held open; server memory per
//! connection and connect latency.

use std::time::Duration;

use serde_json::json;

use super::{Context, Session, names};
use crate::{results::RunResult, server::Fixture};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Idle {
    /// Connections to hold (one process may open at most ~19,000 here).
    #[arg(long = "connections", default_value_t = 18_000)]
    pub connections: usize,
}

impl Idle {
    pub fn tiny() -> Self {
        Idle { connections: 50 }
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<RunResult> {
        let users = names("i", self.connections);
        let fixture = Fixture {
            users: users.clone(),
            conversations: Vec::new(),
        };
        let session = Session::open(ctx, &fixture, &users).await?;
        // Let allocations from the handshakes settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut result = session.result("idle", json!(self), Duration::ZERO);
        let grown = result
            .server_rss_kib_after
            .saturating_sub(result.server_rss_kib_before);
        result.rss_per_connection_bytes =
            Some(grown as f64 * 1024.0 / self.connections.max(1) as f64);
        result.rss_curve.push(crate::results::RssPoint {
            connections: self.connections as u64,
            rss_kib: result.server_rss_kib_after,
        });
        session.stop();
        Ok(result)
    }
}
