//! Typing indicators: to the other members only, throttled, and ended by
//! the server when they expire or the typist leaves.

mod common;

use std::time::Duration;

use common::*;
use natter_client::{Client, ServerFrame};
use serde_json::json;

async fn typing(client: &mut Client, conversation: &str, is_typing: bool) {
    client
        .send_json(&json!({"type": "typing_indicator", "conversationId": conversation, "isTyping": is_typing}))
        .await
        .expect("send");
}

/// The next typing indicator: (conversation, typist, isTyping).
async fn next_typing(client: &mut Client) -> (String, String, bool) {
    loop {
        match next(client).await {
            ServerFrame::TypingIndicator {
                conversation_id,
                user_id,
                is_typing,
                timestamp,
            } => {
                assert!(timestamp > 0);
                return (conversation_id, user_id, is_typing);
            }
            ServerFrame::PresenceUpdate { .. } => {}
            other => panic!("expected typing_indicator, got {other:?}"),
        }
    }
}

fn is(typist: &str, typing: bool) -> (String, String, bool) {
    ("team".to_string(), typist.to_string(), typing)
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let server = TestServer::start_with(|c| c.typing_throttle = Duration::from_secs(60)).await;
    let mut alice = server.connect("alice").await;
    let mut alice_phone = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    typing(&mut alice, "team", true).await;
    assert_eq!(next_typing(&mut bob).await, is("alice", true));
    assert_eq!(next_typing(&mut carol).await, is("alice", true));
    // Not to the typist's other device, not to a non-member.
    send(&mut alice, "pair", "marker").await;
    assert_eq!(next_new_message(&mut alice_phone).await.content, "marker");
    assert_eq!(next_new_message(&mut dave).await.content, "marker");
}

#[tokio::test]
async fn typing_is_throttled_but_stopping_always_goes_through() {
    let server = TestServer::start_with(|c| c.typing_throttle = Duration::from_secs(60)).await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    for _ in 0..5 {
        typing(&mut alice, "team", true).await;
    }
    typing(&mut alice, "team", false).await;
    assert_eq!(next_typing(&mut bob).await, is("alice", true));
    assert_eq!(
        next_typing(&mut bob).await,
        is("alice", false),
        "the four repeats were dropped"
    );
}

#[tokio::test]
async fn typing_expires_when_not_renewed() {
    let server = TestServer::start_with(|c| {
        c.typing_throttle = Duration::from_millis(100);
        c.typing_expiry = Duration::from_millis(300);
    })
    .await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    typing(&mut alice, "team", true).await;
    assert_eq!(next_typing(&mut bob).await, is("alice", true));
    assert_eq!(
        next_typing(&mut bob).await,
        is("alice", false),
        "ended by the server"
    );
}

#[tokio::test]
async fn typing_ends_when_the_typists_last_connection_closes() {
    let server = TestServer::start_with(|c| c.typing_expiry = Duration::from_secs(60)).await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    typing(&mut alice, "team", true).await;
    assert_eq!(next_typing(&mut bob).await, is("alice", true));
    alice.close().await.expect("close");
    assert_eq!(next_typing(&mut bob).await, is("alice", false));
}

#[tokio::test]
async fn typing_where_one_is_not_a_member_is_refused() {
    let server = TestServer::start().await;
    let mut dave = server.connect("dave").await;
    typing(&mut dave, "team", true).await;
    assert_eq!(
        next_error(&mut dave).await.0,
        natter_client::ErrorCode::Unauthorized
    );
    typing(&mut dave, "nope", true).await;
    assert_eq!(
        next_error(&mut dave).await.0,
        natter_client::ErrorCode::NotFound
    );
}
