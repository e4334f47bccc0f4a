//! Adapters: thin layers between the core and the outside world.
//!
//! - [`lambda_ingest`], [`lambda_router`]: the two Lambda entry points.
//! - [`sqs`]: the ingest queue on Amazon SQS.
//! - [`destinations`]: where routed webhooks go (SQS, files, stdout).
//! - [`local`]: `nectar-webhooks serve`, both sides in one process.

pub mod destinations;
pub mod lambda_ingest;
pub mod lambda_router;
pub mod local;
pub mod sqs;
