//! The port the ingest side writes to: a durable queue.

use crate::core::envelope::QueueMessage;
use std::future::Future;
use thiserror::Error;

/// A queue that accepted nothing; the webhook must be answered with a 5xx so
/// the sender retries.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// The webhook a message carries, for queues that need more than the
/// message: a FIFO queue groups by the resource the payload is about and
/// de-duplicates by webhook id, even when the message holds only a claim
/// check.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    pub source: &'a str,
    pub id: &'a str,
    pub body: &'a [u8],
}

/// Somewhere verified webhooks are stored durably before they are acknowledged.
pub trait Queue: Send + Sync {
    /// Resolves only once the queue has accepted the message.
    fn enqueue(
        &self,
        message: QueueMessage,
        webhook: Webhook<'_>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
