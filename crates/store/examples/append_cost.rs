//! The store's CPU per appended send, without the network: `natter-bench
//! dm`'s writes (500 one-to-one conversations, sends spread over them) fed
//! straight to a `SqliteStore` in batches, as the committer does.
//!
//! ```sh
//! cargo build --release -p natter-store --example append_cost
//! RATE=25000 taskset -c 0 target/release/examples/append_cost
//! ```
//!
//! `RATE` paces the batches (sends per second; unpaced if unset), `BATCH`
//! is the sends per commit (250), `BATCHES` how many are measured (400).
//! Prints the CPU of the writer and checkpoint threads per send. Runs move
//! by ±5 % on a shared machine: compare builds in alternation.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use natter_core::{
    ConversationId, MessageId, NewMessage, Store, UserId,
    store::{ImportData, NewConversation, NewUser},
    time,
};
use natter_store::{SqliteConfig, SqliteStore};

const PAIRS: u64 = 500;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds by thread name, for the store's threads.
fn store_threads_cpu() -> BTreeMap<String, f64> {
    let mut cpu = BTreeMap::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // utime and stime, the 12th and 13th fields after the command.
        let fields: Vec<f64> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        let name = name.trim();
        if name.starts_with("natter-sqlite") && fields.len() > 12 {
            *cpu.entry(name.to_string()).or_default() += (fields[11] + fields[12]) / 100.0;
        }
    }
    cpu
}

/// A send from one member of a random pair to the other.
fn send(n: u64, rng: &mut u64) -> NewMessage {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let pair = *rng % PAIRS;
    let side = if *rng & (1 << 40) == 0 { "a" } else { "b" };
    NewMessage {
        id: MessageId::new_unchecked(uuid::Uuid::now_v7().to_string()),
        conversation: ConversationId::new_unchecked(format!("d{pair}")),
        sender: UserId::new_unchecked(format!("d{pair}{side}")),
        content: "x".repeat(100),
        content_type: "text".into(),
        client_message_id: Some(format!("{}-{n}", time::now_us())),
        sent_at: time::now_ms(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("cost.db")))
        .await
        .expect("open");
    let mut data = ImportData {
        users: vec![],
        conversations: vec![],
    };
    for p in 0..PAIRS {
        let members = [format!("d{p}a"), format!("d{p}b")].map(UserId::new_unchecked);
        data.users.extend(members.iter().map(|id| NewUser {
            id: id.clone(),
            name: None,
        }));
        data.conversations.push(NewConversation {
            id: ConversationId::new_unchecked(format!("d{p}")),
            title: None,
            members: members.to_vec(),
        });
    }
    store.import(data).await.expect("import");

    let rate = setting("RATE", 0.0);
    let batch = setting("BATCH", 250.0) as usize;
    let batches = setting("BATCHES", 400.0) as usize;
    let (mut rng, mut n) = (0x2545_F491_4F6C_DD1D_u64, 0);
    let mut append = async |n: &mut u64| {
        let sends = (0..batch)
            .map(|_| {
                *n += 1;
                send(*n, &mut rng)
            })
            .collect();
        store.append(sends).await.expect("append");
    };
    // Warm-up: every conversation has messages and its leaf pages exist.
    for _ in 0..200 {
        append(&mut n).await;
    }
    let before = store_threads_cpu();
    let started = Instant::now();
    for i in 0..batches {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64((i * batch) as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        append(&mut n).await;
    }
    // The checkpointer's last round.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let sends = (batches * batch) as f64;
    let mut total = 0.0;
    let mut line = format!("{sends} sends:");
    for (thread, after) in store_threads_cpu() {
        let used = after - before.get(&thread).copied().unwrap_or(0.0);
        total += used;
        line += &format!(" {thread} {:.2} µs", used * 1e6 / sends);
    }
    println!("{line}; store {:.2} µs per send", total * 1e6 / sends);
    store.close().await;
}
