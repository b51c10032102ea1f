//! `fanout`: G conversations of S members, everyone connected, a total send
//! rate R spread over all members; every send must reach the S-1 others.

use std::time::Duration;

use serde_json::json;

use super::{Context, Load, Session, names};
use crate::{results::RunResult, server::Fixture};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Fanout {
    /// Conversations.
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Members per conversation.
    #[arg(long, default_value_t = 10)]
    pub size: usize,
    /// Sends per second, in total.
    #[arg(long, default_value_t = 16_667.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Bytes of content per message.
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Seconds of load before measuring (caches, JIT, buffers warm up).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

impl Fanout {
    pub fn tiny() -> Self {
        Fanout {
            groups: 3,
            size: 3,
            rate: 50.0,
            duration: 1.0,
            message_size: 100,
            warmup: 0.0,
        }
    }

    /// The fixture: `g<i>m<j>` members of conversation `g<i>`, and the
    /// (sender, conversation) pairs in round-robin order across groups.
    pub fn fixture(&self) -> (Fixture, Vec<(String, String)>) {
        let mut fixture = Fixture::default();
        let mut senders = Vec::new();
        for g in 0..self.groups {
            let members = names(&format!("g{g}m"), self.size);
            fixture.users.extend(members.iter().cloned());
            fixture.conversations.push((format!("g{g}"), members));
        }
        for m in 0..self.size {
            for g in 0..self.groups {
                senders.push((format!("g{g}m{m}"), format!("g{g}")));
            }
        }
        (fixture, senders)
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<RunResult> {
        let (fixture, _) = self.fixture();
        let mut session = Session::open(ctx, &fixture, &fixture.users).await?;
        let result = self.load(&mut session, "fanout").await;
        session.stop();
        Ok(result)
    }

    /// Drives the load on an open session and measures it.
    pub async fn load(&self, session: &mut Session, scenario: &str) -> RunResult {
        let (_, senders) = self.fixture();
        let load = Load {
            targets: &senders,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration),
            size: self.message_size,
            recipients: self.size as u64 - 1,
        };
        let warmup = Duration::from_secs_f64(self.warmup);
        session
            .measure_warm(scenario, json!(self), load, warmup)
            .await
    }
}
