//! Remembering which (webhook, destination) pairs were already delivered, so
//! that Svix's and SQS's at-least-once deliveries reach each destination once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a delivery is remembered by default: past Svix's retry span
/// (about 28 hours) and typical manual replays.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The store could not be read or written; the record is retried.
#[derive(Debug, Error)]
#[error("idempotency store: {0}")]
pub struct StoreError(pub String);

/// Keys of deliveries already made.
pub trait SeenStore: Send + Sync {
    fn contains(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn insert(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A process-local store: exact within one process (local mode, one warm
/// Lambda container), bounded in memory by `capacity` and `ttl`.
#[derive(Debug)]
pub struct InMemorySeen {
    entries: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    capacity: usize,
}

impl InMemorySeen {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), ttl, capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for InMemorySeen {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, 100_000)
    }
}

impl SeenStore for InMemorySeen {
    async fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().get(key).is_some_and(|at| at.elapsed() < self.ttl))
    }

    async fn insert(&self, key: &str) -> Result<(), StoreError> {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, at| at.elapsed() < self.ttl);
        }
        if entries.len() >= self.capacity {
            let oldest = entries.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(key.to_owned(), Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_until_the_ttl_passes() {
        let store = InMemorySeen::new(Duration::from_millis(50), 10);
        store.insert("a").await.unwrap();
        assert!(store.contains("a").await.unwrap());
        assert!(!store.contains("b").await.unwrap());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!store.contains("a").await.unwrap());
    }

    #[tokio::test]
    async fn stays_within_capacity() {
        let store = InMemorySeen::new(DEFAULT_TTL, 3);
        for key in ["a", "b", "c", "d"] {
            store.insert(key).await.unwrap();
        }
        assert_eq!(store.lock().len(), 3);
        assert!(store.contains("d").await.unwrap());
    }
}
