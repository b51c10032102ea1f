//! Bad input: each gets the contract's error and the connection stays
//! usable; WebSocket-level violations get the contract's close code; other
//! users keep chatting through all of it.

mod common;

use common::*;
use futures_util::SinkExt;
use natter_client::{Client, ErrorCode, ServerFrame, TokenVia};
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

/// The connection still works: a JSON ping is answered.
async fn assert_usable(client: &mut Client) {
    client
        .send_json(&json!({"type": "ping", "requestId": "alive"}))
        .await
        .expect("ping");
    match next_message_frame(client).await {
        ServerFrame::Pong { request_id, .. } => assert_eq!(request_id.as_deref(), Some("alive")),
        other => panic!("expected pong, got {other:?}"),
    }
}

async fn expect_error(client: &mut Client, text: &str, code: ErrorCode) {
    client.send_text(text).await.expect("send");
    let (got, _) = next_error(client).await;
    assert_eq!(got, code, "for {text}");
    assert_usable(client).await;
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let cases = [
        ("not json at all", ErrorCode::InvalidFormat),
        ("{\"type\": \"send_message\",", ErrorCode::InvalidFormat),
        ("[1, 2, 3]", ErrorCode::InvalidFormat),
        ("\"a string\"", ErrorCode::InvalidFormat),
        ("null", ErrorCode::InvalidFormat),
        ("{}", ErrorCode::InvalidFormat),
        (r#"{"type": 42}"#, ErrorCode::InvalidFormat),
        (
            r#"{"type": "launch_missiles"}"#,
            ErrorCode::UnknownMessageType,
        ),
        (r#"{"type": "send_message"}"#, ErrorCode::InvalidMessage),
        (
            r#"{"type": "send_message", "conversationId": "team", "content": 5}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": ["team"], "content": "x"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": {"$ne": null}, "content": "x"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": "team", "content": "x", "clientMessageId": {"$gt": ""}}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": "team", "content": ""}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": "team", "content": "x", "contentType": "no spaces"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "send_message", "conversationId": "nope", "content": "x"}"#,
            ErrorCode::NotFound,
        ),
        (
            r#"{"type": "send_message", "conversationId": "team' OR '1'='1", "content": "x"}"#,
            ErrorCode::NotFound,
        ),
        (
            r#"{"type": "sync", "cursors": {"team": "zero"}}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type": "sync", "lastMessageId": {"$ne": null}}"#,
            ErrorCode::InvalidMessage,
        ),
    ];
    for (text, code) in cases {
        expect_error(&mut alice, text, code).await;
    }
    let oversize = json!({"type": "send_message", "conversationId": "team", "content": "x".repeat(16 * 1024 + 1)});
    expect_error(
        &mut alice,
        &oversize.to_string(),
        ErrorCode::MessageTooLarge,
    )
    .await;
}

#[tokio::test]
async fn errors_echo_the_request_id() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    alice
        .send_text(r#"{"type": "send_message", "conversationId": "nope", "content": "x", "requestId": "q7"}"#)
        .await
        .expect("send");
    assert_eq!(
        next_error(&mut alice).await,
        (ErrorCode::NotFound, Some("q7".into()))
    );
    alice
        .send_text(r#"{"type": "whatever", "requestId": "q8"}"#)
        .await
        .expect("send");
    assert_eq!(
        next_error(&mut alice).await,
        (ErrorCode::UnknownMessageType, Some("q8".into()))
    );
}

#[tokio::test]
async fn sending_where_one_is_not_a_member_is_unauthorized_and_stores_nothing() {
    let server = TestServer::start().await;
    let mut dave = server.connect("dave").await;
    let mut bob = server.connect("bob").await;
    expect_error(
        &mut dave,
        r#"{"type": "send_message", "conversationId": "team", "content": "let me in"}"#,
        ErrorCode::Unauthorized,
    )
    .await;
    // Nothing was stored: the team's first message gets seq 1.
    let (_, seq) = send(&mut bob, "team", "first").await;
    assert_eq!(seq, 1);
}

#[tokio::test]
async fn a_binary_frame_is_an_error_not_a_disconnect() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    alice
        .socket()
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    assert_eq!(next_error(&mut alice).await.0, ErrorCode::InvalidFormat);
    assert_usable(&mut alice).await;
}

/// Reads until the close frame; returns its code.

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let huge =
        json!({"type": "send_message", "conversationId": "team", "content": "x".repeat(70_000)});
    alice
        .socket()
        .send(Message::text(huge.to_string()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut alice).await, 1009);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let frame = Frame::message(vec![b'{', 0xC3, 0x28, b'}'], OpCode::Data(Data::Text), true);
    alice
        .socket()
        .send(Message::Frame(frame))
        .await
        .expect("send");
    assert_eq!(close_code(&mut alice).await, 1007);
}

#[tokio::test]
async fn after_all_of_it_other_users_still_chat() {
    let server = TestServer::start().await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut vandal = server.connect("alice").await;
    for text in [
        "garbage",
        "{}",
        r#"{"type":"send_message","conversationId":{"$ne":null}}"#,
    ] {
        vandal.send_text(text).await.expect("send");
        next_error(&mut vandal).await;
    }
    vandal
        .socket()
        .send(Message::binary(vec![0u8; 10]))
        .await
        .expect("send");
    next_error(&mut vandal).await;
    let mut breaker = Client::connect(&server.url(), &token("alice"), TokenVia::Query)
        .await
        .expect("connect");
    let frame = Frame::message(vec![0xFF, 0xFE], OpCode::Data(Data::Text), true);
    breaker
        .socket()
        .send(Message::Frame(frame))
        .await
        .expect("send");
    assert_eq!(close_code(&mut breaker).await, 1007);

    send(&mut bob, "team", "we are fine").await;
    assert_eq!(next_new_message(&mut carol).await.content, "we are fine");
    assert_eq!(next_new_message(&mut vandal).await.content, "we are fine");
}
