//! Under load an ack waits for its message's delivery receipts, to reach
//! the sender in one write with them (`Config::ack_wait`). It never waits
//! for nothing: it leaves once every connected recipient has the message
//! and its receipt is queued, at once when nobody is connected, and after
//! `ack_wait` when a receipt is held back.
//!
//! Every commit counts as "under load" here (`ack_wait_batch = 1`).

mod common;

use std::time::Duration;

use common::*;
use natter_client::{Client, ServerFrame};
use serde_json::json;

/// Longer than any test waits: an ack that comes did not come by the timer.
const NEVER: Duration = Duration::from_secs(3600);

async fn server(ack_wait: Duration) -> TestServer {
    TestServer::start_with(|config| {
        config.ack_wait = ack_wait;
        config.ack_wait_batch = 1;
        // No ping either, which would carry a waiting ack with it.
        config.heartbeat = NEVER;
    })
    .await
}

#[tokio::test]
async fn with_nobody_to_receipt_the_ack_leaves_at_once() {
    let server = server(NEVER).await;
    let mut alice = server.connect("alice").await;
    // dave, the other member of `pair`, is offline.
    let (_, seq) = send(&mut alice, "pair", "anyone?").await;
    assert_eq!(seq, 1);
}

#[tokio::test]
async fn the_ack_leaves_with_its_receipt_and_before_it() {
    let server = server(NEVER).await;
    let mut alice = server.connect("alice").await;
    let mut dave = server.connect("dave").await;
    let request = alice
        .send_message("pair", "hello", None)
        .await
        .expect("send");
    let message = next_new_message(&mut dave).await;
    match next_but_presence(&mut alice).await {
        ServerFrame::MessageSent {
            message_id,
            request_id,
            ..
        } => {
            assert_eq!(request_id.as_deref(), Some(request.as_str()));
            assert_eq!(message_id, message.id);
        }
        other => panic!("expected the ack first, got {other:?}"),
    }
    match next_but_presence(&mut alice).await {
        ServerFrame::MessageDelivered {
            message_id,
            user_id,
            ..
        } => assert_eq!((message_id, user_id), (message.id, "dave".to_string())),
        other => panic!("expected the receipt, got {other:?}"),
    }
}

/// alice writes to dave while he is away; dave comes back without
/// syncing. The next message reaches him past a gap, so its receipt waits
/// for the gap to fill, and no frame comes to alice that could carry her
/// ack.
async fn dave_back_with_a_gap(server: &TestServer) -> (Client, Client) {
    let mut alice = server.connect("alice").await;
    // First her contacts' presence (bob, carol, dave): no frame may come
    // late and carry a waiting ack out with it.
    for _ in 0..3 {
        presence(&mut alice).await;
    }
    send(&mut alice, "pair", "while dave is away").await;
    let dave = server.connect("dave").await;
    assert_eq!(presence(&mut alice).await, ("dave".into(), "online".into()));
    (alice, dave)
}

/// The next frame, which must be a presence update: (user, status).
async fn presence(client: &mut Client) -> (String, String) {
    match next(client).await {
        ServerFrame::PresenceUpdate {
            user_id, status, ..
        } => (user_id, status),
        other => panic!("expected a presence update, got {other:?}"),
    }
}

#[tokio::test]
async fn the_ack_is_held_until_its_message_is_settled() {
    let server = server(NEVER).await;
    let (mut alice, mut dave) = dave_back_with_a_gap(&server).await;
    let request = alice
        .send_message("pair", "welcome back", None)
        .await
        .expect("send");
    let message = next_new_message(&mut dave).await;
    assert_silent(&mut alice, Duration::from_millis(300)).await;
    // dave syncs: the gap fills, the message is settled, and the ack goes.
    dave.send_json(&json!({"type": "sync", "cursors": {"pair": 0}}))
        .await
        .expect("sync");
    match next_message_frame(&mut alice).await {
        ServerFrame::MessageSent {
            message_id,
            request_id,
            ..
        } => {
            assert_eq!(request_id.as_deref(), Some(request.as_str()));
            assert_eq!(message_id, message.id);
        }
        other => panic!("expected the ack, got {other:?}"),
    }
}

#[tokio::test]
async fn an_ack_whose_receipt_is_held_back_leaves_after_the_wait() {
    let server = server(Duration::from_millis(300)).await;
    let (mut alice, mut dave) = dave_back_with_a_gap(&server).await;
    let (id, seq) = send(&mut alice, "pair", "welcome back").await;
    assert_eq!(seq, 2);
    assert_eq!(next_new_message(&mut dave).await.id, id);
}
