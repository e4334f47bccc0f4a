//! The embedded queue of local mode: SQS's contract (at-least-once, retries,
//! a dead-letter list after too many receives) in one process, in memory.

use crate::adapters::payloads;
use crate::core::claim_check::PayloadStore;
use crate::core::dedup::SeenStore;
use crate::core::envelope::QueueMessage;
use crate::core::queue::{Queue, QueueError, Webhook};
use crate::core::router::{Deliver, Record, Router};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::error;

/// Receives after which a message is dead-lettered, as the template's redrive policy.
pub const MAX_RECEIVES: u32 = 5;

#[derive(Debug)]
struct Pending {
    message: QueueMessage,
    receives: u32,
}

/// The sending side, handed to ingest.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    sender: mpsc::Sender<Pending>,
}

/// The receiving side, consumed by [`EmbeddedWorker::run`].
#[derive(Debug)]
pub struct EmbeddedWorker {
    sender: mpsc::Sender<Pending>,
    receiver: mpsc::Receiver<Pending>,
    retry_delay: Duration,
    dead_letters: Arc<Mutex<Vec<QueueMessage>>>,
}

/// A queue holding at most `capacity` messages; a full queue refuses (503).
pub fn embedded_queue(capacity: usize, retry_delay: Duration) -> (EmbeddedQueue, EmbeddedWorker) {
    let (sender, receiver) = mpsc::channel(capacity);
    let worker = EmbeddedWorker { sender: sender.clone(), receiver, retry_delay, dead_letters: Arc::default() };
    (EmbeddedQueue { sender }, worker)
}

impl Queue for EmbeddedQueue {
    async fn enqueue(&self, message: QueueMessage, _: Webhook<'_>) -> Result<(), QueueError> {
        self.sender
            .try_send(Pending { message, receives: 0 })
            .map_err(|err| QueueError(format!("embedded queue: {err}")))
    }
}

impl EmbeddedWorker {
    /// Messages that failed [`MAX_RECEIVES`] times.
    pub fn dead_letters(&self) -> Arc<Mutex<Vec<QueueMessage>>> {
        Arc::clone(&self.dead_letters)
    }

    /// Routes messages one by one until the process ends, fetching
    /// claim-checked payloads from `payload_store` as the router Lambda does;
    /// failed ones are retried after a delay, then dead-lettered.
    pub async fn run<D: Deliver, S: SeenStore>(
        mut self,
        router: Arc<Router<D, S>>,
        payload_store: Arc<dyn PayloadStore>,
    ) {
        while let Some(mut pending) = self.receiver.recv().await {
            pending.receives += 1;
            let message = payloads::read_envelope(Some(payload_store.as_ref()), &pending.message.body, |name| {
                pending.message.attribute(name)
            })
            .await;
            let failed = router.route_batch(vec![Record { id: "embedded".into(), message, claim_check: None }]).await;
            if failed.is_empty() {
                continue;
            }
            if pending.receives >= MAX_RECEIVES {
                error!(
                    outcome = crate::core::outcome::Outcome::DeadLettered.as_str(),
                    webhook_id = pending.message.attribute(crate::core::envelope::ATTR_ID).unwrap_or("-"),
                    receives = pending.receives,
                    "webhook dead-lettered after too many failed deliveries"
                );
                self.dead_letters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pending.message);
                continue;
            }
            let sender = self.sender.clone();
            let delay = self.retry_delay * pending.receives;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if sender.send(pending).await.is_err() {
                    error!("embedded queue closed; a retried webhook was dropped at shutdown");
                }
            });
        }
    }
}
