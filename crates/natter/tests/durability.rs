//! Nothing acked is lost: the real binary is killed with SIGKILL right after
//! its acks, restarted, and every acked message is found by `sync`.

mod common;

use std::collections::HashSet;

use common::*;
use natter_client::ServerFrame;
use serde_json::json;

#[tokio::test]
async fn acked_messages_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("natter.db");
    seed_database(&database).await;

    let server = NatterProcess::start(&database, &["--rate-limit-per-minute", "0"]).await;
    let mut alice = server.connect("alice").await;
    const SENT: usize = 50;
    for i in 0..SENT {
        alice
            .send_message("team", &format!("durable {i}"), Some(&format!("d{i}")))
            .await
            .expect("send");
    }
    let mut acked = HashSet::new();
    while acked.len() < SENT {
        if let ServerFrame::MessageSent { message_id, .. } = next_message_frame(&mut alice).await {
            acked.insert(message_id);
        }
    }
    // The acks are in; no chance for a clean shutdown.
    server.kill();

    let server = NatterProcess::start(&database, &[]).await;
    let mut bob = server.connect("bob").await;
    bob.send_json(&json!({"type": "sync", "cursors": {"team": 0}}))
        .await
        .expect("sync");
    let mut found = HashSet::new();
    loop {
        match next_message_frame(&mut bob).await {
            ServerFrame::NewMessage { message, .. } => {
                found.insert(message.id);
            }
            ServerFrame::SyncComplete { cursors, .. } => {
                assert_eq!(cursors["team"], SENT as i64);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(found, acked, "every acked message is there after the crash");

    // And the retry of an acked send after the crash is recognised.
    let mut alice = server.connect("alice").await;
    alice
        .send_message("team", "durable 0", Some("d0"))
        .await
        .expect("send");
    match next_message_frame(&mut alice).await {
        ServerFrame::MessageSent {
            duplicate,
            message_id,
            ..
        } => {
            assert!(duplicate);
            assert!(acked.contains(&message_id));
        }
        other => panic!("expected message_sent, got {other:?}"),
    }
}
