//! A Rust client for natter.
//!
//! Connects with a token (by query, header or subprotocol), sends with a
//! `clientMessageId` so retries are idempotent, and keeps a cursor per
//! conversation (the `seq` up to which it has every message), so that
//! [`Client::sync`] asks for exactly what was missed. Every server frame is
//! surfaced as a typed [`ServerFrame`]; a close as [`ClientError::Closed`].

use std::{collections::BTreeMap, time::Duration};

use futures_util::{SinkExt, StreamExt};
pub use natter_protocol::{ErrorCode, ServerFrame, WireMessage};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::{HeaderValue, header},
        protocol::{CloseFrame, WebSocketConfig},
    },
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("closed by the server: {code} {reason}")]
    Closed { code: u16, reason: String },
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error("timed out waiting for the server")]
    Timeout,
}

/// How the token is presented in the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVia {
    /// `?token=` (the original design; what browsers use).
    Query,
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: natter.v1, bearer.<JWT>`.
    Subprotocol,
}

pub struct Client {
    socket: Socket,
    /// From `connection_established`.
    pub user_id: String,
    pub session_id: String,
    pub heartbeat_ms: u64,
    /// The highest `seq` seen per conversation: what `sync` resumes from.
    pub cursors: BTreeMap<String, i64>,
    next_request: u64,
}

/// Opens a WebSocket and returns it before any natter frame is read: for
/// callers that want to see exactly what the server does (tests, tools).
pub async fn open(url: &str, token: Option<&str>, via: TokenVia) -> Result<Socket, ClientError> {
    let url = match (token, via) {
        (Some(token), TokenVia::Query) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}token={token}")
        }
        _ => url.to_string(),
    };
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        let headers = request.headers_mut();
        let value = match via {
            TokenVia::Query => None,
            TokenVia::Header => Some((header::AUTHORIZATION, format!("Bearer {token}"))),
            TokenVia::Subprotocol => Some((
                header::SEC_WEBSOCKET_PROTOCOL,
                format!("natter.v1, bearer.{token}"),
            )),
        };
        if let Some((name, value)) = value {
            let value = HeaderValue::from_str(&value)
                .map_err(|e| ClientError::Unexpected(format!("token header: {e}")))?;
            headers.insert(name, value);
        }
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

impl Client {
    /// Connects and waits for `connection_established`.
    pub async fn connect(url: &str, token: &str, via: TokenVia) -> Result<Self, ClientError> {
        let socket = open(url, Some(token), via).await?;
        let mut client = Client {
            socket,
            user_id: String::new(),
            session_id: String::new(),
            heartbeat_ms: 0,
            cursors: BTreeMap::new(),
            next_request: 0,
        };
        match client.recv().await? {
            ServerFrame::ConnectionEstablished {
                user_id,
                session_id,
                heartbeat_ms,
                ..
            } => {
                client.user_id = user_id;
                client.session_id = session_id;
                client.heartbeat_ms = heartbeat_ms;
                Ok(client)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The next frame from the server. Cursors advance with every message.
    pub async fn recv(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let message = match self.socket.next().await {
                Some(message) => message?,
                None => return Err(closed(None)),
            };
            match message {
                Message::Text(text) => {
                    let frame: ServerFrame = serde_json::from_str(&text)
                        .map_err(|e| ClientError::Unexpected(format!("{e}: {text}")))?;
                    self.track(&frame);
                    return Ok(frame);
                }
                Message::Close(frame) => return Err(closed(frame)),
                _ => {}
            }
        }
    }

    /// Like [`Client::recv`], but gives up after `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<ServerFrame, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Cursors move only over contiguous `seq`s, so a gap (messages
    /// committed while this client was away) stays visible to `sync`.
    fn track(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::NewMessage { message, .. } => {
                self.advance(&message.conversation_id, message.seq)
            }
            ServerFrame::MessageSent {
                conversation_id,
                seq,
                ..
            } => self.advance(conversation_id, *seq),
            ServerFrame::SyncComplete { cursors, .. } => {
                for (conversation, seq) in cursors {
                    let cursor = self.cursors.entry(conversation.clone()).or_insert(0);
                    *cursor = (*cursor).max(*seq);
                }
            }
            _ => {}
        }
    }

    fn advance(&mut self, conversation: &str, seq: i64) {
        let cursor = self.cursors.entry(conversation.to_string()).or_insert(0);
        if seq == *cursor + 1 {
            *cursor = seq;
        }
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("r{}", self.next_request)
    }

    /// Sends one JSON frame as is.
    pub async fn send_json(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.send_text(&frame.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a message; returns the `requestId` the ack will carry.
    pub async fn send_message(
        &mut self,
        conversation: &str,
        content: &str,
        client_message_id: Option<&str>,
    ) -> Result<String, ClientError> {
        let request_id = self.request_id();
        let mut frame = json!({
            "type": "send_message",
            "conversationId": conversation,
            "content": content,
            "requestId": request_id,
        });
        if let Some(id) = client_message_id {
            frame["clientMessageId"] = json!(id);
        }
        self.send_json(&frame).await?;
        Ok(request_id)
    }

    /// Asks for everything after the cursors this client holds.
    pub async fn sync(&mut self) -> Result<String, ClientError> {
        let request_id = self.request_id();
        let frame = json!({"type": "sync", "cursors": self.cursors, "requestId": request_id});
        self.send_json(&frame).await?;
        Ok(request_id)
    }

    /// The underlying socket, for raw frames.
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// Closes politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.socket.close(None).await?;
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }
}

fn closed(frame: Option<CloseFrame>) -> ClientError {
    match frame {
        Some(f) => ClientError::Closed {
            code: f.code.into(),
            reason: f.reason.to_string(),
        },
        None => ClientError::Closed {
            code: 1006,
            reason: String::new(),
        },
    }
}
