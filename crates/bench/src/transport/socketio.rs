//! Socket.IO 4 (engine.io v4, socket.io protocol v5) over its WebSocket
//! transport, spoken by hand: the generator holds thousands of these, so a
//! connection is one WebSocket and a small map, like natter's.
//!
//! The frames used: engine.io `0{...}` (open), `2`/`3` (ping/pong);
//! socket.io on the main namespace `40{...}` (connect, with the token as
//! auth), `44{...}` (connect error), `42<id>[event, data]` (event with an
//! ack id), `43<id>[data]` (ack), `42[event, data]` (event).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{Command, Connection, Identity, websocket};
use crate::recorder::{Recorder, Sample, intended_in};

/// Makes every `clientMessageId` unique across connections.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub async fn connect(
    server: SocketAddr,
    identity: &Identity,
    source: IpAddr,
    recorder: Recorder,
) -> anyhow::Result<Connection> {
    let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
    let mut socket = websocket(server, source, url).await?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.starts_with('0') => {}
        other => bail!("no engine.io open packet: {other:?}"),
    }
    let auth = serde_json::json!({ "token": identity.token });
    socket
        .send(Message::text(format!("40{auth}")))
        .await
        .context("send the namespace connect")?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                if text.starts_with("40") {
                    break;
                } else if let Some(error) = text.strip_prefix("44") {
                    bail!("not accepted: {error}");
                } else if text.as_str() == "2" {
                    socket
                        .send(Message::text("3"))
                        .await
                        .context("answer a ping")?;
                }
            }
            Some(Ok(_)) => {}
            other => bail!("not accepted: {other:?}"),
        }
    }
    let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
    tokio::spawn(async move {
        let (mut sink, mut stream) = socket.split();
        // Ack id -> intended send time of the emit awaiting that ack.
        let mut pending: HashMap<u64, u64> = HashMap::new();
        let mut next_ack = 0u64;
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Send { conversation, intended_us, content }) => {
                        let ack = next_ack;
                        next_ack += 1;
                        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                        let Some(frame) = emit(ack, &conversation, &content, intended_us, id)
                        else {
                            recorder.record(Sample::Error);
                            continue;
                        };
                        recorder.record(Sample::Sent { at_us: recorder.now_us(), intended_us });
                        pending.insert(ack, intended_us);
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
                    Some(Ok(Message::Text(text))) => match observe(&recorder, &mut pending, &text) {
                        Seen::Ping => {
                            if sink.send(Message::text("3")).await.is_err() {
                                return;
                            }
                        }
                        Seen::Closed => return,
                        Seen::Other => {}
                    },
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    });
    Ok(Connection { commands })
}

/// `42<ack>["send_message",{...}]`, strings escaped as JSON.
fn emit(ack: u64, conversation: &str, content: &str, intended_us: u64, id: u64) -> Option<String> {
    let conversation = serde_json::to_string(conversation).ok()?;
    let content = serde_json::to_string(content).ok()?;
    Some(format!(
        r#"42{ack}["send_message",{{"conversationId":{conversation},"content":{content},"clientMessageId":"{intended_us}-{id}"}}]"#
    ))
}

/// What a frame asks of the connection task.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// An engine.io ping: answer `3`.
    Ping,
    /// The server closed the session (engine.io close or namespace
    /// disconnect).
    Closed,
    Other,
}

/// Classifies a frame by its prefix; only benchmark messages are parsed.
fn observe(recorder: &Recorder, pending: &mut HashMap<u64, u64>, text: &str) -> Seen {
    if text.starts_with(r#"42["new_message","#) {
        if let Some(intended) = intended_in(text) {
            recorder.delivered(intended);
        }
    } else if let Some(rest) = text.strip_prefix("43") {
        let digits = rest.find('[').unwrap_or(rest.len());
        let Ok(ack) = rest[..digits].parse::<u64>() else {
            return Seen::Other;
        };
        let Some(intended) = pending.remove(&ack) else {
            return Seen::Other;
        };
        if rest[digits..].starts_with(r#"[{"error""#) {
            recorder.record(Sample::Error);
        } else {
            recorder.acked(intended);
        }
    } else if text == "2" {
        return Seen::Ping;
    } else if text == "1" || text.starts_with("41") {
        return Seen::Closed;
    }
    Seen::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::content;

    #[test]
    fn emits_an_event_with_an_ack_id() {
        let frame = emit(7, "g\"1", &content(42, 12), 42, 3).expect("strings serialize");
        assert_eq!(
            frame,
            r#"427["send_message",{"conversationId":"g\"1","content":"b|42|xxxxxxx","clientMessageId":"42-3"}]"#
        );
        let value: serde_json::Value =
            serde_json::from_str(&frame[3..]).expect("the payload is JSON");
        assert_eq!(value[1]["conversationId"], "g\"1");
        assert_eq!(intended_in(&frame), Some(42));
    }

    #[tokio::test]
    async fn observes_deliveries_acks_errors_and_pings() {
        let (recorder, mut collector) = Recorder::new();
        let mut pending = HashMap::from([(5, 100), (6, 200)]);
        let delivery = format!(
            r#"42["new_message",{{"_id":"m","conversationId":"c","sender":"u","content":"{}","clientMessageId":"9-1","sentAt":"t"}}]"#,
            content(9, 20)
        );
        assert_eq!(observe(&recorder, &mut pending, &delivery), Seen::Other);
        let ack = r#"435[{"messageId":"m","conversationId":"c","clientMessageId":"100-1"}]"#;
        assert_eq!(observe(&recorder, &mut pending, ack), Seen::Other);
        let error = r#"436[{"error":"UNAUTHORIZED"}]"#;
        assert_eq!(observe(&recorder, &mut pending, error), Seen::Other);
        // An ack nobody waits for is ignored.
        assert_eq!(observe(&recorder, &mut pending, ack), Seen::Other);
        assert_eq!(observe(&recorder, &mut pending, "2"), Seen::Ping);
        assert_eq!(observe(&recorder, &mut pending, "41"), Seen::Closed);
        assert!(pending.is_empty());
        collector.drain();
        assert_eq!(
            (collector.deliveries, collector.acks, collector.errors),
            (1, 1, 1)
        );
    }
}
