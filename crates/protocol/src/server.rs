//! Frames the server sends. Serialized once per event and shared by every
//! recipient, so these types borrow nothing and own their strings.

use std::{collections::BTreeMap, fmt::Write};

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

/// A `message_delivered` frame that borrows its fields. The server makes one
/// for every delivery of every message (a receipt is not shared between
/// recipients like a `new_message`), so it skips the owned strings and the
/// tagged-enum map of [`ServerFrame::MessageDelivered`] and writes its JSON
/// directly: in `natter-bench fanout` at 150,000 deliveries/s, building
/// receipts the owned way took 10.5 % of the server's core, serde_json on
/// borrowed fields 8 %. Its JSON is the same, byte for byte (a test holds
/// them together).
#[derive(Debug, Clone, Copy)]
pub struct MessageDeliveredRef<'a> {
    message_id: &'a str,
    conversation_id: &'a str,
    user_id: &'a str,
    delivered_at: &'a str,
}

impl<'a> MessageDeliveredRef<'a> {
    pub fn new(
        message_id: &'a str,
        conversation_id: &'a str,
        user_id: &'a str,
        delivered_at: &'a str,
    ) -> Self {
        Self {
            message_id,
            conversation_id,
            user_id,
            delivered_at,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(capacity(
            r#"{"type":"message_delivered","messageId":"","conversationId":"","userId":"","deliveredAt":""}"#,
            &[
                self.message_id,
                self.conversation_id,
                self.user_id,
                self.delivered_at,
            ],
            &[],
        ));
        out.push_str(r#"{"type":"message_delivered""#);
        push_field(&mut out, "messageId", self.message_id);
        push_field(&mut out, "conversationId", self.conversation_id);
        push_field(&mut out, "userId", self.user_id);
        push_field(&mut out, "deliveredAt", self.delivered_at);
        out.push('}');
        out
    }
}

/// A live `new_message` frame that borrows its message: the committer
/// writes one per send. The same JSON as [`ServerFrame::NewMessage`] with
/// `replay: false`, byte for byte, without the owned copies of every field
/// that building a [`WireMessage`] takes.
#[derive(Debug, Clone, Copy)]
pub struct NewMessageRef<'a> {
    pub id: &'a str,
    pub conversation_id: &'a str,
    pub sender: &'a str,
    pub content: &'a str,
    pub content_type: &'a str,
    pub seq: i64,
    pub sent_at: &'a str,
    pub client_message_id: Option<&'a str>,
}

impl NewMessageRef<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            capacity(
                r#"{"type":"new_message","message":{"_id":"","conversationId":"","sender":"","content":"","contentType":"","seq":,"sentAt":""}}"#,
                &[
                    self.id,
                    self.conversation_id,
                    self.sender,
                    self.content,
                    self.content_type,
                    self.sent_at,
                ],
                &[self.seq],
            ) + optional_capacity("clientMessageId", self.client_message_id),
        );
        out.push_str(r#"{"type":"new_message","message":{"_id":"#);
        push_json_string(&mut out, self.id);
        push_field(&mut out, "conversationId", self.conversation_id);
        push_field(&mut out, "sender", self.sender);
        push_field(&mut out, "content", self.content);
        push_field(&mut out, "contentType", self.content_type);
        let _ = write!(out, r#","seq":{}"#, self.seq);
        push_field(&mut out, "sentAt", self.sent_at);
        if let Some(id) = self.client_message_id {
            push_field(&mut out, "clientMessageId", id);
        }
        out.push_str("}}");
        out
    }
}

/// A `message_sent` ack that borrows its fields, one per send: the same
/// JSON as [`ServerFrame::MessageSent`], byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct MessageSentRef<'a> {
    pub message_id: &'a str,
    pub conversation_id: &'a str,
    pub seq: i64,
    pub sent_at: &'a str,
    pub client_message_id: Option<&'a str>,
    pub duplicate: bool,
    pub request_id: Option<&'a str>,
}

impl MessageSentRef<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            capacity(
                r#"{"type":"message_sent","messageId":"","conversationId":"","seq":,"sentAt":"","duplicate":}"#,
                &[
                    self.message_id,
                    self.conversation_id,
                    self.sent_at,
                    if self.duplicate { "true" } else { "false" },
                ],
                &[self.seq],
            ) + optional_capacity("clientMessageId", self.client_message_id)
                + optional_capacity("requestId", self.request_id),
        );
        out.push_str(r#"{"type":"message_sent""#);
        push_field(&mut out, "messageId", self.message_id);
        push_field(&mut out, "conversationId", self.conversation_id);
        let _ = write!(out, r#","seq":{}"#, self.seq);
        push_field(&mut out, "sentAt", self.sent_at);
        if let Some(id) = self.client_message_id {
            push_field(&mut out, "clientMessageId", id);
        }
        let _ = write!(out, r#","duplicate":{}"#, self.duplicate);
        if let Some(id) = self.request_id {
            push_field(&mut out, "requestId", id);
        }
        out.push('}');
        out
    }
}

/// The length of a frame: its skeleton (the JSON with every value left
/// out) plus its values. Exact unless a value needs escaping, so the frame
/// is built in one allocation of its own size, which `Bytes` then takes
/// over as it is: a frame that grew past its estimate cost a reallocation,
/// and a spare capacity another allocation in `Bytes::from` (for the
/// receipts, ~5 % of the samples in a `fanout` profile at 120,000
/// deliveries/s).
fn capacity(skeleton: &str, strings: &[&str], numbers: &[i64]) -> usize {
    let digits = |n: i64| {
        n.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
    };
    skeleton.len()
        + strings.iter().map(|s| s.len()).sum::<usize>()
        + numbers
            .iter()
            .map(|&n| digits(n) + usize::from(n < 0))
            .sum::<usize>()
}

/// The length of an optional `,"key":"value"`.
fn optional_capacity(key: &str, value: Option<&str>) -> usize {
    value.map_or(0, |v| key.len() + v.len() + 6)
}

/// Appends `,"key":` and `value` as a JSON string.
fn push_field(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_json_string(out, value);
}

/// Appends `s` as a JSON string. Ids and times need no escaping; anything
/// else goes through serde_json.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
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
    fn a_borrowed_receipt_is_the_same_json_as_the_owned_one() {
        let owned = ServerFrame::MessageDelivered {
            message_id: "m\"1".into(),
            conversation_id: "c1".into(),
            user_id: "bob".into(),
            delivered_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let borrowed = MessageDeliveredRef::new("m\"1", "c1", "bob", "2026-01-01T00:00:00.000Z");
        assert_eq!(borrowed.to_json(), owned.to_json());
        let plain = ServerFrame::MessageDelivered {
            message_id: "m1".into(),
            conversation_id: "c\u{1}\\".into(),
            user_id: "bøb".into(),
            delivered_at: "t".into(),
        };
        let borrowed = MessageDeliveredRef::new("m1", "c\u{1}\\", "bøb", "t");
        assert_eq!(borrowed.to_json(), plain.to_json());
        let clean = MessageDeliveredRef::new("m1", "c1", "bob", "t");
        assert_eq!(
            clean.to_json(),
            r#"{"type":"message_delivered","messageId":"m1","conversationId":"c1","userId":"bob","deliveredAt":"t"}"#
        );
    }

    #[test]
    fn a_borrowed_new_message_is_the_same_json_as_the_owned_one() {
        let cases = [
            ("m1", "c1", "hello", Some("k1")),
            ("m2", "c\u{1}", "a \"quote\", a \\ and a\nnewline, é", None),
            ("m\"3", "c3", "", Some("k\t3")),
        ];
        for (id, conversation, content, client_id) in cases {
            let borrowed = NewMessageRef {
                id,
                conversation_id: conversation,
                sender: "alice",
                content,
                content_type: "text",
                seq: -42,
                sent_at: "2026-01-01T00:00:00.000Z",
                client_message_id: client_id,
            };
            let owned = ServerFrame::NewMessage {
                message: WireMessage {
                    id: id.into(),
                    conversation_id: conversation.into(),
                    sender: "alice".into(),
                    content: content.into(),
                    content_type: "text".into(),
                    seq: -42,
                    sent_at: "2026-01-01T00:00:00.000Z".into(),
                    client_message_id: client_id.map(Into::into),
                },
                replay: false,
            };
            assert_eq!(borrowed.to_json(), owned.to_json());
        }
    }

    #[test]
    fn a_borrowed_ack_is_the_same_json_as_the_owned_one() {
        let cases = [
            (Some("k1"), false, Some("r1")),
            (None, true, None),
            (Some("k\"2"), true, Some("r\\2")),
        ];
        for (client_id, duplicate, request_id) in cases {
            let borrowed = MessageSentRef {
                message_id: "m1",
                conversation_id: "c1",
                seq: 7,
                sent_at: "t",
                client_message_id: client_id,
                duplicate,
                request_id,
            };
            let owned = ServerFrame::MessageSent {
                message_id: "m1".into(),
                conversation_id: "c1".into(),
                seq: 7,
                sent_at: "t".into(),
                client_message_id: client_id.map(Into::into),
                duplicate,
                request_id: request_id.map(Into::into),
            };
            assert_eq!(borrowed.to_json(), owned.to_json());
        }
    }

    /// A frame that needs no escapes is allocated at exactly its length:
    /// one allocation, which `Bytes::from` keeps as it is.
    #[test]
    fn borrowed_frames_are_allocated_at_their_exact_size() {
        let mut frames = Vec::new();
        for seq in [0, 7, 10, 99, 12_345, i64::MAX, -1, i64::MIN] {
            for id in [None, Some("k1")] {
                frames.push(
                    NewMessageRef {
                        id: "m1",
                        conversation_id: "c1",
                        sender: "alice",
                        content: "hello",
                        content_type: "text",
                        seq,
                        sent_at: "2026-01-01T00:00:00.000Z",
                        client_message_id: id,
                    }
                    .to_json(),
                );
                for duplicate in [false, true] {
                    frames.push(
                        MessageSentRef {
                            message_id: "m1",
                            conversation_id: "c1",
                            seq,
                            sent_at: "t",
                            client_message_id: id,
                            duplicate,
                            request_id: id.map(|_| "r1"),
                        }
                        .to_json(),
                    );
                }
            }
        }
        frames.push(MessageDeliveredRef::new("m1", "c1", "bob", "t").to_json());
        for frame in frames {
            assert_eq!(frame.capacity(), frame.len(), "{frame}");
        }
    }

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
