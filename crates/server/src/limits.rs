//! The send rate limit: a token bucket per user, shared by all of the
//! user's connections on this instance. Buckets outlive connections (a
//! reconnect does not refill one) and are pruned once full again.

use std::sync::{Mutex, MutexGuard};

use natter_core::UserId;
use tokio::time::Instant;

use crate::Map;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second.
    rate: f64,
    /// Bucket size: the burst a user may send at once.
    capacity: f64,
    buckets: Mutex<Map<UserId, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` 0 disables the limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_minute) / 60.0,
            capacity: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map<UserId, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token for `user`; false when the user is over the limit.
    pub fn allow(&self, user: &UserId) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() > 100_000 {
            let (rate, capacity) = (self.rate, self.capacity);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let limiter = RateLimiter::new(60, 10);
        let u = UserId::new_unchecked("u");
        let allowed = (0..20).filter(|_| limiter.allow(&u)).count();
        assert_eq!(allowed, 10, "the burst");
        tokio::time::advance(Duration::from_secs(3)).await;
        let allowed = (0..20).filter(|_| limiter.allow(&u)).count();
        assert_eq!(allowed, 3, "one per second after it");
        assert!(limiter.allow(&UserId::new_unchecked("other")), "per user");
    }

    #[test]
    fn zero_disables() {
        let limiter = RateLimiter::new(0, 10);
        let u = UserId::new_unchecked("u");
        assert!((0..1000).all(|_| limiter.allow(&u)));
    }
}
