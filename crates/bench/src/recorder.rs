//! Where connections report what they see, with latencies measured from the
//! *intended* send time of an open-loop schedule, so a stalled server shows
//! up as latency instead of silently slowing the load (coordinated
//! omission).

use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::results::{Latency, Second};

#[derive(Debug, Clone, Copy)]
pub enum Sample {
    Delivered {
        latency_us: u64,
        at_us: u64,
    },
    Acked {
        latency_us: u64,
    },
    /// A send left the generator at `at_us`, meant for `intended_us`.
    Sent {
        at_us: u64,
        intended_us: u64,
    },
    Receipt,
    Error,
}

/// Shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    origin: Instant,
    tx: mpsc::UnboundedSender<Sample>,
}

impl Recorder {
    pub fn new() -> (Self, Collector) {
        let (tx, rx) = mpsc::unbounded_channel();
        let origin = Instant::now();
        (Self { origin, tx }, Collector::new(rx))
    }

    /// Microseconds since the run's origin: the clock of every timestamp.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    pub fn record(&self, sample: Sample) {
        let _ = self.tx.send(sample);
    }

    /// A message that was meant to be sent at `intended_us` arrived now.
    pub fn delivered(&self, intended_us: u64) {
        let now = self.now_us();
        self.record(Sample::Delivered {
            latency_us: now.saturating_sub(intended_us),
            at_us: now,
        });
    }

    /// The send meant for `intended_us` was acked now.
    pub fn acked(&self, intended_us: u64) {
        let now = self.now_us();
        self.record(Sample::Acked {
            latency_us: now.saturating_sub(intended_us),
        });
    }
}

/// The content of a benchmark message: its intended send time and padding.
pub fn content(intended_us: u64, size: usize) -> String {
    let mut s = format!("b|{intended_us}|");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Finds a benchmark message's intended send time in a raw frame, without
/// parsing the JSON: the load generator must stay cheaper than the server.
pub fn intended_in(frame: &str) -> Option<u64> {
    let start = frame.find("\"content\":\"b|")? + "\"content\":\"b|".len();
    let digits = &frame[start..];
    let end = digits.find('|')?;
    digits[..end].parse().ok()
}

/// Aggregates samples into totals, histograms and a per-second timeline.
pub struct Collector {
    rx: mpsc::UnboundedReceiver<Sample>,
    pub deliveries: u64,
    pub acks: u64,
    pub sends: u64,
    pub receipts: u64,
    pub errors: u64,
    pub delivery: Histogram<u64>,
    pub ack: Histogram<u64>,
    /// How late the generator itself wrote each send (actual - intended):
    /// the part of every latency that is not the server's.
    pub send_lag: Histogram<u64>,
    /// Load start (µs since origin); samples before it are not in the timeline.
    pub load_start_us: u64,
    seconds: Vec<(u64, u64, Histogram<u64>)>,
    /// Per message (by intended send time): deliveries seen and the latest
    /// one's latency, when a scenario asks "when did the last member get it".
    pub per_message: Option<std::collections::HashMap<u64, (u64, u64)>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

impl Collector {
    fn new(rx: mpsc::UnboundedReceiver<Sample>) -> Self {
        Self {
            rx,
            deliveries: 0,
            acks: 0,
            sends: 0,
            receipts: 0,
            errors: 0,
            delivery: histogram(),
            ack: histogram(),
            send_lag: histogram(),
            load_start_us: 0,
            seconds: Vec::new(),
            per_message: None,
        }
    }

    /// Takes every sample recorded so far.
    pub fn drain(&mut self) {
        while let Ok(sample) = self.rx.try_recv() {
            self.add(sample);
        }
    }

    /// Waits for samples until `done` says enough, or `deadline` passes.
    pub async fn collect_until(
        &mut self,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&Self) -> bool,
    ) {
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(sample)) => {
                    self.add(sample);
                    self.drain();
                }
                _ => break,
            }
        }
    }

    fn second(&mut self, at_us: u64) -> Option<&mut (u64, u64, Histogram<u64>)> {
        let t = (at_us.checked_sub(self.load_start_us)? / 1_000_000) as usize;
        while self.seconds.len() <= t {
            self.seconds.push((0, 0, histogram()));
        }
        self.seconds.get_mut(t)
    }

    fn add(&mut self, sample: Sample) {
        match sample {
            Sample::Delivered { latency_us, at_us } => {
                self.deliveries += 1;
                self.delivery.saturating_record(latency_us.max(1));
                if let Some(per_message) = &mut self.per_message {
                    let entry = per_message.entry(at_us - latency_us).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(latency_us);
                }
                if let Some(s) = self.second(at_us) {
                    s.1 += 1;
                    s.2.saturating_record(latency_us.max(1));
                }
            }
            Sample::Acked { latency_us } => {
                self.acks += 1;
                self.ack.saturating_record(latency_us.max(1));
            }
            Sample::Sent { at_us, intended_us } => {
                self.sends += 1;
                self.send_lag
                    .saturating_record(at_us.saturating_sub(intended_us).max(1));
                if let Some(s) = self.second(at_us) {
                    s.0 += 1;
                }
            }
            Sample::Receipt => self.receipts += 1,
            Sample::Error => self.errors += 1,
        }
    }

    /// Forgets everything counted so far (after a warm-up).
    pub fn reset(&mut self, load_start_us: u64) {
        self.drain();
        let rx = std::mem::replace(&mut self.rx, mpsc::unbounded_channel().1);
        let per_message = self.per_message.take().map(|_| Default::default());
        *self = Self::new(rx);
        self.load_start_us = load_start_us;
        self.per_message = per_message;
    }

    pub fn timeline(&self) -> Vec<Second> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, (sends, deliveries, h))| Second {
                t: t as u32,
                sends: *sends,
                deliveries: *deliveries,
                p50_ms: ms(h.value_at_quantile(0.5)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            })
            .collect()
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles of a histogram in milliseconds.
pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_intended_time_in_either_peers_frame() {
        let natter = format!(
            r#"{{"type":"new_message","message":{{"_id":"m","content":"{}","seq":1}}}}"#,
            content(1234, 40)
        );
        assert_eq!(intended_in(&natter), Some(1234));
        let socketio = format!(
            r#"42["new_message",{{"conversationId":"c","content":"{}"}}]"#,
            content(99, 10)
        );
        assert_eq!(intended_in(&socketio), Some(99));
        assert_eq!(intended_in(r#"{"type":"message_sent"}"#), None);
    }
}
