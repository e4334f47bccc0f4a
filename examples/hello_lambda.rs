//! The smallest `lambda_runtime` function, echoing its event: the baseline
//! `make bench` compares the ingest and router cold starts with. Built with
//! the same release profile and dependency versions as they are.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async { Ok::<_, Error>(event.payload) }))
        .await
}
