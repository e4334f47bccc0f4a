//! The ingest Lambda: verifies Svix webhooks and queues them on SQS.

use nectar_webhooks::adapters::payloads::S3PayloadStore;
use nectar_webhooks::adapters::{aws, lambda_ingest, secrets, sqs};
use nectar_webhooks::config::{self, ConfigError, IngestConfig};
use nectar_webhooks::core::clock::SystemClock;
use nectar_webhooks::core::ingest::Ingest;
use nectar_webhooks::{cli, telemetry};
use std::process::ExitCode;
use std::sync::Arc;

// One invocation at a time: no worker threads to start at every cold start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if let Some(code) = cli::outside_lambda("ingest", "ingest") {
        return code;
    }
    telemetry::init_lambda();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        // Display, not Debug: `WEBHOOK_SECRET is not set`, not `Missing("WEBHOOK_SECRET")`.
        Err(err) => {
            eprintln!("ingest: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let sdk = aws::sdk_config().await.inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;
    let (settings, queue_url) =
        configure(&sdk).await.inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;
    let queue = sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url);
    let mut ingest = Ingest::new(settings.sources(), queue, settings.limits, Arc::new(SystemClock));
    if let Some(bucket) = &settings.claim_check_bucket {
        ingest = ingest.with_payload_store(Arc::new(S3PayloadStore::new(aws_sdk_s3::Client::new(&sdk), bucket)));
    }
    lambda_ingest::run(ingest).await
}

/// Reads the configuration once; the secret comes from Secrets Manager when
/// `WEBHOOK_SECRET_ARN` is set (the deployed stack), else from `WEBHOOK_SECRET`.
async fn configure(sdk: &aws_config::SdkConfig) -> Result<(IngestConfig, String), ConfigError> {
    let secret = match std::env::var(config::WEBHOOK_SECRET_ARN).ok().filter(|arn| !arn.is_empty()) {
        Some(arn) => Some(secrets::fetch(&aws_sdk_secretsmanager::Client::new(sdk), &arn).await?),
        None => None,
    };
    let settings = IngestConfig::from_lookup(|name| match (name, &secret) {
        (config::WEBHOOK_SECRET, Some(secret)) => Some(secret.clone()),
        _ => std::env::var(name).ok(),
    })?;
    Ok((settings, config::required(config::QUEUE_URL)?))
}
