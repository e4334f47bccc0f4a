//! The port the ingest side writes to: a durable queue.

use crate::core::envelope::QueueMessage;
use std::future::Future;
use thiserror::Error;

/// A queue that accepted nothing; the webhook must be answered with a 5xx so
/// the sender retries.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// Somewhere verified webhooks are stored durably before they are acknowledged.
pub trait Queue: Send + Sync {
    /// Resolves only once the queue has accepted the message.
    fn enqueue(&self, message: QueueMessage) -> impl Future<Output = Result<(), QueueError>> + Send;
}
