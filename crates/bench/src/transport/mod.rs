//! How the load generator talks to a server: one task per connection,
//! driven by [`Command`]s, reporting what it sees to the [`Recorder`].
//!
//! Every peer (natter, Socket.IO) implements the same `run` shape, so each
//! scenario runs unchanged against each of them.

pub mod natter;
pub mod socketio;

use std::net::{IpAddr, SocketAddr};

use tokio::{net::TcpStream, sync::mpsc};

use crate::recorder::Recorder;

/// Which server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Natter,
    Socketio,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Natter => "natter",
            Peer::Socketio => "socketio",
        }
    }
}

/// Who a connection is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub token: String,
}

/// What a connection task is told to do.
#[derive(Debug)]
pub enum Command {
    /// Send a benchmark message meant to leave at `intended_us`.
    Send {
        conversation: String,
        intended_us: u64,
        content: String,
    },
    Close,
}

/// The handle to a running connection task.
#[derive(Debug, Clone)]
pub struct Connection {
    pub commands: mpsc::UnboundedSender<Command>,
}

impl Connection {
    pub fn send(&self, conversation: &str, intended_us: u64, content: String) {
        let _ = self.commands.send(Command::Send {
            conversation: conversation.to_string(),
            intended_us,
            content,
        });
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Opens a TCP connection from `source` (on loopback one of 127.0.0.x, to
/// get past the ephemeral ports of a single source address).
pub async fn tcp_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket client connection from `source`, with the small buffers a
/// generator holding thousands of connections needs.
pub async fn websocket(
    server: SocketAddr,
    source: IpAddr,
    url: String,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    use anyhow::Context;
    let stream = tcp_from(source, server).await.context("tcp connect")?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    Ok(socket)
}

/// The source address for the n-th connection to `server`: one of
/// 127.0.0.x on loopback, any address (the system's choice) elsewhere.
pub fn source_for(n: usize, server: SocketAddr) -> IpAddr {
    match server.ip() {
        ip if ip.is_loopback() && ip.is_ipv4() => IpAddr::from([127, 0, 0, (2 + n % 200) as u8]),
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}

/// Connects with the peer's protocol; returns once the server has accepted
/// the identity, with the task running in the background.
pub async fn connect(
    peer: Peer,
    server: SocketAddr,
    identity: &Identity,
    source: IpAddr,
    recorder: Recorder,
) -> anyhow::Result<Connection> {
    match peer {
        Peer::Natter => natter::connect(server, identity, source, recorder).await,
        Peer::Socketio => socketio::connect(server, identity, source, recorder).await,
    }
}
