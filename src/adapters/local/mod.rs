//! Local mode: ingest and router in one process, with the same code as the
//! Lambdas, on an embedded queue or a real SQS queue.

pub mod embedded_queue;
pub mod server;
pub mod sqs_poller;

use crate::adapters::destinations::Destinations;
use crate::adapters::sqs::SqsQueue;
use crate::config::IngestConfig;
use crate::core::clock::SystemClock;
use crate::core::dedup::InMemorySeen;
use crate::core::ingest::Ingest;
use crate::core::router::Router;
use crate::core::routing::{Destination, RouteTable};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Messages the embedded queue holds before ingest answers 503.
pub const EMBEDDED_QUEUE_CAPACITY: usize = 10_000;

/// What `nectar-webhooks serve` runs.
pub struct LocalConfig {
    pub ingest: IngestConfig,
    pub routes: RouteTable,
    /// A real SQS queue to use instead of the embedded one.
    pub queue_url: Option<String>,
}

impl LocalConfig {
    /// Whether anything here talks to SQS, so an SQS client must be built.
    pub fn needs_sqs(&self) -> bool {
        self.queue_url.is_some() || self.routes.destinations().any(|d| matches!(d, Destination::Sqs(_)))
    }
}

/// Serves on `listener` until `shutdown` resolves. `sqs_client` is required
/// when [`LocalConfig::needs_sqs`]; `destinations` must reach every
/// destination of the route table.
pub async fn run(
    config: LocalConfig,
    sqs_client: Option<aws_sdk_sqs::Client>,
    destinations: Destinations,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    destinations.check(&config.routes).map_err(std::io::Error::other)?;
    let router = Arc::new(Router::new(config.routes, destinations, InMemorySeen::default()));
    let max_body_bytes = config.ingest.limits.max_body_bytes;
    let sources = config.ingest.sources();
    let limits = config.ingest.limits;
    match config.queue_url {
        Some(queue_url) => {
            let client = sqs_client.ok_or_else(|| std::io::Error::other("a queue URL needs an SQS client"))?;
            tokio::spawn(sqs_poller::poll(client.clone(), queue_url.clone(), router));
            let ingest = Ingest::new(sources, SqsQueue::new(client, queue_url), limits, Arc::new(SystemClock));
            server::serve(listener, Arc::new(ingest), max_body_bytes, shutdown).await
        }
        None => {
            let (queue, worker) = embedded_queue::embedded_queue(EMBEDDED_QUEUE_CAPACITY, Duration::from_secs(1));
            tokio::spawn(worker.run(router));
            let ingest = Ingest::new(sources, queue, limits, Arc::new(SystemClock));
            server::serve(listener, Arc::new(ingest), max_body_bytes, shutdown).await
        }
    }
}
