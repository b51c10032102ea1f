//! Operations endpoints: `/health` with real checks, `/ready`, and
//! `/metrics` in the Prometheus text format, moving with the traffic.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;

async fn get(server: &TestServer, path: &str) -> HttpResponse {
    http_raw(server.addr, "GET", path, &[], None).await
}

#[tokio::test]
async fn health_reports_the_original_shape_with_real_checks() {
    let server = TestServer::start().await;
    let _alice = server.connect("alice").await;
    let response = get(&server, "/health").await;
    assert_eq!(response.status, 200);
    let body: Value = response.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["websocket"], "running");
    assert_eq!(body["database"], "connected");
    assert_eq!(body["redis"], "not configured", "one instance, no Redis");
    assert_eq!(body["activeConnections"], 1);
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(get(&server, "/ready").await.status, 200);
}

#[tokio::test]
async fn health_is_503_when_the_database_file_is_gone() {
    let server = TestServer::start().await;
    std::fs::rename(
        server.dir.path().join("natter.db"),
        server.dir.path().join("moved.db"),
    )
    .expect("move the database away");
    let response = get(&server, "/health").await;
    assert_eq!(response.status, 503);
    let body: Value = response.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"], "disconnected");
}

/// Parses the Prometheus text format strictly enough to reject anything
/// else: `# HELP`/`# TYPE` comments and `name{labels} value` samples.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn metrics(server: &TestServer) -> HashMap<String, f64> {
    let response = get(server, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    parse_metrics(std::str::from_utf8(&response.body).expect("utf-8"))
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let server = TestServer::start().await;
    let before = metrics(&server).await;
    assert_eq!(before["natter_connections_open"], 0.0);
    assert_eq!(before["natter_messages_sent_total"], 0.0);

    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    send(&mut alice, "team", "counted").await;
    next_new_message(&mut bob).await;
    alice.send_text("not json").await.expect("send");
    next_error(&mut alice).await;
    drop(bob);

    let after = metrics(&server).await;
    assert_eq!(after["natter_messages_sent_total"], 1.0);
    assert!(after["natter_messages_delivered_total"] >= 1.0);
    assert_eq!(after["natter_connections_opened_total"], 2.0);
    assert_eq!(after[r#"natter_errors_total{code="INVALID_FORMAT"}"#], 1.0);
    assert_eq!(after["natter_send_ack_seconds_count"], 1.0);
    assert!(after["natter_fanout_seconds_count"] >= 1.0);
    assert!(after.contains_key("natter_outbox_queued_bytes"));
    assert!(after.contains_key("natter_broker_publish_failures_total"));
}
