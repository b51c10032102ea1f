//! Logs: JSON lines when asked for, and never a token or a message's
//! content at info level or above.

mod common;

use common::*;

#[tokio::test]
async fn info_logs_carry_no_tokens_or_contents_and_json_is_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("natter.db");
    seed_database(&database).await;
    let log_path = dir.path().join("natter.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let server = NatterProcess::start_logging(
        &database,
        &[],
        &[("RUST_LOG", "info"), ("LOG_FORMAT", "json")],
        log.into(),
    )
    .await;

    let secret_content = "the launch code is 0000";
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    send(&mut alice, "team", secret_content).await;
    next_new_message(&mut bob).await;
    // A refused token is logged as a failure, without the token.
    let refused = natter_client::open(
        &server.url(),
        Some("not.a.valid-token"),
        natter_client::TokenVia::Query,
    )
    .await;
    drop(refused);
    alice.close().await.expect("close");
    server.kill();

    let log = std::fs::read_to_string(&log_path).expect("read log");
    assert!(
        log.contains("authentication failed"),
        "the refusal is logged:\n{log}"
    );
    for line in log.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
    }
    for secret in [
        token("alice"),
        token("bob"),
        "not.a.valid-token".to_string(),
        secret_content.to_string(),
    ] {
        assert!(!log.contains(&secret), "{secret:?} leaked into the log");
    }
    assert!(
        !log.contains(std::str::from_utf8(SECRET).expect("ascii")),
        "the JWT secret leaked"
    );
}
