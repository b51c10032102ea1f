//! The scenarios. Each builds its fixture, starts the server, opens the
//! connections, drives an open-loop load and returns a [`RunResult`].

pub mod bigroom;
pub mod dm;
pub mod fanout;
pub mod idle;
pub mod ramp;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;

use crate::{
    recorder::{Collector, Recorder, content, latency},
    results::{RssPoint, RunResult},
    server::{Fixture, Options, Server},
    transport::{self, Connection, Identity, Peer},
};

/// What every scenario is given.
#[derive(Debug, Clone)]
pub struct Context {
    pub peer: Peer,
    pub options: Options,
}

/// A started server with its connections.
pub struct Session {
    pub server: Server,
    pub recorder: Recorder,
    pub collector: Collector,
    pub connections: HashMap<String, Connection>,
    pub connect: Histogram<u64>,
    pub rss_curve: Vec<RssPoint>,
    pub rss_before: u64,
}

/// How long a run waits for the last deliveries and acks after its last
/// send: an overloaded server catches up late, which is latency, not loss.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Connections opened at once while connecting.
const CONNECT_CONCURRENCY: usize = 64;

impl Session {
    /// Starts the server with `fixture` and connects every user in `connect`.
    pub async fn open(
        ctx: &Context,
        fixture: &Fixture,
        connect: &[String],
    ) -> anyhow::Result<Self> {
        let server = Server::start(ctx.peer, &ctx.options, fixture).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_before = server.rss_kib();
        let (recorder, collector) = Recorder::new();
        let mut session = Session {
            server,
            recorder,
            collector,
            connections: HashMap::new(),
            connect: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            rss_curve: vec![RssPoint {
                connections: 0,
                rss_kib: rss_before,
            }],
            rss_before,
        };
        session.connect_all(ctx.peer, connect).await?;
        Ok(session)
    }

    async fn connect_all(&mut self, peer: Peer, users: &[String]) -> anyhow::Result<()> {
        let mut identities = Vec::with_capacity(users.len());
        for user in users {
            identities.push(Identity {
                user: user.clone(),
                token: self.server.token(user)?,
            });
        }
        let step = (users.len() / 20).max(1);
        let addrs = self.server.addrs.clone();
        let recorder = self.recorder.clone();
        let mut attempts = stream::iter(identities.into_iter().enumerate())
            .map(|(n, identity)| {
                let recorder = recorder.clone();
                let addr = addrs[n % addrs.len()];
                async move {
                    let started = Instant::now();
                    let result = transport::connect(
                        peer,
                        addr,
                        &identity,
                        transport::source_for(n, addr),
                        recorder,
                    )
                    .await;
                    (identity.user, result, started.elapsed())
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY);
        while let Some((user, result, took)) = attempts.next().await {
            let connection = result.map_err(|e| anyhow::anyhow!("connecting {user}: {e:#}"))?;
            self.connect
                .saturating_record(took.as_micros().max(1) as u64);
            self.connections.insert(user, connection);
            if self.connections.len().is_multiple_of(step) {
                self.rss_curve.push(RssPoint {
                    connections: self.connections.len() as u64,
                    rss_kib: self.server.rss_kib(),
                });
            }
        }
        Ok(())
    }

    /// Sends `rate` messages per second for `duration`, open loop: message k
    /// is due at start + k / rate whatever happened to the ones before.
    /// `targets` are (sender, conversation), used round-robin.
    pub async fn drive(
        &mut self,
        targets: &[(String, String)],
        rate: f64,
        duration: Duration,
        size: usize,
    ) -> u64 {
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let start = self.recorder.now_us();
        let due = |k: u64| start + (k as f64 * 1e6 / rate) as u64;
        let mut sent = 0u64;
        while sent < total && !targets.is_empty() {
            let now = self.recorder.now_us();
            while sent < total && due(sent) <= now {
                let (user, conversation) = &targets[(sent % targets.len() as u64) as usize];
                if let Some(connection) = self.connections.get(user) {
                    connection.send(conversation, due(sent), content(due(sent), size));
                }
                sent += 1;
            }
            self.collector.drain();
            // tokio's timers tick in whole milliseconds: sleeping to the next
            // due time would send up to a millisecond late, and that lag
            // would count as the server's latency. Close to it, yield instead
            // (the other tasks, the connections, run meanwhile).
            let wait = due(sent).saturating_sub(self.recorder.now_us());
            if wait > 2_000 {
                tokio::time::sleep(Duration::from_micros(wait - 1_500)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        sent
    }

    /// Waits until `deliveries` and `acks` arrived or `grace` passes after
    /// the last one did.
    pub async fn settle(&mut self, deliveries: u64, acks: u64, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.collector
            .collect_until(deadline, |c| c.deliveries >= deliveries && c.acks >= acks)
            .await;
    }

    /// Drives `load` from a fresh count and measures it: what arrived
    /// against what was expected, latencies, and the server's CPU.
    pub async fn measure(
        &mut self,
        scenario: &str,
        config: serde_json::Value,
        load: &Load<'_>,
    ) -> RunResult {
        let start = self.recorder.now_us();
        self.collector.reset(start);
        let cpu_before = self.server.cpu_seconds();
        let threads_before = self.server.cpu_seconds_by_thread();
        let sent = self
            .drive(load.targets, load.rate, load.duration, load.size)
            .await;
        let expected = sent * load.recipients;
        self.settle(expected, sent, SETTLE).await;
        let mut result = self.result(scenario, config, load.duration);
        result.server_cpu_s = self.server.cpu_seconds() - cpu_before;
        result.server_cpu_by_thread = self
            .server
            .cpu_seconds_by_thread()
            .into_iter()
            .map(|(name, after)| {
                let before = threads_before.get(&name).copied().unwrap_or(0.0);
                (name, after - before)
            })
            .collect();
        result.expected_deliveries = expected;
        result.loss = expected.saturating_sub(result.deliveries);
        result
    }

    /// Drives `load` for `warmup` first, unmeasured (caches fill, member
    /// lists load, JITs compile), then measures it.
    pub async fn measure_warm(
        &mut self,
        scenario: &str,
        config: serde_json::Value,
        load: Load<'_>,
        warmup: Duration,
    ) -> RunResult {
        if !warmup.is_zero() {
            let warm = Load {
                duration: warmup,
                ..load
            };
            self.measure(scenario, config.clone(), &warm).await;
        }
        self.measure(scenario, config, &load).await
    }

    /// The common part of a result.
    pub fn result(
        &self,
        scenario: &str,
        config: serde_json::Value,
        duration: Duration,
    ) -> RunResult {
        let c = &self.collector;
        let seconds = duration.as_secs_f64().max(1e-9);
        RunResult {
            scenario: scenario.to_string(),
            peer: self.server.peer.name().to_string(),
            config,
            duration_s: duration.as_secs_f64(),
            connections: self.connections.len() as u64,
            sends: c.sends,
            acks: c.acks,
            deliveries: c.deliveries,
            errors: c.errors,
            deliveries_per_s: c.deliveries as f64 / seconds,
            acks_per_s: c.acks as f64 / seconds,
            delivery: latency(&c.delivery),
            ack: latency(&c.ack),
            send_lag: latency(&c.send_lag),
            connect: latency(&self.connect),
            server_rss_kib_before: self.rss_before,
            server_rss_kib_after: self.server.rss_kib(),
            timeline: c.timeline(),
            rss_curve: self.rss_curve.clone(),
            server_observed: self.server.observed(),
            ..RunResult::default()
        }
    }

    pub fn stop(self) {
        for connection in self.connections.values() {
            connection.close();
        }
        self.server.stop();
    }
}

/// An open-loop load: `rate` sends per second for `duration`, from
/// (sender, conversation) `targets` in turn, each reaching `recipients`.
pub struct Load<'a> {
    pub targets: &'a [(String, String)],
    pub rate: f64,
    pub duration: Duration,
    /// Bytes of content per message.
    pub size: usize,
    pub recipients: u64,
}

/// `prefix0`, `prefix1`, ...
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}
