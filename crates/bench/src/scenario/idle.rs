//! `idle`: C authenticated connections held open; server memory per
//! connection and connect latency.

use std::time::Duration;

use serde_json::json;

use super::{Context, Session, names};
use crate::{
    results::{RssPoint, RunResult},
    server::Fixture,
};

/// How long the server's memory is left to settle after connecting.
const SETTLE: Duration = Duration::from_secs(2);

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
        // Both halves are measured settled: the allocator hands freed
        // handshake memory back a little after the burst, so a reading taken
        // while connecting overstates what a held connection costs.
        let (first, second) = users.split_at(users.len() / 2);
        let mut session = Session::open(ctx, &fixture, first).await?;
        tokio::time::sleep(SETTLE).await;
        let half = RssPoint {
            connections: first.len() as u64,
            rss_kib: session.server.rss_kib(),
        };
        session.connect_all(ctx.peer, second).await?;
        tokio::time::sleep(SETTLE).await;
        let mut result = session.result("idle", json!(self), Duration::ZERO);
        if !result.server_observed {
            session.stop();
            return Ok(result);
        }
        let grown = result
            .server_rss_kib_after
            .saturating_sub(result.server_rss_kib_before);
        result.rss_per_connection_bytes =
            Some(grown as f64 * 1024.0 / self.connections.max(1) as f64);
        let full = RssPoint {
            connections: self.connections as u64,
            rss_kib: result.server_rss_kib_after,
        };
        result.rss_marginal_per_connection_bytes = slope(&half, &full);
        result.rss_curve.push(full);
        session.stop();
        Ok(result)
    }
}

/// Bytes of RSS each connection added between two readings.
fn slope(from: &RssPoint, to: &RssPoint) -> Option<f64> {
    let added = to
        .connections
        .checked_sub(from.connections)
        .filter(|n| *n > 0)?;
    let grown = to.rss_kib.saturating_sub(from.rss_kib);
    Some(grown as f64 * 1024.0 / added as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marginal_cost_is_the_slope_between_two_readings() {
        let point = |connections, rss_kib| RssPoint {
            connections,
            rss_kib,
        };
        // 5 MiB for the first 500 connections, then 2 KiB each.
        assert_eq!(
            slope(&point(500, 15_800), &point(1_000, 16_800)),
            Some(2_048.0)
        );
        assert_eq!(slope(&point(10, 1), &point(10, 2)), None);
        assert_eq!(slope(&point(10, 5), &point(20, 4)), Some(0.0));
    }
}
