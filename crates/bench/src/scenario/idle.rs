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
        result.rss_marginal_per_connection_bytes = marginal(&result.rss_curve);
        session.stop();
        Ok(result)
    }
}

/// Bytes of RSS per connection from the point nearest half the connections
/// to the last point of `curve`.
fn marginal(curve: &[crate::results::RssPoint]) -> Option<f64> {
    let last = curve.last()?;
    let half = curve
        .iter()
        .min_by_key(|p| p.connections.abs_diff(last.connections / 2))?;
    let added = last
        .connections
        .checked_sub(half.connections)
        .filter(|n| *n > 0)?;
    let grown = last.rss_kib.saturating_sub(half.rss_kib);
    Some(grown as f64 * 1024.0 / added as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::RssPoint;

    #[test]
    fn marginal_cost_is_the_slope_over_the_second_half() {
        let point = |connections, rss_kib| RssPoint {
            connections,
            rss_kib,
        };
        // 5 MiB for the first 100 connections, then 2 KiB each.
        let curve = [
            point(0, 10_000),
            point(100, 15_000),
            point(500, 15_800),
            point(1_000, 16_800),
        ];
        assert_eq!(marginal(&curve), Some(2_048.0));
        assert_eq!(marginal(&[point(0, 1)]), None);
    }
}
