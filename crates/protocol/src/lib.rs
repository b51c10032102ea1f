//! The natter wire protocol: every JSON frame a client and the server
//! exchange, and the close codes.
//!
//! This crate is the only place where wire field names live. It keeps the
//! original design's names (`send_message`, `message._id`, camelCase fields)
//! so existing clients work unchanged, plus the additive extensions for exact
//! recovery (`seq`, `cursors`, `clientMessageId`). It does no IO; the server
//! and the SDKs both build on it. The full contract is `docs/protocol.md`.

mod client;
mod server;

pub use client::{
    ClientFrame, ReadReceipt, RefreshToken, Request, RequestError, SendMessage, SyncRequest,
    TypingIndicator, parse_request,
};
pub use server::{
    ErrorCode, MessageDeliveredRef, MessageSentRef, NewMessageRef, ServerFrame, WireMessage,
};

/// WebSocket close codes the server uses, with the reason text it sends.
pub mod close {
    /// The server is shutting down; reconnect elsewhere after `reconnect.afterMs`.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol violation at the WebSocket layer.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Authentication missing or failed. Clients must not auto-reconnect.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An unexpected server error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The connection fell too far behind; reconnect and `sync`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The token expired while connected. Clients must not auto-reconnect
    /// with the same token.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The user opened more connections than allowed; the oldest was closed.
    pub const TOO_MANY_CONNECTIONS: u16 = 4008;

    pub const REASON_AUTH_REQUIRED: &str = "Authentication required";
    pub const REASON_AUTH_FAILED: &str = "Authentication failed";
}

/// The subprotocol a client offers (with `bearer.<JWT>`) to send its token
/// without a query string.
pub const SUBPROTOCOL: &str = "natter.v1";
/// The prefix of the subprotocol entry that carries the token.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";
