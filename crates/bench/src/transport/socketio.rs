//! Socket.IO 4 (engine.io v4 over its WebSocket transport): being written.

use std::net::{IpAddr, SocketAddr};

use super::{Connection, Identity};
use crate::recorder::Recorder;

pub async fn connect(
    _server: SocketAddr,
    _identity: &Identity,
    _source: IpAddr,
    _recorder: Recorder,
) -> anyhow::Result<Connection> {
    anyhow::bail!("the Socket.IO adapter is not written yet")
}
