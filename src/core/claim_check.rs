//! Claim checks: payloads too large for a queue message are stored elsewhere
//! and the message carries a reference to them.

use crate::core::envelope::{ATTR_CLAIM_CHECK, Envelope, QueueMessage};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use thiserror::Error;

/// The store could not be written or read: ingest answers 503 (Svix
/// retries), the router retries the record.
#[derive(Debug, Error)]
#[error("payload store: {0}")]
pub struct ClaimCheckError(pub String);

/// A boxed future, so stores can be shared as trait objects.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClaimCheckError>> + Send + 'a>>;

/// Where large payloads are kept (S3 when deployed).
pub trait PayloadStore: Send + Sync {
    /// Stores `body` under `key`; returns the reference a message carries.
    fn put<'a>(&'a self, key: &'a str, body: &'a [u8]) -> StoreFuture<'a, String>;
    /// The payload a reference points to.
    fn get<'a>(&'a self, reference: &'a str) -> StoreFuture<'a, Bytes>;
}

/// The key a webhook's payload is stored under: the same for every copy of
/// the same webhook, so retries overwrite rather than accumulate.
pub fn key_for(envelope: &Envelope) -> String {
    let id: String =
        envelope.id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("payloads/{}/{id}", envelope.source)
}

/// The message to queue in place of one that is too large: no body, the
/// same attributes, and the reference.
pub fn pointer_message(message: &QueueMessage, reference: String) -> QueueMessage {
    let mut attributes: Vec<(&'static str, String)> = message
        .attributes
        .iter()
        .filter(|(name, _)| *name != crate::core::envelope::ATTR_BODY_ENCODING)
        .cloned()
        .collect();
    attributes.push((ATTR_CLAIM_CHECK, reference));
    QueueMessage { body: String::new(), attributes }
}

/// Puts the payload of `message` in `store` if the message is over `limit`
/// bytes; returns what to send.
pub async fn fit(
    store: Option<&dyn PayloadStore>,
    envelope: &Envelope,
    message: QueueMessage,
    limit: usize,
) -> Result<Result<QueueMessage, QueueMessage>, ClaimCheckError> {
    if message.size() <= limit {
        return Ok(Ok(message));
    }
    let Some(store) = store else { return Ok(Err(message)) };
    let reference = store.put(&key_for(envelope), &envelope.body).await?;
    Ok(Ok(pointer_message(&message, reference)))
}

/// Restores the body of an envelope read from a pointer message.
pub async fn resolve(
    store: Option<&dyn PayloadStore>,
    mut envelope: Envelope,
    reference: Option<&str>,
) -> Result<Envelope, ClaimCheckError> {
    if let Some(reference) = reference {
        let store = store.ok_or_else(|| ClaimCheckError(format!("{reference}: no payload store configured")))?;
        envelope.body = store.get(reference).await?;
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct MemoryStore(Mutex<HashMap<String, Bytes>>);

    impl PayloadStore for MemoryStore {
        fn put<'a>(&'a self, key: &'a str, body: &'a [u8]) -> StoreFuture<'a, String> {
            Box::pin(async move {
                self.0.lock().unwrap().insert(key.to_owned(), Bytes::copy_from_slice(body));
                Ok(format!("mem://{key}"))
            })
        }
        fn get<'a>(&'a self, reference: &'a str) -> StoreFuture<'a, Bytes> {
            Box::pin(async move {
                let key = reference.trim_start_matches("mem://");
                self.0.lock().unwrap().get(key).cloned().ok_or_else(|| ClaimCheckError(format!("{key}: missing")))
            })
        }
    }

    fn envelope(body: &[u8]) -> Envelope {
        Envelope { source: "nectar".into(), id: "msg/1 x".into(), timestamp: 1, body: Bytes::copy_from_slice(body) }
    }

    #[tokio::test]
    async fn large_payloads_travel_by_reference_and_come_back_whole() {
        let store = MemoryStore::default();
        let original = envelope(&[b'a'; 2048]);
        let sent = fit(Some(&store), &original, original.to_queue_message(), 1024).await.unwrap().unwrap();
        assert!(sent.body.is_empty());
        let reference = sent.attribute(ATTR_CLAIM_CHECK).unwrap().to_owned();
        assert_eq!(reference, "mem://payloads/nectar/msg_1_x");
        let read = Envelope::from_queue_message(&sent.body, |name| sent.attribute(name)).unwrap();
        assert_eq!(resolve(Some(&store), read, Some(&reference)).await.unwrap(), original);
    }

    #[tokio::test]
    async fn small_payloads_stay_inline_and_without_a_store_large_ones_are_refused() {
        let small = envelope(b"{}");
        assert!(fit(None, &small, small.to_queue_message(), 1024).await.unwrap().is_ok());
        let large = envelope(&[b'a'; 2048]);
        assert!(fit(None, &large, large.to_queue_message(), 1024).await.unwrap().is_err());
    }
}
