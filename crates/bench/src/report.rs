//! The Markdown summary of a results directory, with natter / Socket.IO
//! ratios where both ran.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use crate::results::RunResult;

/// Every `<scenario>-<peer>.json` in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Vec<RunResult>> {
    let mut results = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            if let Ok(result) = serde_json::from_str::<RunResult>(&text) {
                results.push(result);
            }
        }
    }
    results.sort_by(|a, b| (&a.scenario, &a.peer).cmp(&(&b.scenario, &b.peer)));
    Ok(results)
}

pub fn one_line(r: &RunResult) -> String {
    format!(
        "{} {}: {} conns, {} sends, {}/{} deliveries ({} lost), {:.0} deliveries/s, {:.0} acks/s, delivery p99 {:.2} ms, ack p99 {:.2} ms, {}{}",
        r.scenario,
        r.peer,
        r.connections,
        r.sends,
        r.deliveries,
        r.expected_deliveries,
        r.loss,
        r.deliveries_per_s,
        r.acks_per_s,
        r.delivery.p99_ms,
        r.ack.p99_ms,
        if r.server_observed {
            format!("server CPU {:.2} s", r.server_cpu_s)
        } else {
            "server not observed (--url)".to_string()
        },
        r.rss_per_connection_bytes
            .map(|b| format!(", {b:.0} B RSS per connection"))
            .unwrap_or_default(),
    )
}

fn ratio(natter: f64, other: f64, higher_is_better: bool) -> String {
    if natter <= 0.0 || other <= 0.0 {
        return "–".into();
    }
    let r = if higher_is_better {
        natter / other
    } else {
        other / natter
    };
    format!("{r:.1}×")
}

/// The summary tables: one row per scenario and peer, then the ratios.
pub fn summary(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | peer | conns | sends | deliveries (lost) | deliveries/s | acks/s | delivery p50 / p99 / max ms | ack p99 ms | generator lag p99 ms | last member p99 ms | server CPU µs/delivery | µs/ack | RSS B/conn |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ({}) | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            r.scenario,
            r.peer,
            r.connections,
            r.sends,
            r.deliveries,
            r.loss,
            r.deliveries_per_s,
            r.acks_per_s,
            r.delivery.p50_ms,
            r.delivery.p99_ms,
            r.delivery.max_ms,
            r.ack.p99_ms,
            r.send_lag.p99_ms,
            r.last_member
                .as_ref()
                .map(|l| format!("{:.2}", l.p99_ms))
                .unwrap_or_else(|| "–".into()),
            r.cpu_us_per_delivery()
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "–".into()),
            r.cpu_us_per_ack()
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "–".into()),
            match (
                r.rss_per_connection_bytes,
                r.rss_marginal_per_connection_bytes
            ) {
                (Some(b), Some(m)) => format!("{b:.0} (marginal {m:.0})"),
                (Some(b), None) => format!("{b:.0}"),
                _ => "–".into(),
            },
        );
        if let Some(max) = r.max_sustainable_deliveries_per_s {
            let _ = writeln!(
                out,
                "| ↳ max sustainable | {} | | | | {max:.0} | | | | | | | | |",
                r.peer
            );
        }
    }
    let _ = writeln!(
        out,
        "\nWhere the server's CPU went, per thread (µs per acked send; threads under 2 % left out):\n"
    );
    let _ = writeln!(out, "| scenario | peer | threads |");
    let _ = writeln!(out, "|---|---|---|");
    for r in results.iter().filter(|r| r.acks > 0 && r.server_observed) {
        let _ = writeln!(out, "| {} | {} | {} |", r.scenario, r.peer, by_thread(r));
    }
    let mut by_scenario: BTreeMap<&str, BTreeMap<&str, &RunResult>> = BTreeMap::new();
    for r in results {
        by_scenario
            .entry(&r.scenario)
            .or_default()
            .insert(&r.peer, r);
    }
    let _ = writeln!(
        out,
        "\nnatter compared with Socket.IO (how many times better):\n"
    );
    let _ = writeln!(
        out,
        "| scenario | deliveries/s | delivery p99 | ack p99 | CPU per delivery | RSS per connection |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (scenario, peers) in &by_scenario {
        let (Some(n), Some(s)) = (peers.get("natter"), peers.get("socketio")) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} | {} | {} | {} |",
            ratio(
                n.max_sustainable_deliveries_per_s
                    .unwrap_or(n.deliveries_per_s),
                s.max_sustainable_deliveries_per_s
                    .unwrap_or(s.deliveries_per_s),
                true
            ),
            ratio(n.delivery.p99_ms, s.delivery.p99_ms, false),
            ratio(n.ack.p99_ms, s.ack.p99_ms, false),
            ratio(
                n.cpu_us_per_delivery().unwrap_or(0.0),
                s.cpu_us_per_delivery().unwrap_or(0.0),
                false
            ),
            ratio(
                n.rss_per_connection_bytes.unwrap_or(0.0),
                s.rss_per_connection_bytes.unwrap_or(0.0),
                false
            ),
        );
    }
    out
}

/// `name µs, ...` per acked send for the threads that used at least 2 % of
/// the run's server CPU, busiest first.
fn by_thread(r: &RunResult) -> String {
    let total: f64 = r.server_cpu_by_thread.values().sum();
    let mut threads: Vec<(&String, &f64)> = r
        .server_cpu_by_thread
        .iter()
        .filter(|(_, s)| total > 0.0 && **s / total >= 0.02)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(a.1));
    let parts: Vec<String> = threads
        .iter()
        .map(|(name, s)| format!("{name} {:.1}", **s * 1e6 / r.acks.max(1) as f64))
        .collect();
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}
