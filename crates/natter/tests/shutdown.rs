//! Graceful shutdown of the real binary on SIGTERM: in-flight sends are
//! committed and acked, every client is told to reconnect and closed with
//! 1001, and the process exits 0.

mod common;

use std::collections::HashSet;

use common::*;
use futures_util::StreamExt;
use natter_client::ServerFrame;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The status of `GET /ready`, or None if the server no longer answers.
async fn ready_status(addr: std::net::SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn sigterm_drains_acks_everything_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("natter.db");
    seed_database(&database).await;
    let mut server = NatterProcess::start(
        &database,
        &[
            "--rate-limit-per-minute",
            "0",
            "--shutdown-deadline-secs",
            "2",
        ],
    )
    .await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    // Messages in flight when the signal lands.
    for i in 0..200 {
        alice
            .send_message("team", &format!("in flight {i}"), Some(&format!("f{i}")))
            .await
            .expect("send");
    }
    // The server is working through them: the first ack is in.
    let mut acked = HashSet::new();
    loop {
        if let ServerFrame::MessageSent { message_id, .. } = next_message_frame(&mut alice).await {
            acked.insert(message_id);
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());

    // Draining: load balancers are told to stop sending clients here.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let mut ready = 200;
    while ready == 200 {
        ready = ready_status(addr)
            .await
            .expect("HTTP still served while draining");
    }
    assert_eq!(ready, 503);

    // Alice: every ack that arrives is for a stored message; then reconnect
    // advice and 1001.
    let mut told_to_reconnect = false;
    let close = loop {
        let frame = tokio::time::timeout(PATIENCE, alice.socket().next())
            .await
            .expect("in time");
        match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text).expect("json") {
                ServerFrame::MessageSent { message_id, .. } => {
                    acked.insert(message_id);
                }
                ServerFrame::Reconnect { after_ms } => {
                    assert!(after_ms <= 2_000);
                    told_to_reconnect = true;
                }
                _ => {}
            },
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, (1001, "server shutting down".to_string()));
    assert!(told_to_reconnect);
    let bob_close = loop {
        match tokio::time::timeout(PATIENCE, bob.socket().next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(bob_close, 1001);

    let exit = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(exit.code(), Some(0), "clean exit");

    // Every acked message is in the database.
    let server = NatterProcess::start(&database, &[]).await;
    let mut carol = server.connect("carol").await;
    carol
        .send_json(&json!({"type": "sync", "cursors": {"team": 0}}))
        .await
        .expect("sync");
    let mut stored = HashSet::new();
    loop {
        match next_message_frame(&mut carol).await {
            ServerFrame::NewMessage { message, .. } => {
                stored.insert(message.id);
            }
            ServerFrame::SyncComplete { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        acked.is_subset(&stored),
        "every acked message survived the shutdown"
    );
}
