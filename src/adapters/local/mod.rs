//! Local mode: ingest and router in one process, with the same code as the
//! Lambdas, on a durable embedded queue ([`durable_queue`]) or a real SQS
//! queue. Payloads too large for
//! a queue message are claim-checked as the Lambdas do: in S3 with a real
//! queue and `CLAIM_CHECK_BUCKET`, else in a local directory ([`payload_dir`]).

pub mod durable_queue;
pub mod health;
pub mod payload_dir;
pub mod server;
pub mod sqs_poller;

use crate::adapters::destinations::Destinations;
use crate::adapters::sqs::SqsQueue;
use crate::config::{self, IngestConfig};
use crate::core::archive::Archive;
use crate::core::claim_check::PayloadStore;
use crate::core::clock::SystemClock;
use crate::core::dedup::{DEFAULT_TTL, InMemorySeen, SeenStore};
use crate::core::ingest::Ingest;
use crate::core::router::{Deliver, Router};
use crate::core::routing::{Destination, RouteTable};
use durable_queue::DurableStore;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a payload file is kept: as long as the router still acts on a
/// reference, which is the idempotency window (a queue's 14 days, then a
/// dead-letter copy's fresh 14), as the deployed bucket's lifecycle rule.
/// The durable embedded queue and its dead letters keep references across
/// restarts as an SQS queue does.
pub const PAYLOAD_TTL: Duration = DEFAULT_TTL;

/// How long shutdown may take, from the signal: in-flight requests are
/// answered and in-flight deliveries finished within it if they can; what
/// is not is still in the store, and delivered after the next start.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// What `nectar-webhooks serve` runs.
pub struct LocalConfig {
    pub ingest: IngestConfig,
    pub routes: RouteTable,
    /// A real SQS queue to use instead of the embedded one.
    pub queue_url: Option<String>,
    /// Where the embedded queue keeps its store (unused with `queue_url`).
    pub data_dir: PathBuf,
    /// Where every webhook the router reads is archived, if anywhere
    /// (`serve --archive-dir`).
    pub archive: Option<Arc<dyn Archive>>,
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
    let payloads = payload_dir::PayloadDir::open(&path, PAYLOAD_TTL).map_err(std::io::Error::other)?;
    run_with_payloads(config, sqs_client, destinations, Arc::new(payloads), listener, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves, then shuts down
/// gracefully within [`SHUTDOWN_BUDGET`]: new requests get 503, those in
/// flight are answered, the embedded queue's deliveries in flight finish.
/// `sqs_client` is required when [`LocalConfig::needs_sqs`]; `destinations`
/// must reach every destination of the route table: `serve` makes sure with
/// [`Destinations::check`] before it binds `listener`, so that a route that
/// cannot deliver stops it before it answers a webhook. Payloads over the
/// queue's message limit go to `payloads` and travel by reference, as in the
/// Lambdas: ingest stores them, the router fetches them, and copies to SQS
/// destinations over the limit are stored there too.
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
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let sources = config.ingest.sources();
    let graceful = async {
        match config.queue_url {
            Some(queue_url) => {
                let client = sqs_client.ok_or_else(|| std::io::Error::other("a queue URL needs an SQS client"))?;
                let ready = health::ready_check(None, &config.routes);
                let router = Router::new(config.routes, destinations, InMemorySeen::default());
                let router = Arc::new(archiving(router, config.archive));
                tokio::spawn(sqs_poller::poll(client.clone(), queue_url.clone(), router, Arc::clone(&payloads)));
                let ingest = Ingest::new(sources, SqsQueue::new(client, queue_url), limits, Arc::new(SystemClock))
                    .with_payload_store(payloads);
                server::serve(listener, Arc::new(ingest), limits.max_body_bytes, ready, stopping.clone()).await
            }
            None => {
                let (store, recovered) =
                    DurableStore::open(&config.data_dir, DEFAULT_TTL).map_err(std::io::Error::other)?;
                tracing::info!(
                    data_dir = %config.data_dir.display(),
                    waiting = recovered.waiting,
                    in_flight_at_last_stop = recovered.in_flight,
                    dead_letters = recovered.dead_letters,
                    "local queue store opened"
                );
                let ready = health::ready_check(Some(store.clone()), &config.routes);
                let router =
                    Arc::new(archiving(Router::new(config.routes, destinations, store.clone()), config.archive));
                let worker =
                    tokio::spawn(durable_queue::work(store.clone(), router, Arc::clone(&payloads), stopping.clone()));
                let ingest = Ingest::new(sources, store, limits, Arc::new(SystemClock)).with_payload_store(payloads);
                server::serve(listener, Arc::new(ingest), limits.max_body_bytes, ready, stopping.clone()).await?;
                worker.await.map_err(std::io::Error::other)
            }
        }
    };
    let mut signalled = stopping.clone();
    let budget = async move {
        if signalled.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_BUDGET).await;
    };
    tokio::select! {
        served = graceful => served,
        () = budget => {
            tracing::warn!("shutdown outlasted its budget; what was in flight is delivered after the next start");
            Ok(())
        }
    }
}

/// The router, archiving every record it reads if there is an archive.
fn archiving<D: Deliver, S: SeenStore>(router: Router<D, S>, archive: Option<Arc<dyn Archive>>) -> Router<D, S> {
    match archive {
        Some(archive) => router.with_archive(archive),
        None => router,
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
        LocalConfig {
            ingest,
            routes: RouteTable::parse(routes).unwrap(),
            queue_url: queue_url.map(str::to_owned),
            data_dir: PathBuf::new(),
            archive: None,
        }
    }

    #[test]
    fn large_payloads_go_to_s3_only_with_a_real_queue_and_a_bucket() {
        let queue = Some("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest");
        assert_eq!(local(queue, Some("payloads"), "*=stdout").claim_check_bucket(), Some("payloads"));
        assert_eq!(local(None, Some("payloads"), "*=stdout").claim_check_bucket(), None);
        assert_eq!(local(queue, None, "*=stdout").claim_check_bucket(), None);
    }
}
