//! `bigroom`: one conversation of M members, one message per interval;
//! how long until the last member has each message.

use std::time::Duration;

use serde_json::json;

use super::{Context, Load, Session, names};
use crate::{recorder::latency, results::RunResult, server::Fixture};

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct BigRoom {
    /// Members, all connected.
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Messages sent.
    #[arg(long, default_value_t = 60)]
    pub messages: usize,
    /// Milliseconds between messages.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Messages sent before measuring (the first loads the member list).
    // Without them the room's first message, the one that loads its
    // 10,000 members from the store, was the slowest of the 60 in two runs
    // of three, and so their p99: 225 and 237 ms, against at most 186 ms
    // for any other message.
    #[arg(long, default_value_t = 2)]
    pub warmup_messages: usize,
}

impl BigRoom {
    pub fn tiny() -> Self {
        BigRoom {
            members: 20,
            messages: 3,
            interval_ms: 100,
            warmup_messages: 1,
        }
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<RunResult> {
        let members = names("r", self.members);
        let fixture = Fixture {
            users: members.clone(),
            conversations: vec![("big".to_string(), members.clone())],
        };
        let mut session = Session::open(ctx, &fixture, &members).await?;
        // Kept across the measurement's reset: per message, its last recipient.
        session.collector.per_message = Some(Default::default());
        let sender = vec![(members[0].clone(), "big".to_string())];
        let load = Load {
            targets: &sender,
            rate: 1000.0 / self.interval_ms.max(1) as f64,
            duration: Duration::from_millis(self.interval_ms * self.messages as u64),
            size: 100,
            recipients: self.members as u64 - 1,
        };
        let warmup = Duration::from_millis(self.interval_ms * self.warmup_messages as u64);
        let mut result = session
            .measure_warm("bigroom", json!(self), load, warmup)
            .await;
        let mut last = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let complete = self.members as u64 - 1;
        for (count, max_latency) in session
            .collector
            .per_message
            .iter()
            .flat_map(|m| m.values())
        {
            if *count == complete {
                last.saturating_record((*max_latency).max(1));
            }
        }
        result.last_member = Some(latency(&last));
        session.stop();
        Ok(result)
    }
}
