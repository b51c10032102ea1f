//! What a run measured, as written to `<scenario>-<peer>.json` and read back
//! by the report and the charts.

use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One second of a run, for the charts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the load started.
    pub t: u32,
    pub sends: u64,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Server memory as connections were opened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RssPoint {
    pub connections: u64,
    pub rss_kib: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    /// `natter` or `socketio`.
    pub peer: String,
    /// The scenario's parameters.
    pub config: serde_json::Value,
    /// Length of the load phase.
    pub duration_s: f64,
    pub connections: u64,
    pub sends: u64,
    pub acks: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Expected deliveries that never arrived.
    pub loss: u64,
    pub errors: u64,
    pub deliveries_per_s: f64,
    pub acks_per_s: f64,
    pub delivery: Latency,
    /// Per message, the latency of its last recipient (big rooms).
    pub last_member: Option<Latency>,
    pub ack: Latency,
    /// How late the generator wrote its sends: included in `delivery` and
    /// `ack`, but not the server's doing.
    #[serde(default)]
    pub send_lag: Latency,
    pub connect: Latency,
    /// CPU the server used during the load phase (user + system).
    pub server_cpu_s: f64,
    /// The same, per server thread name (threads of one name summed).
    #[serde(default)]
    pub server_cpu_by_thread: std::collections::BTreeMap<String, f64>,
    pub server_rss_kib_before: u64,
    pub server_rss_kib_after: u64,
    /// (RSS after - before) / connections, for idle runs.
    pub rss_per_connection_bytes: Option<f64>,
    /// The RSS growth per connection over the second half of the
    /// connections, for idle runs: without what the first connections
    /// cost once (thread stacks, database caches), so it is what each
    /// further connection costs.
    #[serde(default)]
    pub rss_marginal_per_connection_bytes: Option<f64>,
    /// For ramp runs: the highest step that met the bound without loss.
    pub max_sustainable_deliveries_per_s: Option<f64>,
    pub timeline: Vec<Second>,
    pub rss_curve: Vec<RssPoint>,
    pub notes: Vec<String>,
    /// Whether the tool watched the server's process: not for running
    /// servers given with `--url`, whose CPU and memory figures are absent.
    #[serde(default = "yes")]
    pub server_observed: bool,
}

fn yes() -> bool {
    true
}

impl RunResult {
    /// Server CPU microseconds per delivered message (fan-out cost).
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        (self.server_observed && self.deliveries > 0)
            .then(|| self.server_cpu_s * 1e6 / self.deliveries as f64)
    }

    /// Server CPU microseconds per acked send.
    pub fn cpu_us_per_ack(&self) -> Option<f64> {
        (self.server_observed && self.acks > 0).then(|| self.server_cpu_s * 1e6 / self.acks as f64)
    }
}
