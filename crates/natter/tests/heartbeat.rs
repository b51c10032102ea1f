//! Liveness: the server pings every `heartbeatMs`; a client that answers
//! stays, a connection that stays silent for two intervals is dropped.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use natter_client::TokenVia;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const HEARTBEAT: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = TestServer::start_with(|c| c.heartbeat = HEARTBEAT).await;
    let mut socket = natter_client::open(&server.url(), Some(&token("bob")), TokenVia::Query)
        .await
        .expect("open");
    let mut pings = 0;
    while pings < 5 {
        // Reading lets tungstenite answer each ping with a pong.
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("frames keep coming")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(_))) => {}
            other => panic!("connection lost after {pings} pings: {other:?}"),
        }
    }
    // Five intervals later it still carries messages.
    let mut alice = server.connect("alice").await;
    send(&mut alice, "team", "still there?").await;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("still there?") => break,
            Some(Ok(_)) => {}
            other => panic!("expected the message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_dropped() {
    let server = TestServer::start_with(|c| c.heartbeat = HEARTBEAT).await;
    // A raw client: completes the handshake, then never reads a frame or
    // answers a ping.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("bob")
    );
    tcp.write_all(request.as_bytes()).await.expect("handshake");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the server drops the connection")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("connection_established"));
    // Pings were sent (opcode 0x89) before it gave up.
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "the server pinged"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_dropped() {
    let server =
        TestServer::start_with(|c| c.header_read_timeout = Duration::from_millis(200)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: slow")
        .await
        .expect("partial request");
    let mut buf = [0u8; 1024];
    let mut answered = Vec::new();
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the server gives up on the request")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        answered.extend_from_slice(&buf[..n]);
    }
    // Dropped (an error status at most), never upgraded.
    assert!(!String::from_utf8_lossy(&answered).contains("101"));
}
