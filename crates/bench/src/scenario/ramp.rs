//! `ramp`: the fan-out load raised step by step until p99 delivery latency
//! passes a bound or messages go missing; the last step that held is the
//! maximum sustainable rate.
//!
//! A step that fails is run once more and fails the ramp only if it fails
//! again: on a shared machine one stall of the disk or the hypervisor ends
//! a step. Without the second chance, runs of one build ended anywhere
//! between 55,000 and 69,000 deliveries/s, and of the build before between
//! 22,500 and 85,800. Both runs of a step are in the timeline.

use serde_json::json;

use super::{Context, Session, fanout::Fanout};
use crate::results::{RunResult, Second};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Ramp {
    /// Conversations.
    #[arg(id = "ramp_groups", long = "ramp-groups", default_value_t = 100)]
    pub groups: usize,
    /// Members per conversation.
    #[arg(id = "ramp_size", long = "ramp-size", default_value_t = 10)]
    pub size: usize,
    /// First step, in sends per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.25)]
    pub factor: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 5.0)]
    pub step_seconds: f64,
    /// Steps at most (not counting second chances).
    #[arg(long, default_value_t = 16)]
    pub max_steps: usize,
    /// The p99 delivery latency bound, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub bound_ms: f64,
}

impl Ramp {
    pub fn tiny() -> Self {
        Ramp {
            groups: 2,
            size: 3,
            start_rate: 20.0,
            factor: 2.0,
            step_seconds: 0.5,
            max_steps: 2,
            bound_ms: 60_000.0,
        }
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<RunResult> {
        let mut step = Fanout {
            groups: self.groups,
            size: self.size,
            rate: self.start_rate,
            duration: self.step_seconds,
            message_size: 100,
            warmup: 0.0,
        };
        let (fixture, _) = step.fixture();
        let mut session = Session::open(ctx, &fixture, &fixture.users).await?;
        let mut best: Option<RunResult> = None;
        let mut first_failure: Option<RunResult> = None;
        let mut steps = Vec::new();
        let mut second_chance = true;
        let mut held_steps = 0;
        while held_steps < self.max_steps {
            let result = step.load(&mut session, "ramp").await;
            steps.push(Second {
                t: steps.len() as u32,
                sends: result.sends,
                deliveries: result.deliveries,
                p50_ms: result.delivery.p50_ms,
                p99_ms: result.delivery.p99_ms,
                max_ms: result.delivery.max_ms,
            });
            let held = result.loss == 0 && result.delivery.p99_ms <= self.bound_ms;
            if !held {
                if std::mem::take(&mut second_chance) {
                    continue;
                }
                first_failure = Some(result);
                break;
            }
            second_chance = true;
            held_steps += 1;
            best = Some(result);
            step.rate *= self.factor;
        }
        // The last step that held; if none did, the failing first step (its
        // loss shows), with a sustainable rate of 0.
        let sustainable = best.as_ref().map_or(0.0, |r| r.deliveries_per_s);
        let mut result = best
            .or(first_failure)
            .unwrap_or_else(|| session.result("ramp", json!(self), Default::default()));
        result.max_sustainable_deliveries_per_s = Some(sustainable);
        result.config = json!(self);
        // The timeline of a ramp is its steps.
        result.timeline = steps;
        session.stop();
        Ok(result)
    }
}
