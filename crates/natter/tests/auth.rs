//! Authentication per the contract: three token carriers, HS256 pinned,
//! `exp` enforced, `sub` must exist; failures close with 1008.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use natter_client::{Client, ServerFrame, TokenVia};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Opens a socket with `token` and returns the close code and reason it gets.
async fn rejected(server: &TestServer, token: Option<&str>, via: TokenVia) -> (u16, String) {
    let mut socket = natter_client::open(&server.url(), token, via)
        .await
        .expect("upgrade accepted");
    let frame = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("the server answers")
        .expect("a frame")
        .expect("a valid frame");
    match frame {
        Message::Close(Some(close)) => (close.code.into(), close.reason.to_string()),
        other => panic!("expected a close, got {other:?}"),
    }
}

fn sign(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
    let key = EncodingKey::from_secret(secret).expect("key");
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign")
}

fn far_future() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

#[tokio::test]
async fn every_token_carrier_is_accepted() {
    let server = TestServer::start().await;
    for via in [TokenVia::Query, TokenVia::Header, TokenVia::Subprotocol] {
        let client = Client::connect(&server.url(), &token("alice"), via)
            .await
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
        assert_eq!(client.user_id, "alice", "{via:?}");
    }
    // The original design's URL, `/` with a query token, works too.
    let root = format!("ws://{}/", server.addr);
    let client = Client::connect(&root, &token("bob"), TokenVia::Query)
        .await
        .expect("root url");
    assert_eq!(client.user_id, "bob");
}

#[tokio::test]
async fn subprotocol_is_answered_with_natter_v1() {
    let server = TestServer::start().await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.url().into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("natter.v1, bearer.{}", token("alice"))
            .parse()
            .expect("header"),
    );
    let (_socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"natter.v1"[..])
    );
}

#[tokio::test]
async fn connection_established_has_the_contract_shape() {
    let server = TestServer::start().await;
    let mut socket = natter_client::open(&server.url(), Some(&token("alice")), TokenVia::Query)
        .await
        .expect("open");
    let Some(Ok(Message::Text(text))) = socket.next().await else {
        panic!("expected a text frame");
    };
    let value: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(value["type"], "connection_established");
    assert_eq!(value["userId"], "alice");
    assert!(value["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    let server_time = value["serverTime"].as_i64().expect("serverTime in ms");
    assert!((server_time - natter_core::time::now_ms()).abs() < 60_000);
    assert!(value["heartbeatMs"].as_u64().is_some_and(|ms| ms > 0));
}

#[tokio::test]
async fn missing_token_is_refused_with_authentication_required() {
    let server = TestServer::start().await;
    assert_eq!(
        rejected(&server, None, TokenVia::Query).await,
        (1008, "Authentication required".to_string())
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_authentication_failed() {
    let server = TestServer::start().await;
    let failed = (1008, "Authentication failed".to_string());
    let claims = |sub: &str, exp: u64| json!({"sub": sub, "exp": exp});
    let cases = [
        (
            "wrong secret",
            sign(
                Algorithm::HS256,
                b"another-secret",
                claims("alice", far_future()),
            ),
        ),
        (
            "HS384 while HS256 is pinned",
            sign(Algorithm::HS384, SECRET, claims("alice", far_future())),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                SECRET,
                claims("alice", jsonwebtoken::get_current_timestamp() - 600),
            ),
        ),
        (
            "unknown user",
            sign(Algorithm::HS256, SECRET, claims("mallory", far_future())),
        ),
        (
            "no exp",
            sign(Algorithm::HS256, SECRET, json!({"sub": "alice"})),
        ),
        ("garbage", "not.a.jwt".to_string()),
        ("alg none", unsigned_token(claims("alice", far_future()))),
    ];
    for (name, token) in cases {
        for via in [TokenVia::Query, TokenVia::Header, TokenVia::Subprotocol] {
            assert_eq!(
                rejected(&server, Some(&token), via).await,
                failed,
                "{name} via {via:?}"
            );
        }
    }
}

/// `{"alg":"none"}` with an empty signature: the classic downgrade.
fn unsigned_token(claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn a_refused_client_does_not_disturb_others() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    rejected(&server, Some("bad"), TokenVia::Query).await;
    send(&mut alice, "team", "still here").await;
    assert_eq!(next_new_message(&mut bob).await.content, "still here");
    let _ = tokio::time::timeout(Duration::from_secs(1), server.stop()).await;
}

#[tokio::test]
async fn server_time_pong_answers_a_json_ping() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    alice
        .send_json(&json!({"type": "ping", "requestId": "p1"}))
        .await
        .expect("send");
    match next_message_frame(&mut alice).await {
        ServerFrame::Pong {
            request_id,
            server_time,
        } => {
            assert_eq!(request_id.as_deref(), Some("p1"));
            assert!(server_time > 0);
        }
        other => panic!("expected pong, got {other:?}"),
    }
}
