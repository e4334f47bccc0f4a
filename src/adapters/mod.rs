//! Adapters: thin layers between the core and the outside world.
//!
//! - [`lambda_ingest`], [`lambda_router`]: the two Lambda entry points.
//! - [`archive`]: the archive's backends (Firehose, a directory) and its reader.
//! - [`aws`]: the SDK configuration (time limits) all AWS clients share.
//! - [`sqs`]: the ingest queue on Amazon SQS.
//! - [`idempotency`]: the DynamoDB store behind once-per-destination delivery.
//! - [`destinations`]: where routed webhooks go (SQS, EventBridge, typed handlers, files, stdout).
//! - [`payloads`]: S3 as the claim-check store for large payloads.
//! - [`secrets`]: the signing secret from AWS Secrets Manager.
//! - [`local`]: `nectar-webhooks serve`, both sides in one process.
//! - [`metrics`]: CloudWatch metrics (Embedded Metric Format) from the log events.

pub mod archive;
pub mod aws;
pub mod destinations;
pub mod idempotency;
pub mod lambda_ingest;
pub mod lambda_router;
pub mod local;
pub mod metrics;
pub mod payloads;
pub mod secrets;
pub mod sqs;
