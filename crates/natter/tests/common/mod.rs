//! Shared test helpers: a real server on 127.0.0.1:0 with a temporary SQLite
//! file, users and conversations to talk in, and clients.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use natter_client::{Client, ClientError, ServerFrame, TokenVia};
use natter_core::{ConversationId, NewConversation, NewUser, Store, UserId};
use natter_store::{SqliteConfig, SqliteStore};
use tokio::sync::oneshot;

pub const SECRET: &[u8] = b"test-secret-with-enough-bytes-0123456789";
/// Long enough for a loaded CI machine; only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The standard cast: `team` = alice, bob, carol; `pair` = alice, dave;
/// eve is in no conversation.
pub const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut natter_server::Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(SqliteConfig::new(dir.path().join("natter.db")))
                .await
                .expect("open store"),
        );
        seed(&store).await;
        let mut config = natter_server::Config::new(SECRET);
        config.shutdown_deadline = Duration::from_secs(2);
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let broker: natter_server::BrokerFactory =
            Box::new(|delivery| Arc::new(natter_broker::LocalBroker::new(delivery)));
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                natter_server::run(listener, config, store, broker, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
            }
        });
        TestServer {
            addr,
            store,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.url(), &token(user), TokenVia::Query)
            .await
            .expect("connect")
    }

    /// Stops the server and waits for its graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(PATIENCE, &mut self.task).await;
    }
}

pub fn uid(s: &str) -> UserId {
    UserId::try_from(s).expect("valid user id")
}

pub async fn create_conversation(store: &Arc<dyn Store>, id: &str, members: &[&str]) {
    store
        .create_conversation(NewConversation {
            id: ConversationId::try_from(id).expect("valid id"),
            title: None,
            members: members.iter().map(|m| uid(m)).collect(),
        })
        .await
        .expect("create conversation");
}

pub fn token(user: &str) -> String {
    natter_server::auth::mint(SECRET, &uid(user), Duration::from_secs(3600)).expect("mint")
}

/// The next frame, failing the test if none comes.
pub async fn next(client: &mut Client) -> ServerFrame {
    client
        .recv_within(PATIENCE)
        .await
        .expect("a frame from the server")
}

/// The next frame that is not presence, typing or a receipt: what a test
/// about messages looks at.
pub async fn next_message_frame(client: &mut Client) -> ServerFrame {
    loop {
        match next(client).await {
            ServerFrame::PresenceUpdate { .. }
            | ServerFrame::TypingIndicator { .. }
            | ServerFrame::MessageDelivered { .. }
            | ServerFrame::ReadReceipt { .. } => continue,
            frame => return frame,
        }
    }
}

/// The next frame that is not a presence update.
pub async fn next_but_presence(client: &mut Client) -> ServerFrame {
    loop {
        match next(client).await {
            ServerFrame::PresenceUpdate { .. } => continue,
            frame => return frame,
        }
    }
}

/// Asserts no message frame (presence, typing and receipts aside) arrives
/// for a short while. Used only
/// after a positive signal proved the pipeline has flushed, so a miss is a
/// real miss, not a slow machine.
pub async fn assert_silent(client: &mut Client, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(left).await {
            Err(ClientError::Timeout) => return,
            Ok(
                ServerFrame::PresenceUpdate { .. }
                | ServerFrame::TypingIndicator { .. }
                | ServerFrame::MessageDelivered { .. }
                | ServerFrame::ReadReceipt { .. },
            ) => continue,
            other => panic!("expected no message frames, got {other:?}"),
        }
    }
}

/// Sends and waits for the ack; returns (messageId, seq).
pub async fn send(client: &mut Client, conversation: &str, content: &str) -> (String, i64) {
    let request = client
        .send_message(conversation, content, None)
        .await
        .expect("send");
    loop {
        match next_message_frame(client).await {
            ServerFrame::MessageSent {
                message_id,
                seq,
                request_id,
                ..
            } if request_id.as_deref() == Some(&request) => {
                return (message_id, seq);
            }
            ServerFrame::NewMessage { .. } => continue,
            other => panic!("expected message_sent, got {other:?}"),
        }
    }
}

/// Waits for the next `new_message` and returns it.
pub async fn next_new_message(client: &mut Client) -> natter_client::WireMessage {
    match next_message_frame(client).await {
        ServerFrame::NewMessage { message, .. } => message,
        other => panic!("expected new_message, got {other:?}"),
    }
}

/// Waits until the error frame comes, past any message traffic; returns
/// (code, requestId).
pub async fn next_error(client: &mut Client) -> (natter_client::ErrorCode, Option<String>) {
    loop {
        match next_message_frame(client).await {
            ServerFrame::Error {
                code, request_id, ..
            } => return (code, request_id),
            ServerFrame::NewMessage { .. } => continue,
            other => panic!("expected error, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code.
pub async fn close_code(client: &mut Client) -> u16 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let next = tokio::time::timeout(PATIENCE, client.socket().next())
            .await
            .expect("the server closes in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Path of the built `natter` binary.
pub fn natter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_natter"))
}

/// A `natter serve` process: the real binary, on a free port.
pub struct NatterProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl NatterProcess {
    /// Starts `natter serve` on `database` and waits until it answers /health.
    pub async fn start(database: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_logging(
            database,
            extra,
            &[("RUST_LOG", "warn")],
            std::process::Stdio::inherit(),
        )
        .await
    }

    /// Like `start`, with extra environment and the log (stderr) sent to `log`.
    pub async fn start_logging(
        database: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: std::process::Stdio,
    ) -> Self {
        let port = free_port();
        let child = std::process::Command::new(natter_bin())
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--database-url")
            .arg(format!("sqlite://{}", database.display()))
            .args(extra)
            .env("JWT_SECRET", std::str::from_utf8(SECRET).expect("ascii"))
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_URI")
            .env_remove("LOG_FORMAT")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn natter");
        let process = NatterProcess { child, port };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "natter did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.url(), &token(user), TokenVia::Query)
            .await
            .expect("connect")
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for NatterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Creates the standard cast in a fresh database file, through the store.
pub async fn seed_database(path: &std::path::Path) {
    let store = SqliteStore::open(SqliteConfig::new(path))
        .await
        .expect("open");
    let store: Arc<dyn Store> = Arc::new(store);
    seed(&store).await;
    store.close().await;
}

/// The standard cast: USERS, `team` and `pair`.
async fn seed(store: &Arc<dyn Store>) {
    for user in USERS {
        store
            .add_user(NewUser {
                id: uid(user),
                name: None,
            })
            .await
            .expect("add user");
    }
    create_conversation(store, "team", &["alice", "bob", "carol"]).await;
    create_conversation(store, "pair", &["alice", "dave"]).await;
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, failing the test if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), with
/// the raw `headers` and `body` given; reads the answer to the end.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read answer");
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = decode_chunked(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A JSON request to the server's HTTP API with an optional bearer token.
pub async fn api(
    server: &TestServer,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> HttpResponse {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let body = body.map(|b| b.to_string());
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http_raw(
        server.addr,
        method,
        path,
        &headers,
        body.as_deref().map(str::as_bytes),
    )
    .await
}
