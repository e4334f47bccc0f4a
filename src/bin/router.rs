//! The router Lambda: routes queued webhooks to their destinations by event type.

use nectar_webhooks::adapters::lambda_router;
use nectar_webhooks::{cli, telemetry};
use std::process::ExitCode;

// One invocation at a time: no worker threads to start at every cold start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if let Some(code) = cli::outside_lambda("router", "router") {
        return code;
    }
    telemetry::init_lambda();
    match lambda_router::run_from_env(|destinations| destinations).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("router: {err}");
            ExitCode::FAILURE
        }
    }
}
