//! Frames the server sends. Serialized once per event and shared by every
//! recipient, so these types borrow nothing and own their strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidFormat,
    Unauthorized,
    RateLimited,
    UnknownMessageType,
    InvalidMessage,
    NotFound,
    MessageTooLarge,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFormat => "INVALID_FORMAT",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::RateLimited => "RATE_LIMITED",
            Self::UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            Self::InvalidMessage => "INVALID_MESSAGE",
            Self::NotFound => "NOT_FOUND",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A message as clients see it. `_id` keeps the original design's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireMessage {
    #[serde(rename = "_id")]
    pub id: String,
    pub conversation_id: String,
    pub sender: String,
    pub content: String,
    pub content_type: String,
    pub seq: i64,
    /// ISO-8601.
    pub sent_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    ConnectionEstablished {
        user_id: String,
        session_id: String,
        server_time: i64,
        heartbeat_ms: u64,
    },
    MessageSent {
        message_id: String,
        conversation_id: String,
        seq: i64,
        sent_at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        duplicate: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    NewMessage {
        message: WireMessage,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replay: bool,
    },
    MessageDelivered {
        message_id: String,
        conversation_id: String,
        user_id: String,
        delivered_at: String,
    },
    ReadReceipt {
        message_id: String,
        conversation_id: String,
        user_id: String,
        read_at: String,
    },
    TypingIndicator {
        conversation_id: String,
        user_id: String,
        is_typing: bool,
        timestamp: i64,
    },
    PresenceUpdate {
        user_id: String,
        status: String,
        timestamp: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<String>,
    },
    SyncComplete {
        cursors: BTreeMap<String, i64>,
        has_more: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    Pong {
        server_time: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    TokenRefreshed {
        expires_at: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    Reconnect {
        after_ms: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

impl ServerFrame {
    /// The frame as JSON text. Serializing these types cannot fail: every
    /// field is a string, number, bool or string-keyed map.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"INTERNAL_ERROR","message":"{e}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_the_contract() {
        let f = ServerFrame::NewMessage {
            message: WireMessage {
                id: "m1".into(),
                conversation_id: "c1".into(),
                sender: "alice".into(),
                content: "hi".into(),
                content_type: "text".into(),
                seq: 3,
                sent_at: "2026-01-01T00:00:00.000Z".into(),
                client_message_id: None,
            },
            replay: false,
        };
        assert_eq!(
            f.to_json(),
            r#"{"type":"new_message","message":{"_id":"m1","conversationId":"c1","sender":"alice","content":"hi","contentType":"text","seq":3,"sentAt":"2026-01-01T00:00:00.000Z"}}"#
        );
        let e = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            request_id: Some("r".into()),
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"error","code":"RATE_LIMITED","message":"slow down","requestId":"r"}"#
        );
        let c = ServerFrame::ConnectionEstablished {
            user_id: "u".into(),
            session_id: "s".into(),
            server_time: 1,
            heartbeat_ms: 2,
        };
        assert_eq!(
            c.to_json(),
            r#"{"type":"connection_established","userId":"u","sessionId":"s","serverTime":1,"heartbeatMs":2}"#
        );
    }
}
