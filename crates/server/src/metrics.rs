//! Prometheus metrics, one registry per server instance (so two instances in
//! one test process keep separate counts), served at `/metrics` in the
//! Prometheus text format.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_opened: Counter,
    pub connections_closed: Family<Code, Counter>,
    pub messages_sent: Counter,
    pub messages_delivered: Counter,
    pub messages_read: Counter,
    pub errors: Family<Code, Counter>,
    pub rate_limited: Counter,
    pub slow_consumer_drops: Counter,
    pub slow_consumer_closes: Counter,
    /// Bytes waiting in every connection's outbox together.
    pub outbox_queued_bytes: Gauge,
    pub send_ack_seconds: Histogram,
    /// One group commit: `Store::append` for a batch.
    pub commit_seconds: Histogram,
    pub commit_batch_size: Histogram,
    pub fanout_seconds: Histogram,
    pub broker_publish_failures: Counter,
}

/// Latency buckets from 100 µs to 10 s.
fn latency() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("natter"),
            connections_open: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            messages_sent: Counter::default(),
            messages_delivered: Counter::default(),
            messages_read: Counter::default(),
            errors: Family::default(),
            rate_limited: Counter::default(),
            slow_consumer_drops: Counter::default(),
            slow_consumer_closes: Counter::default(),
            outbox_queued_bytes: Gauge::default(),
            send_ack_seconds: latency(),
            commit_seconds: latency(),
            commit_batch_size: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            fanout_seconds: latency(),
            broker_publish_failures: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "connections_open",
            "Open WebSocket connections",
            m.connections_open.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket connections closed, by close code",
            m.connections_closed.clone(),
        );
        r.register(
            "messages_sent",
            "Messages committed and acked",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_delivered",
            "new_message frames written to a recipient's socket",
            m.messages_delivered.clone(),
        );
        r.register(
            "messages_read",
            "Read receipts that advanced a read watermark",
            m.messages_read.clone(),
        );
        r.register(
            "errors",
            "Error frames sent, by error code",
            m.errors.clone(),
        );
        r.register(
            "rate_limited",
            "Sends refused by the rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "slow_consumer_drops",
            "Typing and presence events dropped for connections falling behind",
            m.slow_consumer_drops.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Connections closed with 1013 for falling too far behind",
            m.slow_consumer_closes.clone(),
        );
        r.register(
            "outbox_queued_bytes",
            "Bytes queued for all connections and not yet written",
            m.outbox_queued_bytes.clone(),
        );
        r.register(
            "send_ack_seconds",
            "From reading a send to queuing its ack, commit included",
            m.send_ack_seconds.clone(),
        );
        r.register(
            "commit_seconds",
            "One group commit of sends to the store, fsync included",
            m.commit_seconds.clone(),
        );
        r.register(
            "commit_batch_size",
            "Sends committed together in one transaction",
            m.commit_batch_size.clone(),
        );
        r.register(
            "fanout_seconds",
            "From a message's commit to its frame written to a recipient's socket",
            m.fanout_seconds.clone(),
        );
        r.register(
            "broker_publish_failures",
            "Events the broker failed to publish",
            m.broker_publish_failures.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn error(&self, code: natter_protocol::ErrorCode) {
        self.errors
            .get_or_create(&Code {
                code: code.as_str().to_string(),
            })
            .inc();
    }

    pub fn closed(&self, code: u16) {
        self.connections_closed
            .get_or_create(&Code {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
