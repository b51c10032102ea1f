//! Limits: the send rate per user across connections, connections per
//! user, and slow consumers, whose backlog is bounded and who are closed
//! with 1013 while everyone else keeps receiving.

mod common;

use common::*;
use natter_client::{ErrorCode, ServerFrame};
use serde_json::json;

#[tokio::test]
async fn the_rate_limit_spans_all_of_a_users_connections() {
    // A burst of 3, then one per minute: nothing refills during the test.
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_minute = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let mut phone = server.connect("alice").await;
    let mut laptop = server.connect("alice").await;
    send(&mut phone, "team", "1").await;
    send(&mut laptop, "team", "2").await;
    send(&mut phone, "team", "3").await;
    laptop.send_message("team", "4", None).await.expect("send");
    assert_eq!(next_error(&mut laptop).await.0, ErrorCode::RateLimited);
    phone.send_message("team", "5", None).await.expect("send");
    assert_eq!(next_error(&mut phone).await.0, ErrorCode::RateLimited);

    // Nothing of the refused sends was stored.
    let mut bob = server.connect("bob").await;
    bob.send_json(&json!({"type": "sync", "cursors": {"team": 0}}))
        .await
        .expect("sync");
    let mut contents = Vec::new();
    loop {
        match next_message_frame(&mut bob).await {
            ServerFrame::NewMessage { message, .. } => contents.push(message.content),
            ServerFrame::SyncComplete { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(contents, ["1", "2", "3"]);
    // Another user has their own budget.
    send(&mut bob, "team", "mine").await;
}

#[tokio::test]
async fn a_user_over_the_connection_cap_loses_the_oldest_connection() {
    let server = TestServer::start_with(|c| c.max_connections_per_user = 2).await;
    let mut first = server.connect("alice").await;
    let mut second = server.connect("alice").await;
    let mut third = server.connect("alice").await;
    assert_eq!(close_code(&mut first).await, 4008);
    for client in [&mut second, &mut third] {
        send(client, "team", "still connected").await;
    }
}

#[tokio::test]
async fn a_stalled_reader_is_closed_with_1013_and_others_keep_receiving() {
    const WINDOWS: usize = 60;
    const PER_WINDOW: usize = 20;
    let server = TestServer::start_with(|c| c.rate_limit_per_minute = 0).await;
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    // Bob connects, then never reads again: the kernel's buffers fill, then
    // his outbox (1 MiB).
    let mut bob = server.connect("bob").await;

    // ~20 MB in windows that carol, who reads, always keeps up with.
    let content = "x".repeat(16 * 1024);
    for _ in 0..WINDOWS {
        for _ in 0..PER_WINDOW {
            alice
                .send_message("team", &content, None)
                .await
                .expect("send");
        }
        let mut acked = 0;
        while acked < PER_WINDOW {
            if let ServerFrame::MessageSent { .. } = next_message_frame(&mut alice).await {
                acked += 1;
            }
        }
        for _ in 0..PER_WINDOW {
            next_new_message(&mut carol).await;
        }
    }

    let metrics = http_raw(server.addr, "GET", "/metrics", &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(
        value("natter_slow_consumer_closes_total "),
        1.0,
        "bob, and only bob"
    );
    // What is queued for everyone stays within the per-connection budgets,
    // though ~20 MB were sent to bob.
    assert!(value("natter_outbox_queued_bytes ") <= (3 * 1024 * 1024) as f64);

    // When bob reads again he finds the close, after whatever the kernel held.
    assert_eq!(close_code(&mut bob).await, 1013);
}
