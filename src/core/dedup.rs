//! Remembering which (webhook, destination) pairs were delivered, so that
//! Svix's and SQS's at-least-once deliveries reach each destination once.
//!
//! A delivery first *claims* its key; the claim is a lease that expires, so a
//! crash mid-delivery is retried rather than lost. Success *completes* the
//! key (remembered for the TTL); failure *releases* it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a delivery is remembered by default (`IDEMPOTENCY_TTL_DAYS`):
/// longer than any copy of a webhook can still arrive. A message may wait 14
/// days in the ingest queue, and its dead-letter copy starts a fresh 14 days
/// in the dead-letter queue (28 in all), from which it can be re-sent by
/// hand; Svix's own retries span about 28 hours. The router refuses to
/// deliver anything older than this, less a margin (see
/// [`crate::core::router`]), so an older copy fails rather than duplicates.
pub const DEFAULT_TTL: Duration = Duration::from_secs(35 * 24 * 3600);

/// How long a claim blocks other deliveries of the same key; longer than the
/// router's timeout, so only a crashed delivery's claim ever expires.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The store could not be read or written; the record is retried.
#[derive(Debug, Error)]
#[error("idempotency store: {0}")]
pub struct StoreError(pub String);

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody has delivered this; go ahead, then complete or release.
    Acquired,
    /// Already delivered: skip it.
    AlreadyDelivered,
    /// Another delivery holds the lease: retry later.
    InProgress,
}

/// Keys of deliveries made or under way.
pub trait SeenStore: Send + Sync {
    /// How long a completed delivery is remembered: the router delivers
    /// nothing older, so a late copy is never taken for a new webhook.
    fn remembers(&self) -> Duration;
    fn claim(&self, key: &str) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    fn complete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn release(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[derive(Debug, Clone, Copy)]
enum State {
    Delivering { until: Instant },
    Delivered { until: Instant },
}

impl State {
    fn expired(&self, now: Instant) -> bool {
        match self {
            Self::Delivering { until } | Self::Delivered { until } => *until <= now,
        }
    }
}

/// A process-local store: exact within one process (local mode, one warm
/// Lambda container), bounded in memory by `capacity`.
#[derive(Debug)]
pub struct InMemorySeen {
    entries: Mutex<HashMap<String, State>>,
    ttl: Duration,
    lease: Duration,
    capacity: usize,
}

impl InMemorySeen {
    pub fn new(ttl: Duration, lease: Duration, capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), ttl, lease, capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for InMemorySeen {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_LEASE, 100_000)
    }
}

impl SeenStore for InMemorySeen {
    fn remembers(&self) -> Duration {
        self.ttl
    }

    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get(key) {
            Some(state) if !state.expired(now) => {
                return Ok(match state {
                    State::Delivered { .. } => Claim::AlreadyDelivered,
                    State::Delivering { .. } => Claim::InProgress,
                });
            }
            _ => {}
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, state| !state.expired(now));
        }
        if entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .filter(|(_, state)| matches!(state, State::Delivered { .. }))
                .min_by_key(|(_, state)| match state {
                    State::Delivering { until } | State::Delivered { until } => *until,
                })
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(key.to_owned(), State::Delivering { until: now + self.lease });
        Ok(Claim::Acquired)
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().insert(key.to_owned(), State::Delivered { until: Instant::now() + self.ttl });
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claimed_key_is_in_progress_until_completed_or_released() {
        let store = InMemorySeen::default();
        assert_eq!(store.claim("a").await.unwrap(), Claim::Acquired);
        assert_eq!(store.claim("a").await.unwrap(), Claim::InProgress);
        store.release("a").await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::Acquired);
        store.complete("a").await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::AlreadyDelivered);
    }

    #[tokio::test]
    async fn an_abandoned_claim_expires_so_the_delivery_is_retried() {
        let store = InMemorySeen::new(DEFAULT_TTL, Duration::from_millis(20), 10);
        assert_eq!(store.claim("a").await.unwrap(), Claim::Acquired);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(store.claim("a").await.unwrap(), Claim::Acquired);
    }

    #[tokio::test]
    async fn deliveries_are_forgotten_after_the_ttl() {
        let store = InMemorySeen::new(Duration::from_millis(20), DEFAULT_LEASE, 10);
        store.claim("a").await.unwrap();
        store.complete("a").await.unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(store.claim("a").await.unwrap(), Claim::Acquired);
    }

    #[tokio::test]
    async fn stays_within_capacity() {
        let store = InMemorySeen::new(DEFAULT_TTL, DEFAULT_LEASE, 3);
        for key in ["a", "b", "c", "d"] {
            store.claim(key).await.unwrap();
            store.complete(key).await.unwrap();
        }
        assert_eq!(store.lock().len(), 3);
        assert_eq!(store.claim("d").await.unwrap(), Claim::AlreadyDelivered);
    }
}
