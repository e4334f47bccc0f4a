//! The router Lambda: SQS batches in, partial batch failures out.

use crate::adapters::archive::firehose::FirehoseArchive;
use crate::adapters::destinations::{Check, Destinations};
use crate::adapters::idempotency::{DynamoSeen, IdempotencyStore};
use crate::adapters::payloads::S3PayloadStore;
use crate::adapters::{aws, sqs};
use crate::config::RouterConfig;
use crate::core::claim_check::PayloadStore;
use crate::core::dedup::{DEFAULT_LEASE, InMemorySeen, SeenStore};
use crate::core::envelope::{ATTR_FAILED_RECEIVES, ATTR_FAILURE_REASON, ATTR_ID, QueueMessage};
use crate::core::outcome::Outcome;
use crate::core::router::{Deliver, Failure, Record, Router};
use crate::core::routing::{Destination, is_fifo_queue_url};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;
use tracing::error;

/// Where records go that failed too often, with the reason attached. SQS's
/// own redrive policy (the same `maxReceiveCount`) remains the backstop.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub max_receive_count: u32,
}

/// Routes SQS batches. Claim-checked payloads are fetched by the router, from
/// its payload store ([`Router::with_payload_store`]).
pub struct SqsBatchHandler<D, S> {
    pub router: Router<D, S>,
    pub dead_letters: Option<DeadLetters>,
}

impl<D: Deliver, S: SeenStore> SqsBatchHandler<D, S> {
    /// Routes one batch; only the records that failed are reported, so SQS
    /// redelivers just those. A record failing for the last allowed time is
    /// moved to the dead-letter queue with its reason instead.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let records = event.records.iter().map(record).collect();
        let failures = self.router.route_batch(records).await;
        let mut response = SqsBatchResponse::default();
        for failure in failures {
            let message = event.records.iter().find(|m| m.message_id.as_deref() == Some(failure.id.as_str()));
            if let Some(message) = message
                && self.dead_letter(message, &failure).await
            {
                continue;
            }
            let mut item = BatchItemFailure::default();
            item.item_identifier = failure.id;
            response.batch_item_failures.push(item);
        }
        response
    }

    /// Moves a record that has used its last receive; true if it was moved.
    async fn dead_letter(&self, message: &SqsMessage, failure: &Failure) -> bool {
        let Some(dead_letters) = &self.dead_letters else { return false };
        let receives: u32 = message.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(0);
        if receives < dead_letters.max_receive_count {
            return false;
        }
        let mut attributes: Vec<(&'static str, String)> = message
            .message_attributes
            .iter()
            .filter_map(|(name, value)| {
                Some((crate::core::envelope::known_attribute(name)?, value.string_value.clone()?))
            })
            .collect();
        attributes.push((ATTR_FAILURE_REASON, truncate(&failure.reason, 1024)));
        attributes.push((ATTR_FAILED_RECEIVES, receives.to_string()));
        let webhook_id =
            attributes.iter().find(|(name, _)| *name == ATTR_ID).map_or("-", |(_, id)| id.as_str()).to_owned();
        let copy = QueueMessage { body: message.body.clone().unwrap_or_default(), attributes };
        let fifo = is_fifo_queue_url(&dead_letters.queue_url).then(|| dead_letter_fifo_ids(message, &failure.id));
        match sqs::send(&dead_letters.client, &dead_letters.queue_url, copy, fifo).await {
            Ok(()) => {
                error!(
                    outcome = Outcome::DeadLettered.as_str(),
                    webhook_id,
                    message_id = %failure.id,
                    receives,
                    reason = %failure.reason,
                    "webhook dead-lettered"
                );
                true
            }
            Err(err) => {
                error!(webhook_id, message_id = %failure.id, error = %err, "could not dead-letter; SQS's redrive policy will");
                false
            }
        }
    }
}

/// A FIFO dead-letter queue (the DLQ of a FIFO ingest queue must be one)
/// takes the copy in the record's own message group, de-duplicated by the
/// record's message id, so copying it twice leaves one.
fn dead_letter_fifo_ids(message: &SqsMessage, message_id: &str) -> (String, String) {
    let group = message.attributes.get("MessageGroupId").map_or(message_id, String::as_str);
    (group.to_owned(), message_id.to_owned())
}

/// A record of the batch; a claim-checked payload stays in its store until
/// the router reaches the record.
fn record(message: &SqsMessage) -> Record {
    let attribute = |name: &str| message.message_attributes.get(name).and_then(|a| a.string_value.as_deref());
    let id = message.message_id.clone().unwrap_or_default();
    let sent = message
        .attributes
        .get("SentTimestamp")
        .and_then(|millis| millis.parse().ok())
        .and_then(chrono::DateTime::from_timestamp_millis);
    Record::from_queue_message(id, message.body.as_deref().unwrap_or_default(), attribute).received_by_default(sent)
}

fn truncate(text: &str, max: usize) -> String {
    let end = (0..=max.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    text[..end].to_owned()
}

/// Runs a router Lambda until the runtime stops it.
pub async fn run<D: Deliver + 'static, S: SeenStore + 'static>(
    handler: SqsBatchHandler<D, S>,
) -> Result<(), lambda_runtime::Error> {
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, std::convert::Infallible>(handler.handle(event.payload).await) }
    }))
    .await
}

/// Builds the router from the environment ([`RouterConfig`]) and runs it.
/// `customise` registers typed handlers (see `examples/typed_handler.rs`).
pub async fn run_from_env(customise: impl FnOnce(Destinations) -> Destinations) -> Result<(), lambda_runtime::Error> {
    let config = RouterConfig::from_env().inspect_err(|err| error!(error = %err, "invalid configuration"))?;
    let sdk = aws::sdk_config().await.inspect_err(|err| error!(error = %err, "invalid configuration"))?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut destinations = Destinations::default().with_sqs(sqs.clone());
    if config.routes.destinations().any(|d| matches!(d, Destination::EventBridge(_))) {
        destinations = destinations.with_eventbridge(aws_sdk_eventbridge::Client::new(&sdk));
    }
    let payload_store: Option<Arc<dyn PayloadStore>> = config
        .claim_check_bucket
        .map(|bucket| Arc::new(S3PayloadStore::new(aws_sdk_s3::Client::new(&sdk), bucket)) as Arc<dyn PayloadStore>);
    if let Some(store) = &payload_store {
        destinations = destinations.with_payload_store(Arc::clone(store), config.max_queue_message_bytes);
    }
    let destinations = customise(destinations);
    destinations
        .check(&config.routes, Check::Configured)
        .await
        .inspect_err(|err| error!(error = %err, "invalid configuration"))?;
    let store = match config.idempotency_table {
        Some(table) => IdempotencyStore::Dynamo(DynamoSeen::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            table,
            config.idempotency_ttl,
            DEFAULT_LEASE,
        )),
        None => IdempotencyStore::Memory(InMemorySeen::new(config.idempotency_ttl, DEFAULT_LEASE, 100_000)),
    };
    let dead_letters = config.dead_letter_queue_url.map(|queue_url| DeadLetters {
        client: sqs,
        queue_url,
        max_receive_count: config.max_receive_count,
    });
    let mut router = Router::new(config.routes, destinations, store);
    if config.local_invocation {
        router = router.without_age_limit();
    }
    if let Some(store) = payload_store {
        router = router.with_payload_store(store);
    }
    if let Some(stream) = config.archive_stream {
        router = router.with_archive(Arc::new(FirehoseArchive::new(aws_sdk_firehose::Client::new(&sdk), stream)));
    }
    run(SqsBatchHandler { router, dead_letters }).await
}
