//! `dm`: many one-to-one conversations, write-heavy: durably acked sends
//! per second and ack latency.

use std::time::Duration;

use serde_json::json;

use super::{Context, Load, Session};
use crate::{results::RunResult, server::Fixture};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Dm {
    /// One-to-one conversations.
    #[arg(long, default_value_t = 500)]
    pub pairs: usize,
    /// Sends per second, in total.
    #[arg(id = "dm_rate", long = "dm-rate", default_value_t = 25_000.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(id = "dm_duration", long = "dm-duration", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (member lists and delivery
    /// watermarks load from the store).
    #[arg(id = "dm_warmup", long = "dm-warmup", default_value_t = 2.0)]
    pub warmup: f64,
}

impl Dm {
    pub fn tiny() -> Self {
        Dm {
            pairs: 5,
            rate: 50.0,
            duration: 1.0,
            warmup: 0.2,
        }
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<RunResult> {
        let mut fixture = Fixture::default();
        let mut senders = Vec::new();
        for p in 0..self.pairs {
            let (a, b) = (format!("d{p}a"), format!("d{p}b"));
            fixture.users.extend([a.clone(), b.clone()]);
            fixture
                .conversations
                .push((format!("d{p}"), vec![a.clone(), b.clone()]));
            senders.push((a, format!("d{p}")));
        }
        for p in 0..self.pairs {
            senders.push((format!("d{p}b"), format!("d{p}")));
        }
        let mut session = Session::open(ctx, &fixture, &fixture.users).await?;
        let load = Load {
            targets: &senders,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration),
            size: 100,
            recipients: 1,
        };
        let warmup = Duration::from_secs_f64(self.warmup);
        let result = session.measure_warm("dm", json!(self), load, warmup).await;
        session.stop();
        Ok(result)
    }
}
