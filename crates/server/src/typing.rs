//! Typing indicators: forwarded to the other members only, never stored,
//! throttled (one `isTyping: true` per user and conversation per throttle
//! interval while typing goes on) and expired (no `isTyping: false` within
//! the expiry, or the typer's last connection closed: the others get
//! `isTyping: false` from the server).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use natter_core::{ConversationId, UserId};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Typist {
    forwarded_at: Instant,
    expires_at: Instant,
}

#[derive(Debug)]
pub struct Typing {
    typists: Mutex<HashMap<(ConversationId, UserId), Typist>>,
    throttle: Duration,
    expiry: Duration,
}

impl Typing {
    pub fn new(throttle: Duration, expiry: Duration) -> Self {
        Self {
            typists: Mutex::default(),
            throttle,
            expiry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(ConversationId, UserId), Typist>> {
        self.typists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an indicator; returns whether to forward it.
    pub fn indicate(&self, conversation: &ConversationId, user: &UserId, is_typing: bool) -> bool {
        let key = (conversation.clone(), user.clone());
        let now = Instant::now();
        let mut typists = self.lock();
        if !is_typing {
            return typists.remove(&key).is_some();
        }
        match typists.get_mut(&key) {
            Some(typist) if now < typist.forwarded_at + self.throttle => {
                typist.expires_at = now + self.expiry;
                false
            }
            _ => {
                typists.insert(
                    key,
                    Typist {
                        forwarded_at: now,
                        expires_at: now + self.expiry,
                    },
                );
                true
            }
        }
    }

    /// Typists whose indicator expired: each needs an `isTyping: false`.
    pub fn expired(&self) -> Vec<(ConversationId, UserId)> {
        let now = Instant::now();
        let mut typists = self.lock();
        let gone: Vec<_> = typists
            .iter()
            .filter(|(_, t)| t.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            typists.remove(key);
        }
        gone
    }

    /// The user's last connection closed: every conversation they were
    /// typing in needs an `isTyping: false`.
    pub fn user_gone(&self, user: &UserId) -> Vec<ConversationId> {
        let mut typists = self.lock();
        let gone: Vec<_> = typists
            .keys()
            .filter(|(_, u)| u == user)
            .map(|(c, _)| c.clone())
            .collect();
        for conversation in &gone {
            typists.remove(&(conversation.clone(), user.clone()));
        }
        gone
    }

    /// How often expiry should be checked.
    pub fn sweep_every(&self) -> Duration {
        (self.expiry / 6).max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (ConversationId, UserId) {
        (
            ConversationId::new_unchecked("c"),
            UserId::new_unchecked("u"),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_then_forwards_again() {
        let t = Typing::new(Duration::from_secs(2), Duration::from_secs(6));
        let (c, u) = ids();
        assert!(t.indicate(&c, &u, true));
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(!t.indicate(&c, &u, true), "within the throttle");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(t.indicate(&c, &u, true), "throttle passed");
        assert!(t.indicate(&c, &u, false), "stopping is always forwarded");
        assert!(!t.indicate(&c, &u, false), "nothing to stop");
    }

    #[tokio::test(start_paused = true)]
    async fn expires_unless_refreshed() {
        let t = Typing::new(Duration::from_secs(2), Duration::from_secs(6));
        let (c, u) = ids();
        t.indicate(&c, &u, true);
        tokio::time::advance(Duration::from_secs(5)).await;
        t.indicate(&c, &u, true); // throttled, but keeps it alive
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(t.expired().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.expired(), vec![(c, u)]);
    }

    #[test]
    fn a_leaving_user_stops_typing_everywhere() {
        let t = Typing::new(Duration::from_secs(2), Duration::from_secs(6));
        let u = UserId::new_unchecked("u");
        for c in ["a", "b"] {
            t.indicate(&ConversationId::new_unchecked(c), &u, true);
        }
        let mut gone = t.user_gone(&u);
        gone.sort();
        assert_eq!(gone.len(), 2);
        assert!(t.user_gone(&u).is_empty());
    }
}
