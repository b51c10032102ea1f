//! Receipts: `message_delivered` reaches the sender once per (message,
//! recipient), live or after a `sync`; `read_receipt` reaches every member
//! and the reader's other devices, once.

mod common;

use common::*;
use natter_client::{Client, ErrorCode, ServerFrame};
use serde_json::json;

/// Collects frames until `n` delivery receipts arrived; returns them as
/// (messageId, recipient) pairs, failing on anything but acks and receipts.
async fn delivered(client: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut receipts = Vec::new();
    while receipts.len() < n {
        match next_but_presence(client).await {
            ServerFrame::MessageDelivered {
                message_id,
                user_id,
                conversation_id,
                delivered_at,
            } => {
                assert!(!conversation_id.is_empty() && delivered_at.ends_with('Z'));
                receipts.push((message_id, user_id));
            }
            ServerFrame::MessageSent { .. } | ServerFrame::NewMessage { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    receipts.sort();
    receipts
}

#[tokio::test]
async fn each_recipient_confirms_delivery_once_whatever_its_devices() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob_phone = server.connect("bob").await;
    let mut bob_laptop = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    let (first, _) = send(&mut alice, "team", "one").await;
    for client in [&mut bob_phone, &mut bob_laptop, &mut carol] {
        next_new_message(client).await;
    }
    assert_eq!(
        delivered(&mut alice, 2).await,
        [
            (first.clone(), "bob".to_string()),
            (first.clone(), "carol".to_string())
        ]
    );
    // The next receipts are for the next message: nothing for `first` twice.
    let (second, _) = send(&mut alice, "team", "two").await;
    assert_eq!(
        delivered(&mut alice, 2).await,
        [
            (second.clone(), "bob".to_string()),
            (second, "carol".to_string())
        ]
    );
}

#[tokio::test]
async fn an_offline_recipient_confirms_when_it_syncs() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    let (message, _) = send(&mut alice, "team", "while bob is away").await;
    next_new_message(&mut carol).await;
    assert_eq!(
        delivered(&mut alice, 1).await,
        [(message.clone(), "carol".to_string())]
    );

    let mut bob = server.connect("bob").await;
    bob.send_json(&json!({"type": "sync", "cursors": {"team": 0}}))
        .await
        .expect("sync");
    assert_eq!(next_new_message(&mut bob).await.id, message);
    assert_eq!(
        delivered(&mut alice, 1).await,
        [(message, "bob".to_string())]
    );
}

#[tokio::test]
async fn a_sender_is_told_on_every_device() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut alice_tablet = server.connect("alice").await;
    let mut dave = server.connect("dave").await;
    let (message, _) = send(&mut alice, "pair", "hi dave").await;
    next_new_message(&mut dave).await;
    assert_eq!(next_new_message(&mut alice_tablet).await.id, message);
    for client in [&mut alice, &mut alice_tablet] {
        assert_eq!(
            delivered(client, 1).await,
            [(message.clone(), "dave".to_string())]
        );
    }
}

/// Reads until a `read_receipt` and returns (messageId, reader).
async fn next_read(client: &mut Client) -> (String, String) {
    loop {
        match next_but_presence(client).await {
            ServerFrame::ReadReceipt {
                message_id,
                user_id,
                read_at,
                conversation_id,
            } => {
                assert_eq!(conversation_id, "team");
                assert!(read_at.ends_with('Z'));
                return (message_id, user_id);
            }
            ServerFrame::NewMessage { .. }
            | ServerFrame::MessageDelivered { .. }
            | ServerFrame::MessageSent { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_read_receipt_reaches_every_member_and_the_readers_devices_once() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut bob_laptop = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    let mut ids = Vec::new();
    for text in ["one", "two"] {
        ids.push(send(&mut alice, "team", text).await.0);
    }

    bob.send_json(&json!({"type": "read_receipt", "messageId": ids[0]}))
        .await
        .expect("read");
    for client in [&mut alice, &mut bob, &mut bob_laptop, &mut carol] {
        assert_eq!(next_read(client).await, (ids[0].clone(), "bob".to_string()));
    }
    // Again: nothing. The next receipt anyone sees is for the second message.
    bob.send_json(&json!({"type": "read_receipt", "messageId": ids[0]}))
        .await
        .expect("read");
    bob.send_json(&json!({"type": "read_receipt", "messageId": ids[1], "conversationId": "team"}))
        .await
        .expect("read");
    for client in [&mut alice, &mut bob, &mut bob_laptop, &mut carol] {
        assert_eq!(next_read(client).await, (ids[1].clone(), "bob".to_string()));
    }
    // Dave is not in the team: his first frame is his own conversation's message.
    send(&mut alice, "pair", "marker").await;
    assert_eq!(next_new_message(&mut dave).await.content, "marker");
}

#[tokio::test]
async fn reading_outside_ones_conversations_is_refused() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let (message, _) = send(&mut alice, "team", "team secret").await;
    let mut dave = server.connect("dave").await;
    dave.send_json(&json!({"type": "read_receipt", "messageId": message, "requestId": "r"}))
        .await
        .expect("read");
    assert_eq!(
        next_error(&mut dave).await,
        (ErrorCode::Unauthorized, Some("r".into()))
    );
    for bad in [json!("no-such-message"), json!({"$ne": null})] {
        dave.send_json(&json!({"type": "read_receipt", "messageId": bad}))
            .await
            .expect("read");
        let (code, _) = next_error(&mut dave).await;
        assert!(
            matches!(code, ErrorCode::NotFound | ErrorCode::InvalidMessage),
            "{code:?}"
        );
    }
    // A conversationId that does not match the message's.
    let mut bob = server.connect("bob").await;
    bob.send_json(&json!({"type": "read_receipt", "messageId": message, "conversationId": "pair"}))
        .await
        .expect("read");
    assert_eq!(next_error(&mut bob).await.0, ErrorCode::NotFound);
}

/// Each member's delivery watermark in `team`, as stored.
async fn stored_watermarks(server: &TestServer) -> Vec<i64> {
    let team = natter_core::ConversationId::try_from("team").expect("valid id");
    let keys = ["alice", "bob", "carol"].map(|u| (team.clone(), uid(u)));
    server
        .store
        .delivered_watermarks(keys.to_vec())
        .await
        .expect("watermarks")
}

/// Waits (within PATIENCE) until the stored watermarks are `expected`.
async fn until_stored(server: &TestServer, expected: [i64; 3]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stored_watermarks(server).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored watermarks stayed {:?}, expected {expected:?}",
            stored_watermarks(server).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn delivery_watermarks_reach_the_store_and_keep_rising() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    send(&mut alice, "team", "one").await;
    send(&mut alice, "team", "two").await;
    for client in [&mut bob, &mut carol] {
        next_new_message(client).await;
        next_new_message(client).await;
    }
    // The sender has its own messages; both recipients had both.
    until_stored(&server, [2, 2, 2]).await;

    // Saved once, a watermark is saved again when it rises further
    // (written to a socket counts as delivered, read or not).
    send(&mut alice, "team", "three").await;
    until_stored(&server, [3, 3, 3]).await;
}
