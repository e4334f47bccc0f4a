//! The ingest Lambda: verifies Svix webhooks and queues them on SQS.

use nectar_webhooks::adapters::{lambda_ingest, sqs};
use nectar_webhooks::config::{self, IngestConfig};
use nectar_webhooks::core::clock::SystemClock;
use nectar_webhooks::core::ingest::Ingest;
use nectar_webhooks::telemetry;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_lambda();
    let (settings, queue_url) = IngestConfig::from_env()
        .and_then(|settings| Ok((settings, config::required(config::QUEUE_URL)?)))
        .inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;
    let queue = sqs::SqsQueue::new(sqs::client().await, queue_url);
    let ingest = Ingest::new(settings.sources(), queue, settings.limits, Arc::new(SystemClock));
    lambda_ingest::run(ingest).await
}
