//! The router Lambda: routes queued webhooks to their destinations by event type.

#![recursion_limit = "256"]

use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::{lambda_router, sqs};
use nectar_webhooks::config;
use nectar_webhooks::core::dedup::InMemorySeen;
use nectar_webhooks::core::router::Router;
use nectar_webhooks::telemetry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_lambda();
    let routes = config::routes_from_env().inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;
    let destinations = Destinations::new(Some(sqs::client().await));
    lambda_router::run(Router::new(routes, destinations, InMemorySeen::default())).await
}
