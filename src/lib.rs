//! nectar-webhooks: a serverless receiver for Nectar's Svix webhooks.
//!
//! [`core`] holds the webhook logic and knows nothing of Lambda or AWS;
//! [`adapters`] connect it to Lambda, SQS, files and a local HTTP server;
//! [`config`] reads the environment once at start-up; [`cli`] is the
//! `nectar-webhooks` command.

#[cfg(feature = "adapters")]
pub mod adapters;
#[cfg(feature = "adapters")]
pub mod cli;
pub mod config;
pub mod core;
#[cfg(feature = "adapters")]
pub mod telemetry;
