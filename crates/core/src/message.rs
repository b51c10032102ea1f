//! Messages: what a client may send, what the store keeps, and the limits.

use crate::ids::{ConversationId, MessageId, UserId};

/// Bounds on what a client may put in a message. Configurable per server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `content`, in UTF-8 bytes (default 16 KiB).
    pub max_content_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: 16 * 1024,
        }
    }
}

/// Why a message is refused before it reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("content must not be empty")]
    EmptyContent,
    #[error("content is {size} bytes; the limit is {max}")]
    ContentTooLarge { size: usize, max: usize },
    #[error("contentType must be a short token like 'text' or 'image/png'")]
    BadContentType,
    #[error("clientMessageId must be 1 to 128 characters")]
    BadClientMessageId,
}

impl Limits {
    /// Checks a message's fields; the store never sees a message that fails this.
    pub fn check(
        &self,
        content: &str,
        content_type: &str,
        client_message_id: Option<&str>,
    ) -> Result<(), MessageError> {
        if content.is_empty() {
            return Err(MessageError::EmptyContent);
        }
        if content.len() > self.max_content_bytes {
            return Err(MessageError::ContentTooLarge {
                size: content.len(),
                max: self.max_content_bytes,
            });
        }
        let token_ok = !content_type.is_empty()
            && content_type.len() <= 64
            && content_type.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'.' | b'-' | b'_')
            });
        if !token_ok {
            return Err(MessageError::BadContentType);
        }
        if let Some(id) = client_message_id
            && (id.is_empty() || id.chars().count() > 128)
        {
            return Err(MessageError::BadClientMessageId);
        }
        Ok(())
    }
}

/// A validated message on its way into the store; `seq` is assigned there.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub sender: UserId,
    pub content: String,
    pub content_type: String,
    pub client_message_id: Option<String>,
    /// Epoch milliseconds, set when the server accepted the send.
    pub sent_at: i64,
}

/// A committed message: `seq` is its gapless position in the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub seq: i64,
    pub sender: UserId,
    pub content: String,
    pub content_type: String,
    pub client_message_id: Option<String>,
    pub sent_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let l = Limits::default();
        assert_eq!(l.check("hi", "text", None), Ok(()));
        assert_eq!(l.check("", "text", None), Err(MessageError::EmptyContent));
        assert!(matches!(
            l.check(&"x".repeat(16 * 1024 + 1), "text", None),
            Err(MessageError::ContentTooLarge { .. })
        ));
        assert_eq!(
            l.check(&"x".repeat(16 * 1024), "image/png", Some("c1")),
            Ok(())
        );
        assert_eq!(
            l.check("hi", "te xt", None),
            Err(MessageError::BadContentType)
        );
        assert_eq!(l.check("hi", "", None), Err(MessageError::BadContentType));
        assert_eq!(
            l.check("hi", "text", Some("")),
            Err(MessageError::BadClientMessageId)
        );
    }
}
