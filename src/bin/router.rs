//! The router Lambda: routes queued webhooks to their destinations by event type.

use nectar_webhooks::adapters::lambda_router;
use nectar_webhooks::telemetry;

// One invocation at a time: no worker threads to start at every cold start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_lambda();
    lambda_router::run_from_env(|destinations| destinations).await
}
