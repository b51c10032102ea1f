//! natter over its own WebSocket protocol.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{Command, Connection, Identity, websocket};
use crate::recorder::{Recorder, Sample, intended_in};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub async fn connect(
    server: SocketAddr,
    identity: &Identity,
    source: IpAddr,
    recorder: Recorder,
) -> anyhow::Result<Connection> {
    let url = format!("ws://{server}/ws?token={}", identity.token);
    let mut socket = websocket(server, source, url).await?;
    match socket.next().await {
        Some(Ok(Message::Text(text)))
            if text.starts_with("{\"type\":\"connection_established\"") => {}
        other => bail!("not accepted: {other:?}"),
    }
    let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
    tokio::spawn(async move {
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Send { conversation, intended_us, content }) => {
                        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                        let frame = format!(
                            r#"{{"type":"send_message","conversationId":"{conversation}","content":"{content}","clientMessageId":"{intended_us}-{id}"}}"#
                        );
                        recorder.record(Sample::Sent { at_us: recorder.now_us(), intended_us });
                        if sink.send(Message::text(frame)).await.is_err() {
                            recorder.record(Sample::Error);
                            return;
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = sink.close().await;
                        return;
                    }
                },
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => observe(&recorder, &text),
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    });
    Ok(Connection { commands })
}

/// Classifies a frame by its prefix; only benchmark messages are parsed.
fn observe(recorder: &Recorder, text: &str) {
    if text.starts_with(r#"{"type":"new_message""#) {
        if let Some(intended) = intended_in(text) {
            recorder.delivered(intended);
        }
    } else if text.starts_with(r#"{"type":"message_sent""#) {
        let intended = text
            .find(r#""clientMessageId":""#)
            .map(|i| &text[i + r#""clientMessageId":""#.len()..])
            .and_then(|rest| rest.split('-').next())
            .and_then(|digits| digits.parse().ok());
        if let Some(intended) = intended {
            recorder.acked(intended);
        }
    } else if text.starts_with(r#"{"type":"message_delivered""#) {
        recorder.record(Sample::Receipt);
    } else if text.starts_with(r#"{"type":"error""#) {
        recorder.record(Sample::Error);
    }
}
