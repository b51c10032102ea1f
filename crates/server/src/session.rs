//! One WebSocket connection, from the upgrade request to the last byte.
//!
//! The upgrade is accepted even when authentication fails, so the client
//! learns why from the close code (1008), as the contract says. After that
//! each connection runs two tasks: this one reads and handles requests; the
//! writer owns the sending side, drains the outbox and writes everything
//! that is ready with one syscall per wake-up.

use std::{future::poll_fn, pin::Pin, sync::Arc, task::Poll, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use natter_core::{EventKind, SessionId, time};
use natter_protocol::{ClientFrame, ServerFrame, parse_request};
use tokio::net::TcpStream;

use crate::{
    App,
    auth::{self, AuthError, Identity},
    chat::{error_frame, json},
    hub::Connection,
    metrics::Metrics,
    outbox::{Close, Outbox, Outgoing},
    receipts,
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
        let Some((stream, early)) = take_socket(on_upgrade).await else {
            return;
        };
        match auth {
            Ok(identity) => start(app, stream, early, identity),
            Err(e) => refuse(stream, e).await,
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
        Err(e) => Err(AuthError::Unavailable(e.to_string())),
    }
}

/// The plain socket once hyper has sent the 101, with any bytes the client
/// sent early.
async fn take_socket(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<(Arc<TcpStream>, Vec<u8>)> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!("upgraded connection is not a TcpStream");
        return None;
    };
    // Copy what the client sent early and let hyper's read buffer go now:
    // the `Bytes` pins its whole 8 KiB allocation.
    let early = parts.read_buf.to_vec();
    drop(parts.read_buf);
    let stream = parts.io.into_inner();
    let _ = stream.set_nodelay(true);
    Some((Arc::new(stream), early))
}

/// Closes an unauthenticated connection with the contract's code and reason.
async fn refuse(stream: Arc<TcpStream>, error: AuthError) {
    tracing::info!(reason = %error, "authentication failed");
    let mut frame = Vec::new();
    ws::encode_close(error.close_code(), error.reason(), &mut frame);
    if write_all(&stream, &frame).await.is_ok() {
        linger(&stream).await;
    }
}

/// Registers an authenticated connection and starts its two tasks. The
/// reader task's whole state is a [`Reader`]: what an idle connection costs.
fn start(app: Arc<App>, stream: Arc<TcpStream>, early: Vec<u8>, identity: Identity) {
    let session = SessionId(rand::random());
    let conn = Arc::new(Connection::new(
        session,
        identity.user.clone(),
        Outbox::new(app.config.outbox_bytes, app.metrics.clone()),
        identity.expires_at,
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
    app.metrics.connections_opened.inc();
    app.metrics.connections_open.inc();
    let first = app.hub.register(conn.clone());
    app.presence.connected(conn.clone(), first);
    // A drain that started before the register did not see this connection.
    if app.shutdown.is_cancelled() {
        conn.outbox.stop_reading();
    }
    let mut reader = Reader {
        writer: tokio::spawn(write_loop(
            conn.clone(),
            stream.clone(),
            app.chat.receipts().clone(),
            app.metrics.clone(),
        )),
        decoder: Decoder::new(app.config.max_frame_bytes),
        incoming: Vec::new(),
        app,
        conn,
        stream,
    };
    let tracker = reader.app.tracker.clone();
    tracing::debug!(user = %identity.user, %session, "connected");
    match reader.decoder.feed(&early, &mut reader.incoming) {
        Ok(()) => tracker.spawn(reader.run()),
        // A bad frame with the upgrade request: nothing to read.
        Err(e) => tracker.spawn(reader.finish(ReadEnd::Invalid(e))),
    };
}

/// The reading half of a connection, and everything its task owns.
struct Reader {
    app: Arc<App>,
    conn: Arc<Connection>,
    stream: Arc<TcpStream>,
    /// The writer task; awaited so that the close frame is out before the
    /// socket is dropped.
    writer: tokio::task::JoinHandle<()>,
    decoder: Decoder,
    /// Decoded messages not handled yet.
    incoming: Vec<Incoming>,
}

enum ReadEnd {
    ClientClosed(Option<u16>),
    /// EOF or a socket error: nobody to say goodbye to.
    Gone,
    Invalid(ws::DecodeError),
    /// The server asked the writer to close (slow consumer, heartbeat,
    /// shutdown), or is draining and reads no more.
    Stopped,
}

impl Reader {
    /// Not an `async fn`: those keep their arguments twice (as captures and
    /// as locals) in every idle connection's task; a block captures once.
    ///
    /// This task's state is what an idle connection costs, and a task is
    /// allocated in multiples of 128 bytes, so it carries nothing it can do
    /// without: no tracing span (the subscriber would also keep one per
    /// connection), and the debug events name the user and session instead.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> {
        async move {
            let end = self.read().await;
            // Everything after reading is boxed: an idle connection's task
            // only pays for the state of waiting for input.
            Box::pin(self.finish(end)).await;
        }
    }

    async fn read(&mut self) -> ReadEnd {
        // Counted while reading, so shutdown knows when no request can arrive.
        let _reading = self.app.readers.token();
        loop {
            for message in std::mem::take(&mut self.incoming) {
                self.conn.heard();
                match message {
                    // Boxed: handling needs far more state than waiting.
                    Incoming::Text(text) => {
                        Box::pin(handle_text(&self.app, &self.conn, &text)).await
                    }
                    Incoming::Binary => reply_error(
                        &self.conn,
                        natter_protocol::ErrorCode::InvalidFormat,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    ),
                    Incoming::Ping(payload) => {
                        let _ = self
                            .conn
                            .outbox
                            .push(Outgoing::Pong(payload), EventKind::Durable);
                    }
                    Incoming::Pong => {}
                    Incoming::Close(code) => return ReadEnd::ClientClosed(code),
                }
            }
            let woken = poll_fn(|cx| {
                if let Poll::Ready(stop) = self.conn.outbox.poll_stop(cx) {
                    return Poll::Ready(Err(stop));
                }
                self.stream.poll_read_ready(cx).map(Ok)
            })
            .await;
            match woken {
                Err(_) => return ReadEnd::Stopped,
                Ok(Err(_)) => return ReadEnd::Gone,
                Ok(Ok(())) => {}
            }
            // The scratch buffer lives on the stack only for this synchronous
            // block, so an idle connection's task holds no read buffer.
            let mut scratch = [0u8; 16 * 1024];
            match read_some(&self.stream, &mut scratch) {
                Ok(0) => return ReadEnd::Gone,
                Ok(n) => {
                    if let Err(e) = self.decoder.feed(&scratch[..n], &mut self.incoming) {
                        return ReadEnd::Invalid(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return ReadEnd::Gone,
            }
        }
    }

    /// Closes as the end of reading requires, waits for the writer to send
    /// the close, then for the client's close.
    async fn finish(self, end: ReadEnd) {
        if let ReadEnd::Stopped = end {
            // Draining: the connection stays registered, so its acks and
            // the shutdown's reconnect advice reach it, until the drain
            // closes it.
            self.conn.outbox.closed().await;
        }
        let last = self.app.hub.unregister(&self.conn);
        if last {
            self.app.presence.disconnected(self.conn.user.clone());
            self.app.chat.user_gone(&self.conn.user).await;
        }
        let outbox = &self.conn.outbox;
        let client_closed = matches!(end, ReadEnd::ClientClosed(_));
        match end {
            ReadEnd::ClientClosed(code) => outbox.close(Close {
                code: code.unwrap_or(1000),
                reason: "",
                flush_first: true,
            }),
            ReadEnd::Gone => outbox.close(Close::ABANDON),
            ReadEnd::Invalid(e) => outbox.close(Close {
                code: e.close_code(),
                reason: match e {
                    ws::DecodeError::TooBig(_) => "message too big",
                    ws::DecodeError::InvalidUtf8 => "invalid UTF-8",
                    ws::DecodeError::Protocol(_) => "protocol error",
                },
                flush_first: true,
            }),
            // Draining: shutdown closes every connection once in-flight
            // sends are acked; closing: the writer is on it.
            ReadEnd::Stopped => {}
        }
        let _ = self.writer.await;
        let metrics = &self.app.metrics;
        metrics.connections_open.dec();
        metrics.closed(outbox.close_code().unwrap_or(Close::ABANDON.code));
        let we_sent_close = outbox
            .close_code()
            .is_some_and(|c| c != Close::ABANDON.code);
        if we_sent_close && !client_closed {
            linger(&self.stream).await;
        }
        let conn = &self.conn;
        tracing::debug!(user = %conn.user, session = %conn.session, "disconnected");
    }
}

async fn handle_text(app: &App, conn: &Arc<Connection>, text: &str) {
    let request = match parse_request(text) {
        Ok(request) => request,
        Err(e) => {
            app.metrics.error(e.code);
            return reply_error(conn, e.code, &e.message, e.request_id);
        }
    };
    let request_id = request.request_id;
    let result = match request.frame {
        ClientFrame::SendMessage(send) => app.chat.send(conn, request_id.clone(), send).await,
        ClientFrame::Sync(sync) => app.chat.sync(conn, request_id.clone(), sync).await,
        ClientFrame::ReadReceipt(receipt) => app.chat.read(conn, receipt).await,
        ClientFrame::TypingIndicator(indicator) => app.chat.typing(conn, indicator).await,
        ClientFrame::RefreshToken(refresh) => {
            refresh_token(app, conn, &refresh.token, request_id.clone());
            Ok(())
        }
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
    };
    if let Err(refusal) = result {
        app.metrics.error(refusal.code);
        reply_error(conn, refusal.code, &refusal.message, request_id);
    }
}

/// Extends the connection's life with a newer token of the same user, or
/// closes it with 4001 as if the old token had expired.
fn refresh_token(app: &App, conn: &Arc<Connection>, token: &str, request_id: Option<String>) {
    match app.verifier.verify(token) {
        Ok(identity) if identity.user == conn.user => {
            conn.set_expires_at(identity.expires_at);
            app.hub.watch_expiry(conn);
            let refreshed = ServerFrame::TokenRefreshed {
                expires_at: (identity.expires_at as i64).saturating_mul(1000),
                request_id,
            };
            let _ = conn
                .outbox
                .push(Outgoing::Text(json(&refreshed)), EventKind::Durable);
        }
        _ => conn.outbox.close(Close {
            code: natter_protocol::close::TOKEN_EXPIRED,
            reason: "token refresh failed",
            flush_first: true,
        }),
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
///
/// While it waits for the outbox this task is all an idle connection's
/// writing costs, and tasks are allocated in multiples of 128 bytes: so no
/// batch is held across an await here. One that the socket does not take at
/// once waits in a boxed future.
async fn write_loop(
    conn: Arc<Connection>,
    stream: Arc<TcpStream>,
    receipts: receipts::Reporter,
    metrics: Arc<Metrics>,
) {
    loop {
        conn.outbox.wait().await;
        let rest = match Batch::take(&conn.outbox).write_now(&stream) {
            Sent::All(batch) => {
                if batch.written(&conn, &receipts, &metrics) {
                    continue;
                }
                return;
            }
            Sent::Partly(rest) => rest,
            Sent::Failed => {
                conn.outbox.close(Close::ABANDON);
                return;
            }
        };
        let Ok(batch) = rest.await else {
            conn.outbox.close(Close::ABANDON);
            return;
        };
        if !batch.written(&conn, &receipts, &metrics) {
            return;
        }
    }
}

/// What the socket made of a batch's first write.
enum Sent<Rest> {
    All(Batch),
    /// The write of what it did not take, which waits for the socket.
    Partly(Pin<Box<Rest>>),
    /// The peer is gone.
    Failed,
}

/// What the outbox held, encoded for one write.
struct Batch {
    bytes: Vec<u8>,
    /// The `new_message` frames in `bytes`: deliveries once written.
    delivered: Vec<Arc<natter_core::MessageTag>>,
    close: Option<Close>,
}

impl Batch {
    fn take(outbox: &Outbox) -> Self {
        let (items, close) = outbox.take();
        // One allocation for the whole write: a frame header is at most 10
        // bytes and a close frame at most 131.
        let size = items.iter().map(|i| i.payload_len() + 10).sum::<usize>() + 131;
        let mut bytes = Vec::with_capacity(size);
        let mut delivered = Vec::new();
        for item in items {
            match item {
                Outgoing::Text(payload) => ws::encode_frame(Opcode::Text, &payload, &mut bytes),
                Outgoing::Message(payload, tag) => {
                    ws::encode_frame(Opcode::Text, &payload, &mut bytes);
                    delivered.push(tag);
                }
                Outgoing::Ping => ws::encode_frame(Opcode::Ping, b"", &mut bytes),
                Outgoing::Pong(payload) => ws::encode_frame(Opcode::Pong, &payload, &mut bytes),
            }
        }
        if let Some(close) = close
            && close.sends_frame()
        {
            ws::encode_close(close.code, close.reason, &mut bytes);
        }
        Self {
            bytes,
            delivered,
            close,
        }
    }

    /// Writes what the socket takes now.
    fn write_now(
        self,
        stream: &TcpStream,
    ) -> Sent<impl Future<Output = std::io::Result<Self>> + '_> {
        let written = if self.bytes.is_empty() {
            0
        } else {
            match stream.try_write(&self.bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(_) => return Sent::Failed,
            }
        };
        if written == self.bytes.len() {
            return Sent::All(self);
        }
        Sent::Partly(Box::pin(async move {
            write_all(stream, self.bytes.get(written..).unwrap_or_default()).await?;
            Ok(self)
        }))
    }

    /// Written to the socket: as delivered as a server can tell. Returns
    /// whether the connection stays open.
    fn written(self, conn: &Connection, receipts: &receipts::Reporter, metrics: &Metrics) -> bool {
        let mut delivered = self.delivered;
        if !delivered.is_empty() {
            let now = time::now_us();
            metrics.messages_delivered.inc_by(delivered.len() as u64);
            for tag in delivered.iter().filter(|t| t.committed_at_us > 0) {
                let micros = (now - tag.committed_at_us).max(0) as u64;
                Metrics::observe(&metrics.fanout_seconds, Duration::from_micros(micros));
            }
            delivered.retain(|t| t.receipt);
            receipts.report(&conn.user, delivered);
        }
        self.close.is_none()
    }
}

/// Reads what the socket holds into `buf`, like `try_read`. A read that
/// does not fill `buf` has drained the socket (the kernel signals new data
/// afresh), so it also clears the socket's readiness: otherwise the next
/// wait returns at once and a second `recv` finds nothing, one wasted
/// syscall per request. `try_io` clears readiness only on `WouldBlock`,
/// hence the short read is reported to it as one and its count kept here.
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let capacity = buf.len();
    let mut read = 0;
    let outcome = stream.try_io(tokio::io::Interest::READABLE, || {
        read = stream.try_read(buf)?;
        if read > 0 && read < capacity {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    });
    match outcome {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        other => other,
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use natter_core::UserId;

    use super::*;

    fn connection() -> Arc<Connection> {
        Arc::new(Connection::new(
            SessionId(1),
            UserId::new_unchecked("u"),
            Outbox::new(1 << 24, Arc::default()),
            0,
        ))
    }

    /// A connected pair: the server's end and the client's, whose receive
    /// buffer is fixed at 64 KiB (loopback's autotuning grows it to 32 MB).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(1 << 16).expect("SO_RCVBUF");
        let client = socket.connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// A batch larger than the socket takes at once: the rest is written
    /// once the client reads, from exactly where the first write stopped,
    /// and the close frame comes last.
    #[tokio::test]
    async fn what_the_socket_does_not_take_follows_in_order() {
        let conn = connection();
        // 8 MB: more than the two sockets buffer (tcp_wmem allows 4 MB).
        let payloads: Vec<Bytes> = (0..32u8)
            .map(|i| Bytes::from(vec![i; 250_000 + usize::from(i)]))
            .collect();
        let mut expected = Vec::new();
        for payload in &payloads {
            let item = Outgoing::Text(payload.clone());
            assert_eq!(conn.outbox.push(item, EventKind::Durable), Ok(()));
            ws::encode_frame(Opcode::Text, payload, &mut expected);
        }
        let close = Close {
            code: 1000,
            reason: "bye",
            flush_first: true,
        };
        conn.outbox.close(close);
        ws::encode_close(close.code, close.reason, &mut expected);
        let (server, mut client) = socket_pair().await;
        let rest = match Batch::take(&conn.outbox).write_now(&server) {
            Sent::Partly(rest) => rest,
            Sent::All(_) => panic!("8 MB fitted the socket at once"),
            Sent::Failed => panic!("the write failed"),
        };
        let read = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut all).await;
            all
        });
        let batch = rest.await.expect("the rest is written");
        drop(server);
        assert!(read.await.expect("reader") == expected, "the bytes differ");
        assert_eq!(batch.close, Some(close));
    }

    /// Every idle connection holds a writer task. tokio allocates a task as
    /// its future plus ~100 bytes (header, scheduler, trailer) rounded up to
    /// 128 bytes; 152 bytes of future keep it at 256. State held across the
    /// outbox wait (a batch, a buffer) would push it to 384.
    #[tokio::test]
    async fn an_idle_writer_task_fits_in_256_bytes() {
        let (stream, _client) = socket_pair().await;
        let (reports, _) = tokio::sync::mpsc::unbounded_channel();
        let writer = write_loop(
            connection(),
            Arc::new(stream),
            receipts::Reporter(reports),
            Arc::default(),
        );
        let size = std::mem::size_of_val(&writer);
        assert!(size <= 152, "the writer's future is {size} bytes");
    }
}
