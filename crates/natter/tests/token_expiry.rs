//! A connection lives no longer than its token: 4001 at expiry, unless the
//! client refreshed it in place with a newer token of the same user.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use natter_client::{Client, ServerFrame, TokenVia};
use serde_json::json;

fn token_for(user: &str, lifetime: Duration) -> String {
    let claims =
        json!({"sub": user, "exp": jsonwebtoken::get_current_timestamp() + lifetime.as_secs()});
    let key = EncodingKey::from_secret(SECRET).expect("key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
}

/// A connection whose token expires in a second.
async fn connect_expiring(server: &TestServer, user: &str) -> Client {
    Client::connect(
        &server.url(),
        &token_for(user, Duration::from_secs(1)),
        TokenVia::Query,
    )
    .await
    .expect("connect")
}

async fn start() -> TestServer {
    TestServer::start_with(|c| c.jwt_leeway = Duration::ZERO).await
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_with_4001() {
    let server = start().await;
    let mut alice = connect_expiring(&server, "alice").await;
    assert_eq!(close_code(&mut alice).await, 4001);
}

#[tokio::test]
async fn refreshing_keeps_the_connection() {
    let server = start().await;
    let mut alice = connect_expiring(&server, "alice").await;
    alice
        .send_json(&json!({"type": "refresh_token", "token": token_for("alice", Duration::from_secs(3600)), "requestId": "t"}))
        .await
        .expect("refresh");
    match next_message_frame(&mut alice).await {
        ServerFrame::TokenRefreshed {
            expires_at,
            request_id,
        } => {
            assert_eq!(request_id.as_deref(), Some("t"));
            assert!(expires_at > natter_core::time::now_ms() + 3_000_000);
        }
        other => panic!("expected token_refreshed, got {other:?}"),
    }
    // Past the first token's expiry (and the checker's period), still served.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&mut alice, "team", "still here").await;
}

#[tokio::test]
async fn a_refresh_with_someone_elses_or_a_bad_token_closes_with_4001() {
    let server = start().await;
    for bad in [
        token_for("bob", Duration::from_secs(3600)),
        "garbage".to_string(),
    ] {
        let mut alice = server.connect("alice").await;
        alice
            .send_json(&json!({"type": "refresh_token", "token": bad}))
            .await
            .expect("refresh");
        assert_eq!(close_code(&mut alice).await, 4001);
    }
}
