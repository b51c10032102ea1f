//! One WebSocket connection, from the upgrade request to the last byte.
//!
//! The upgrade is accepted even when authentication fails, so the client
//! learns why from the close code (1008), as the contract says. After that
//! each connection runs two tasks: this one reads and handles requests; the
//! writer owns the sending side, drains the outbox and writes everything
//! that is ready with one syscall per wake-up.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use natter_core::{EventKind, SessionId, time};
use natter_protocol::{ClientFrame, ServerFrame, close, parse_request};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::{
    App,
    auth::{self, AuthError, Identity},
    chat::{error_frame, json},
    hub::Connection,
    outbox::{Close, Outbox, Outgoing},
    ws::{self, Decoder, Incoming, Opcode},
};

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long one write may stall before the peer counts as gone.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// `GET /` and `GET /ws` with an upgrade: authenticate, answer 101, and run
/// the session once hyper hands over the socket.
pub async fn upgrade(State(app): State<Arc<App>>, mut req: Request) -> Response {
    let key = match ws::check_upgrade(req.method(), req.headers()) {
        Ok(key) => ws::accept_key(key),
        Err(e) => return (StatusCode::UPGRADE_REQUIRED, e.to_string()).into_response(),
    };
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down").into_response();
    }
    let presented = auth::presented_token(req.uri(), req.headers());
    let auth = authenticate(&app, presented).await;
    let natter_subprotocol = auth::offers_natter_subprotocol(req.headers());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracker = app.tracker.clone();
    tracker.spawn(async move {
        match on_upgrade.await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => run(app, parts.io.into_inner(), &parts.read_buf, auth).await,
            Ok(Err(_)) => tracing::error!("upgraded connection is not a TcpStream"),
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if natter_subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(natter_protocol::SUBPROTOCOL),
        );
    }
    response
}

async fn authenticate(
    app: &App,
    presented: Option<auth::Presented>,
) -> Result<Identity, AuthError> {
    let presented = presented.ok_or(AuthError::Missing)?;
    let identity = app.verifier.verify(&presented.token)?;
    match app.chat.store().user(&identity.user).await {
        Ok(Some(_)) => Ok(identity),
        Ok(None) => Err(AuthError::UnknownUser),
        Err(e) => Err(AuthError::Invalid(e.to_string())),
    }
}

/// The life of one upgraded connection.
async fn run(app: Arc<App>, stream: TcpStream, early: &[u8], auth: Result<Identity, AuthError>) {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let identity = match auth {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(reason = %e, "authentication failed");
            let mut frame = Vec::new();
            ws::encode_close(close::POLICY_VIOLATION, e.reason(), &mut frame);
            if write_all(&stream, &frame).await.is_ok() {
                linger(&stream).await;
            }
            return;
        }
    };
    let session = SessionId::new_unchecked(uuid::Uuid::now_v7().simple().to_string());
    let span = tracing::info_span!("session", user = %identity.user, session = %session);
    async move {
        let conn = Arc::new(Connection::new(
            session.clone(),
            identity.user.clone(),
            Outbox::new(app.config.outbox_bytes),
        ));
        let hello = ServerFrame::ConnectionEstablished {
            user_id: identity.user.to_string(),
            session_id: session.to_string(),
            server_time: time::now_ms(),
            heartbeat_ms: app.config.heartbeat.as_millis() as u64,
        };
        let _ = conn
            .outbox
            .push(Outgoing::Text(json(&hello)), EventKind::Durable);
        app.hub.register(conn.clone());
        tracing::debug!("connected");
        let writer = tokio::spawn(write_loop(
            conn.clone(),
            stream.clone(),
            app.config.heartbeat,
        ));
        let end = app
            .readers
            .track_future(read_loop(&app, &conn, &stream, early))
            .await;
        app.hub.unregister(&conn);
        let client_closed = matches!(end, ReadEnd::ClientClosed(_));
        match end {
            ReadEnd::ClientClosed(code) => conn.outbox.close(Close {
                code: code.unwrap_or(1000),
                reason: "",
                flush_first: true,
            }),
            ReadEnd::Gone => conn.outbox.close(Close::ABANDON),
            ReadEnd::Invalid(e) => conn.outbox.close(Close {
                code: e.close_code(),
                reason: match e {
                    ws::DecodeError::TooBig(_) => "message too big",
                    ws::DecodeError::InvalidUtf8 => "invalid UTF-8",
                    ws::DecodeError::Protocol(_) => "protocol error",
                },
                flush_first: true,
            }),
            ReadEnd::ServerClosing => {}
        }
        let _ = writer.await;
        let we_sent_close = conn
            .outbox
            .close_code()
            .is_some_and(|c| c != Close::ABANDON.code);
        if we_sent_close && !client_closed {
            linger(&stream).await;
        }
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
}

enum ReadEnd {
    ClientClosed(Option<u16>),
    /// EOF or a socket error: nobody to say goodbye to.
    Gone,
    Invalid(ws::DecodeError),
    /// The server asked the writer to close (slow consumer, heartbeat, shutdown).
    ServerClosing,
}

async fn read_loop(app: &App, conn: &Arc<Connection>, stream: &TcpStream, early: &[u8]) -> ReadEnd {
    let mut decoder = Decoder::new(app.config.max_frame_bytes);
    let mut incoming = Vec::new();
    if let Err(e) = decoder.feed(early, &mut incoming) {
        return ReadEnd::Invalid(e);
    }
    loop {
        for message in incoming.drain(..) {
            conn.heard();
            match message {
                Incoming::Text(text) => handle_text(app, conn, &text).await,
                Incoming::Binary => reply_error(
                    conn,
                    natter_protocol::ErrorCode::InvalidFormat,
                    "binary frames are not supported; send JSON text frames",
                    None,
                ),
                Incoming::Ping(payload) => {
                    let _ = conn
                        .outbox
                        .push(Outgoing::Pong(payload), EventKind::Durable);
                }
                Incoming::Pong => {}
                Incoming::Close(code) => return ReadEnd::ClientClosed(code),
            }
        }
        tokio::select! {
            biased;
            _ = conn.outbox.closing() => return ReadEnd::ServerClosing,
            _ = app.shutdown.cancelled() => return ReadEnd::ServerClosing,
            ready = stream.readable() => if ready.is_err() { return ReadEnd::Gone },
        }
        // The scratch buffer lives on the stack only for this synchronous
        // block, so an idle connection's task holds no read buffer.
        let mut scratch = [0u8; 16 * 1024];
        match stream.try_read(&mut scratch) {
            Ok(0) => return ReadEnd::Gone,
            Ok(n) => {
                if let Err(e) = decoder.feed(&scratch[..n], &mut incoming) {
                    return ReadEnd::Invalid(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return ReadEnd::Gone,
        }
    }
}

async fn handle_text(app: &App, conn: &Arc<Connection>, text: &str) {
    let request = match parse_request(text) {
        Ok(request) => request,
        Err(e) => return reply_error(conn, e.code, &e.message, e.request_id),
    };
    let request_id = request.request_id;
    let result = match request.frame {
        ClientFrame::SendMessage(send) => app.chat.send(conn, request_id.clone(), send).await,
        ClientFrame::Sync(sync) => app.chat.sync(conn, request_id.clone(), sync).await,
        ClientFrame::Ping => {
            let pong = ServerFrame::Pong {
                server_time: time::now_ms(),
                request_id: request_id.clone(),
            };
            let _ = conn
                .outbox
                .push(Outgoing::Text(json(&pong)), EventKind::Durable);
            Ok(())
        }
        ClientFrame::ReadReceipt(_)
        | ClientFrame::TypingIndicator(_)
        | ClientFrame::RefreshToken(_) => Err(crate::chat::Refusal {
            code: natter_protocol::ErrorCode::UnknownMessageType,
            message: "not supported by this server yet".into(),
        }),
    };
    if let Err(refusal) = result {
        reply_error(conn, refusal.code, &refusal.message, request_id);
    }
}

fn reply_error(
    conn: &Connection,
    code: natter_protocol::ErrorCode,
    message: &str,
    request_id: Option<String>,
) {
    let _ = conn.outbox.push(
        Outgoing::Text(error_frame(code, message, request_id)),
        EventKind::Durable,
    );
}

/// Drains the outbox to the socket until a close is sent or the peer is gone.
async fn write_loop(conn: Arc<Connection>, stream: Arc<TcpStream>, heartbeat: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut items = Vec::new();
    loop {
        tokio::select! {
            _ = conn.outbox.wait() => {}
            _ = ticker.tick() => {
                if conn.silent_ms() > 2 * heartbeat.as_millis() as i64 {
                    tracing::debug!("heartbeat timeout");
                    conn.outbox.close(Close::ABANDON);
                    return;
                }
                let _ = conn.outbox.push(Outgoing::Ping, EventKind::Durable);
            }
        }
        let close = conn.outbox.take(&mut items);
        let mut buf = Vec::new();
        for item in items.drain(..) {
            match item {
                Outgoing::Text(payload) => ws::encode_frame(Opcode::Text, &payload, &mut buf),
                Outgoing::Ping => ws::encode_frame(Opcode::Ping, b"", &mut buf),
                Outgoing::Pong(payload) => ws::encode_frame(Opcode::Pong, &payload, &mut buf),
            }
        }
        if let Some(close) = close
            && close.sends_frame()
        {
            ws::encode_close(close.code, close.reason, &mut buf);
        }
        if !buf.is_empty() && write_all(&stream, &buf).await.is_err() {
            conn.outbox.close(Close::ABANDON);
            return;
        }
        if close.is_some() {
            return;
        }
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    let write = async {
        while !buf.is_empty() {
            stream.writable().await?;
            match stream.try_write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    tokio::time::timeout(WRITE_STALL, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// After our close frame: wait briefly for the client's, so that closing
/// the socket does not reset data the client has not read yet.
async fn linger(stream: &TcpStream) {
    let drain = async {
        let mut decoder = Decoder::new(usize::MAX);
        let mut incoming = Vec::new();
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let mut scratch = [0u8; 1024];
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => {
                    let closed = decoder.feed(&scratch[..n], &mut incoming).is_err()
                        || incoming.iter().any(|m| matches!(m, Incoming::Close(_)));
                    if closed {
                        return;
                    }
                    incoming.clear();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}
