//! Remembering which (webhook, destination) pairs were delivered, so that
//! Svix's and SQS's at-least-once deliveries reach each destination once.
//!
//! A delivery first *claims* its key; the claim is a lease that expires, so a
//! crash mid-delivery is retried rather than lost. Success *completes* the
//! key (remembered for the TTL); failure *releases* it. Each claim has an
//! owner ([`Lease`]): only the delivery holding it completes or releases the
//! key, so one whose lease ran out cannot end another's live claim.

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

/// How long a claim blocks other deliveries of the same key: the router
/// queue's visibility timeout (180 s in `template.yaml`). SQS requires that
/// to be at least the function's timeout (30 s), so a live invocation always
/// finishes inside its lease, however far its timeout is raised: only a
/// crashed delivery's claim ever expires, and its record comes back only
/// after the visibility timeout anyway. It is also how long a key stays
/// blocked when a delivery succeeded but could not be completed (see
/// [`crate::core::router`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(180);

/// The store could not be read or written, or a claim was no longer ours.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The record is retried.
    #[error("idempotency store: {0}")]
    Unavailable(String),
    /// The lease ran out and another delivery claimed or completed the key.
    #[error("idempotency store: the claim on {0} expired and is now another delivery's")]
    LeaseLost(String),
}

/// A claim's owner: a random token that completing or releasing the key
/// must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(String);

impl Lease {
    /// A fresh owner: 128 random bits, as hex.
    pub fn new() -> Result<Self, StoreError> {
        use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Unavailable("no random numbers for a lease owner".into()))?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub fn owner(&self) -> &str {
        &self.0
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody has delivered this; go ahead, then complete or release with
    /// this lease.
    Acquired(Lease),
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
    /// Marks the key delivered, if `lease` still owns it (or nobody does);
    /// [`StoreError::LeaseLost`] if another delivery does.
    fn complete(&self, key: &str, lease: &Lease) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Frees the key for another delivery, if `lease` still owns it; a
    /// claim that is no longer ours is left alone.
    fn release(&self, key: &str, lease: &Lease) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims `key` for `owner`, which the router shares between the claims
    /// of one wave so that [`Self::complete_all`] can remember them together.
    /// By default the same as [`Self::claim`]: a store that completes key by
    /// key has no use for a shared owner.
    fn claim_as(&self, key: &str, _owner: &Lease) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        self.claim(key)
    }

    /// Marks delivered every key of `done`, each with the lease its claim
    /// returned; one result per key. The router hands over all the keys a
    /// wave delivered in one call. By default, each is completed on its own
    /// ([`Self::complete`]).
    fn complete_all<'a>(
        &'a self,
        done: &'a [(String, Lease)],
    ) -> impl Future<Output = Vec<Result<(), StoreError>>> + Send + 'a {
        futures_util::future::join_all(done.iter().map(|(key, lease)| self.complete(key, lease)))
    }
}

#[derive(Debug, Clone)]
enum State {
    Delivering { until: Instant, owner: Lease },
    Delivered { until: Instant },
}

impl State {
    fn until(&self) -> Instant {
        match self {
            Self::Delivering { until, .. } | Self::Delivered { until } => *until,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.until() <= now
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
                .min_by_key(|(_, state)| state.until())
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let lease = Lease::new()?;
        entries.insert(key.to_owned(), State::Delivering { until: now + self.lease, owner: lease.clone() });
        Ok(Claim::Acquired(lease))
    }

    async fn complete(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(State::Delivering { owner, .. }) if owner == lease => {}
            Some(_) => return Err(StoreError::LeaseLost(key.to_owned())),
            None => {}
        }
        entries.insert(key.to_owned(), State::Delivered { until: Instant::now() + self.ttl });
        Ok(())
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        let mut entries = self.lock();
        if matches!(entries.get(key), Some(State::Delivering { owner, .. }) if owner == lease) {
            entries.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn acquire(store: &InMemorySeen, key: &str) -> Lease {
        match store.claim(key).await.unwrap() {
            Claim::Acquired(lease) => lease,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_claimed_key_is_in_progress_until_completed_or_released() {
        let store = InMemorySeen::default();
        let lease = acquire(&store, "a").await;
        assert_eq!(store.claim("a").await.unwrap(), Claim::InProgress);
        store.release("a", &lease).await.unwrap();
        let lease = acquire(&store, "a").await;
        store.complete("a", &lease).await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::AlreadyDelivered);
    }

    #[tokio::test]
    async fn every_claim_has_its_own_owner() {
        let store = InMemorySeen::default();
        let (a, b) = (acquire(&store, "a").await, acquire(&store, "b").await);
        assert_ne!(a, b);
        assert_eq!(a.owner().len(), 32);
    }

    #[tokio::test]
    async fn a_delivery_whose_lease_ran_out_cannot_end_the_next_ones_claim() {
        let store = InMemorySeen::new(DEFAULT_TTL, Duration::ZERO, 10);
        let stale = acquire(&store, "a").await;
        let live = acquire(&store, "a").await;
        store.release("a", &stale).await.unwrap();
        assert!(matches!(store.lock().get("a"), Some(State::Delivering { owner, .. }) if *owner == live));
        assert!(matches!(store.complete("a", &stale).await, Err(StoreError::LeaseLost(key)) if key == "a"));
        store.complete("a", &live).await.unwrap();
        store.release("a", &stale).await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::AlreadyDelivered);
    }

    #[tokio::test]
    async fn an_abandoned_claim_expires_so_the_delivery_is_retried() {
        let store = InMemorySeen::new(DEFAULT_TTL, Duration::ZERO, 10);
        acquire(&store, "a").await;
        acquire(&store, "a").await;
    }

    #[tokio::test]
    async fn deliveries_are_forgotten_after_the_ttl() {
        let store = InMemorySeen::new(Duration::ZERO, DEFAULT_LEASE, 10);
        let lease = acquire(&store, "a").await;
        store.complete("a", &lease).await.unwrap();
        acquire(&store, "a").await;
    }

    #[tokio::test]
    async fn stays_within_capacity() {
        let store = InMemorySeen::new(DEFAULT_TTL, DEFAULT_LEASE, 3);
        for key in ["a", "b", "c", "d"] {
            let lease = acquire(&store, key).await;
            store.complete(key, &lease).await.unwrap();
        }
        assert_eq!(store.lock().len(), 3);
        assert_eq!(store.claim("d").await.unwrap(), Claim::AlreadyDelivered);
    }
}
