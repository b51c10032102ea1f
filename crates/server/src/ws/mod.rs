//! A minimal server-side WebSocket (RFC 6455) built for many idle connections.
//!
//! Why our own: general-purpose WebSocket crates keep a read buffer (and
//! often a write buffer) allocated per connection for its whole life;
//! tungstenite's is 128 KiB, allocated eagerly. natter holds hundreds of
//! thousands of mostly idle connections, so here an idle connection owns no
//! buffer at all: bytes are read into a stack scratch area and only the tail
//! of a partly received frame is kept on the heap, until it completes.
//! Writes are batched: everything queued is encoded into one buffer and
//! written with one syscall, then the buffer is freed.
//!
//! No extensions (permessage-deflate) are negotiated; chat frames are small.

mod frame;
mod handshake;

pub use frame::{DecodeError, Decoder, Incoming, encode_close, encode_frame};
pub use handshake::{accept_key, check_upgrade};

/// WebSocket opcodes the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}
