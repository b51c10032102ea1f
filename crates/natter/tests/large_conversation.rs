//! Large conversations skip what costs members² events: no delivery
//! receipts, read receipts only to the reader's own devices, no presence
//! between their members. (Here "large" is set to more than 2 members, so
//! the 3-member `team` is large and the 2-member `pair` is not.)

mod common;

use common::*;
use natter_client::{Client, ServerFrame};
use serde_json::json;

async fn start() -> TestServer {
    TestServer::start_with(|c| c.large_conversation = 2).await
}

/// The next receipt of either kind: (kind, messageId, reader or recipient).
async fn next_receipt(client: &mut Client) -> (&'static str, String, String) {
    loop {
        match next_but_presence(client).await {
            ServerFrame::MessageDelivered {
                message_id,
                user_id,
                ..
            } => return ("delivered", message_id, user_id),
            ServerFrame::ReadReceipt {
                message_id,
                user_id,
                ..
            } => return ("read", message_id, user_id),
            ServerFrame::NewMessage { .. } | ServerFrame::MessageSent { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_delivery_receipts_in_a_large_conversation() {
    let server = start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut dave = server.connect("dave").await;
    send(&mut alice, "team", "to the many").await;
    next_new_message(&mut bob).await;
    let (small, _) = send(&mut alice, "pair", "to dave").await;
    next_new_message(&mut dave).await;
    // The first receipt alice hears of is the pair's.
    assert_eq!(
        next_receipt(&mut alice).await,
        ("delivered", small, "dave".to_string())
    );
}

#[tokio::test]
async fn read_receipts_of_a_large_conversation_stay_with_the_reader() {
    let server = start().await;
    let mut alice = server.connect("alice").await;
    let mut dave = server.connect("dave").await;
    let mut bob = server.connect("bob").await;
    let mut bob_laptop = server.connect("bob").await;
    let (in_team, _) = send(&mut alice, "team", "read me").await;
    bob.send_json(&json!({"type": "read_receipt", "messageId": in_team}))
        .await
        .expect("read");
    for device in [&mut bob, &mut bob_laptop] {
        assert_eq!(
            next_receipt(device).await,
            ("read", in_team.clone(), "bob".to_string())
        );
    }
    let (in_pair, _) = send(&mut alice, "pair", "and me").await;
    next_new_message(&mut dave).await;
    dave.send_json(&json!({"type": "read_receipt", "messageId": in_pair}))
        .await
        .expect("read");
    // Alice never heard of bob's read; the first read she hears of is dave's.
    loop {
        match next_receipt(&mut alice).await {
            ("read", id, reader) => {
                assert_eq!((id, reader), (in_pair, "dave".to_string()));
                break;
            }
            ("delivered", ..) => {}
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn presence_travels_only_through_small_conversations() {
    let server = start().await;
    let mut bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;
    // Alice's snapshot: dave (pair) only; bob and carol share only the team.
    match next(&mut alice).await {
        ServerFrame::PresenceUpdate { user_id, .. } => assert_eq!(user_id, "dave"),
        other => panic!("expected dave's presence, got {other:?}"),
    }
    // Bob hears nothing of alice coming online: his first frame is her message.
    send(&mut alice, "team", "hello").await;
    match next(&mut bob).await {
        ServerFrame::NewMessage { message, .. } => assert_eq!(message.content, "hello"),
        other => panic!("expected the message, got {other:?}"),
    }
}
