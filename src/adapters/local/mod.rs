//! Local mode: ingest and router in one process, with the same code as the
//! Lambdas, on an embedded queue or a real SQS queue. Payloads too large for
//! a queue message are claim-checked as the Lambdas do: in S3 with a real
//! queue and `CLAIM_CHECK_BUCKET`, else in a local directory ([`payload_dir`]).

pub mod embedded_queue;
pub mod payload_dir;
pub mod server;
pub mod sqs_poller;

use crate::adapters::destinations::Destinations;
use crate::adapters::sqs::SqsQueue;
use crate::config::{self, IngestConfig};
use crate::core::claim_check::PayloadStore;
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

/// How long a payload file is kept when only this process holds references
/// to it: far past the embedded queue's last retry (seconds after ingest).
pub const PAYLOAD_TTL_IN_PROCESS: Duration = Duration::from_secs(60 * 60);

/// How long a payload file is kept when an SQS queue may hold references to
/// it: as long as the router still acts on a reference, which is the
/// idempotency window (a queue's 14 days, then a dead-letter copy's fresh
/// 14), as the deployed bucket's lifecycle rule.
pub const PAYLOAD_TTL_WITH_SQS: Duration = crate::core::dedup::DEFAULT_TTL;

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

    /// The S3 bucket for large payloads, as the Lambdas use it: the
    /// claim-check bucket, with a real SQS queue only. The embedded queue
    /// needs no AWS, so it keeps them in a local directory whatever is set.
    pub fn claim_check_bucket(&self) -> Option<&str> {
        self.queue_url.as_ref().and(self.ingest.claim_check_bucket.as_deref())
    }

    /// How long a local directory keeps a payload: as long as something may
    /// still point at it. References leave this process when an SQS queue
    /// carries them (the ingest queue, or copies to SQS destinations).
    pub fn payload_ttl(&self) -> Duration {
        if self.needs_sqs() { PAYLOAD_TTL_WITH_SQS } else { PAYLOAD_TTL_IN_PROCESS }
    }
}

/// [`run_with_payloads`] with large payloads in a [`PayloadDir`] at the
/// default place ([`config::local_payload_dir`] with nothing set).
///
/// [`PayloadDir`]: payload_dir::PayloadDir
pub async fn run(
    config: LocalConfig,
    sqs_client: Option<aws_sdk_sqs::Client>,
    destinations: Destinations,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let path = config::local_payload_dir(|_| None);
    let payloads = payload_dir::PayloadDir::open(&path, config.payload_ttl()).map_err(std::io::Error::other)?;
    run_with_payloads(config, sqs_client, destinations, Arc::new(payloads), listener, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves. `sqs_client` is required
/// when [`LocalConfig::needs_sqs`]; `destinations` must reach every
/// destination of the route table: `serve` makes sure with
/// [`Destinations::check`] before it binds `listener`, so that a route that
/// cannot deliver stops it before it answers a webhook. Payloads over the queue's message limit
/// go to `payloads` and travel by reference, as in the Lambdas: ingest
/// stores them, the router fetches them, and copies to SQS destinations over
/// the limit are stored there too.
pub async fn run_with_payloads(
    config: LocalConfig,
    sqs_client: Option<aws_sdk_sqs::Client>,
    destinations: Destinations,
    payloads: Arc<dyn PayloadStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = config.ingest.limits;
    let destinations = destinations.with_payload_store(Arc::clone(&payloads), limits.max_queue_message_bytes);
    let router = Arc::new(Router::new(config.routes, destinations, InMemorySeen::default()));
    let sources = config.ingest.sources();
    match config.queue_url {
        Some(queue_url) => {
            let client = sqs_client.ok_or_else(|| std::io::Error::other("a queue URL needs an SQS client"))?;
            tokio::spawn(sqs_poller::poll(client.clone(), queue_url.clone(), router, Arc::clone(&payloads)));
            let ingest = Ingest::new(sources, SqsQueue::new(client, queue_url), limits, Arc::new(SystemClock))
                .with_payload_store(payloads);
            server::serve(listener, Arc::new(ingest), limits.max_body_bytes, shutdown).await
        }
        None => {
            let (queue, worker) = embedded_queue::embedded_queue(EMBEDDED_QUEUE_CAPACITY, Duration::from_secs(1));
            tokio::spawn(worker.run(router, Arc::clone(&payloads)));
            let ingest = Ingest::new(sources, queue, limits, Arc::new(SystemClock)).with_payload_store(payloads);
            server::serve(listener, Arc::new(ingest), limits.max_body_bytes, shutdown).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(queue_url: Option<&str>, bucket: Option<&str>, routes: &str) -> LocalConfig {
        let ingest = IngestConfig::for_local_mode(|name| match name {
            config::WEBHOOK_SECRET => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            config::CLAIM_CHECK_BUCKET => bucket.map(str::to_owned),
            _ => None,
        })
        .unwrap();
        LocalConfig { ingest, routes: RouteTable::parse(routes).unwrap(), queue_url: queue_url.map(str::to_owned) }
    }

    #[test]
    fn large_payloads_go_to_s3_only_with_a_real_queue_and_a_bucket() {
        let queue = Some("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest");
        assert_eq!(local(queue, Some("payloads"), "*=stdout").claim_check_bucket(), Some("payloads"));
        assert_eq!(local(None, Some("payloads"), "*=stdout").claim_check_bucket(), None);
        assert_eq!(local(queue, None, "*=stdout").claim_check_bucket(), None);
    }

    #[test]
    fn payload_files_live_as_long_as_a_queue_may_point_at_them() {
        assert_eq!(local(None, None, "*=stdout").payload_ttl(), PAYLOAD_TTL_IN_PROCESS);
        let queue = Some("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest");
        assert_eq!(local(queue, None, "*=stdout").payload_ttl(), PAYLOAD_TTL_WITH_SQS);
        let to_sqs = "*=https://sqs.eu-west-1.amazonaws.com/123456789012/docs";
        assert_eq!(local(None, None, to_sqs).payload_ttl(), PAYLOAD_TTL_WITH_SQS);
    }
}
