//! `nectar-webhooks replay`: re-delivers a window of the archive through the
//! router's own code, to one route of the table or to any destination.
//!
//! Deliveries are keyed by the replay id, so they are not taken for
//! duplicates of the original ones, and a replay run again with the same id
//! delivers nothing twice. Progress (count, rate, ETA) goes to stderr; after
//! each batch the run's position is saved in the data directory, so an
//! interrupted replay (Ctrl-C) resumes where it stopped when run again with
//! its id.

use crate::adapters::archive::source::{ArchiveSource, Window};
use crate::adapters::aws;
use crate::adapters::destinations::{Check, Destinations};
use crate::adapters::idempotency::{DynamoSeen, IdempotencyStore};
use crate::adapters::local::durable_queue::DurableStore;
use crate::adapters::payloads::S3PayloadStore;
use crate::config;
use crate::core::archive::{ArchiveRecord, ArchivedBody};
use crate::core::claim_check::{ClaimCheckError, PayloadStore, StoreFuture};
use crate::core::dedup::{DEFAULT_LEASE, DEFAULT_TTL};
use crate::core::envelope::Envelope;
use crate::core::replay::{Checkpoint, Position, Selection, new_replay_id, valid_replay_id};
use crate::core::router::{Record, Router};
use crate::core::routing::{Destination, RouteTable};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive: s3://BUCKET/PREFIX (the stack's `ArchiveLocation` output) or
    /// a directory (`serve --archive-dir`).
    #[arg(long, value_name = "ARCHIVE")]
    pub from: String,
    /// Webhooks received at or after this time (RFC 3339, e.g. 2026-12-05T09:00:00Z).
    #[arg(long, value_name = "T")]
    pub since: DateTime<Utc>,
    /// ... and before this time (RFC 3339; default: now).
    #[arg(long, value_name = "T")]
    pub until: Option<DateTime<Utc>>,
    /// Only event types matching this pattern (`document.*`, as in ROUTES).
    #[arg(long = "type", value_name = "PATTERN")]
    pub event_type: Option<String>,
    /// Only payloads passing these filters (`[field=value]`, `[field!=value]`, as in ROUTES).
    #[arg(long, value_name = "FILTERS")]
    pub filter: Option<String>,
    /// Deliver to the destinations of this rule of the route table (its left-hand
    /// side as written, e.g. `document.*[site.id=42]`); the table is ROUTES or --routes.
    #[arg(long, value_name = "NAME", required_unless_present = "to", conflicts_with = "to")]
    pub route: Option<String>,
    /// Read the route table for --route from this file instead of ROUTES.
    #[arg(long, value_name = "FILE", requires = "route")]
    pub routes: Option<PathBuf>,
    /// Deliver to this destination instead, in the route syntax (an SQS queue URL,
    /// eventbridge:BUS, file:PATH, stdout, ...).
    #[arg(long, value_name = "DEST")]
    pub to: Option<String>,
    /// This replay's id: deliveries are keyed by it, and a run with the id of an
    /// earlier one resumes it. By default a new one, printed at the start.
    #[arg(long, value_name = "ID")]
    pub replay_id: Option<String>,
    /// At most this many webhooks a second (`50` or `50/s`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Print what would be replayed; deliver nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long after being received a webhook may have been archived: the
    /// partitions read run that far past --until (hours; default 336, the
    /// 14 days a message can wait in the ingest queue).
    #[arg(long, value_name = "HOURS", default_value_t = 336)]
    pub lag_hours: i64,
    /// Where checkpoints (and, without a table, the replay's delivery memory)
    /// are kept [env: DATA_DIR; default as for serve].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Remember the replay's deliveries in this DynamoDB table (the stack's
    /// idempotency table) rather than in the data directory [env: IDEMPOTENCY_TABLE].
    #[arg(long, value_name = "TABLE")]
    pub idempotency_table: Option<String>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?}: expected a positive number of webhooks a second, such as 50 or 50/s")),
    }
}

/// How many webhooks are routed together: a router batch, as from SQS.
const BATCH: usize = 10;

pub async fn run(args: Args) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let replay_id = match args.replay_id.clone() {
        Some(id) if valid_replay_id(&id) => id,
        Some(id) => return Err(format!("--replay-id {id:?}: use letters, digits, `_` and `-` (at most 64)")),
        None => new_replay_id()?,
    };
    let until = args.until.unwrap_or_else(|| DateTime::<Utc>::from(std::time::SystemTime::now()));
    if until <= args.since {
        return Err(format!("--until {until} is not after --since {}", args.since));
    }
    let selection = Selection::new(args.event_type.as_deref(), args.filter.as_deref())
        .map_err(|err| format!("--type/--filter: {err}"))?;
    let table = replay_table(&args)?;
    let sdk = LazySdk::default();
    let source = ArchiveSource::open(&args.from, || async { Ok(aws_sdk_s3::Client::new(&sdk.config().await?)) })
        .await
        .map_err(|err| err.to_string())?;
    let window = Window { since: Some(args.since), until: Some(until), lag: chrono::Duration::hours(args.lag_hours) };
    let (records, stats) = source.read(window).await.map_err(|err| err.to_string())?;
    let payloads = References::new(if records.iter().any(|r| is_s3_reference(&r.body)) {
        Some(aws_sdk_s3::Client::new(&sdk.config().await?))
    } else {
        None
    });
    // Payload filters (--filter's or the rule's) read the body; types alone do not.
    let needs_body = selection.needs_body() || table.routes().any(|route| !route.filters.is_empty());
    let mut selected = Vec::new();
    for record in records {
        let body = if needs_body { body_of(&record, &payloads).await? } else { Bytes::new() };
        if selection.takes(&record.event_type, &body) && table.route(&record.event_type, &body).is_some() {
            selected.push(record);
        }
    }
    eprintln!(
        "replay {replay_id}: {} webhooks selected from {} archived in the window ({} objects read, {} duplicate lines, {} malformed)",
        selected.len(),
        stats.lines - stats.malformed - stats.duplicates,
        stats.objects,
        stats.duplicates,
        stats.malformed
    );
    if args.dry_run {
        for record in &selected {
            println!("{}\t{}\t{}", record.received.to_rfc3339(), record.event_type, record.id);
        }
        println!("dry run: {} webhooks would be replayed; nothing was delivered", selected.len());
        return Ok(());
    }

    let data_dir = args.data_dir.clone().unwrap_or_else(|| config::local_data_dir(env));
    let checkpoint_path = data_dir.join("replays").join(format!("{replay_id}.json"));
    let mut checkpoint = read_checkpoint(&checkpoint_path)?;
    let before = selected.len();
    selected.retain(|record| !checkpoint.covers(record));
    if selected.len() < before {
        eprintln!("resuming replay {replay_id}: {} already delivered by an earlier run", before - selected.len());
    }

    let needs_sqs = table.destinations().any(|d| matches!(d, Destination::Sqs(_)));
    let needs_eventbridge = table.destinations().any(|d| matches!(d, Destination::EventBridge(_)));
    let table_name = args.idempotency_table.clone().or_else(|| env(config::IDEMPOTENCY_TABLE));
    let mut destinations = Destinations::default();
    if needs_sqs {
        destinations = destinations.with_sqs(aws_sdk_sqs::Client::new(&sdk.config().await?));
    }
    if needs_eventbridge {
        destinations = destinations.with_eventbridge(aws_sdk_eventbridge::Client::new(&sdk.config().await?));
    }
    destinations
        .check(&table, Check::Reachable)
        .await
        .map_err(|err| format!("a destination cannot be reached:\n{err}"))?;
    let store = match table_name {
        Some(table) => IdempotencyStore::Dynamo(DynamoSeen::new(
            aws_sdk_dynamodb::Client::new(&sdk.config().await?),
            table,
            DEFAULT_TTL,
            DEFAULT_LEASE,
        )),
        None => IdempotencyStore::Durable(DurableStore::open(&data_dir, DEFAULT_TTL).map_err(|e| e.to_string())?.0),
    };
    let router = Router::new(table, destinations, store)
        .without_age_limit()
        .with_key_scope(&format!("replay/{replay_id}"))
        .with_payload_store(Arc::new(payloads));

    eprintln!("replay {replay_id}: delivering {} webhooks (resume with --replay-id {replay_id})", selected.len());
    let started = Instant::now();
    let total = selected.len();
    let (mut done, mut failed) = (0usize, Vec::new());
    let mut last_report = Instant::now();
    // Ctrl-C stops the run after the batch under way, so no delivery is cut
    // short, and at once while it waits for its rate. (Were Ctrl-C not to be
    // had, the channel closes: `wait_for` errs, and the rate is still kept.)
    let (interrupt, mut interrupted) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.send_replace(true);
        }
    });
    for batch in selected.chunks(BATCH) {
        if *interrupted.borrow() {
            return Err(format!(
                "interrupted after {done} of {total}; run the same command with --replay-id {replay_id} to resume"
            ));
        }
        let failures = router.route_batch(batch.iter().map(record_for).collect()).await;
        done += batch.len();
        if failed.is_empty() && failures.is_empty() {
            checkpoint.through = batch.last().map(Position::of);
        }
        checkpoint.delivered += (batch.len() - failures.len()) as u64;
        failed.extend(failures);
        save_checkpoint(&checkpoint_path, &checkpoint)?;
        if let Some(rate) = args.rate {
            let due = Duration::from_secs_f64(done as f64 / rate);
            tokio::select! {
                () = tokio::time::sleep(due.saturating_sub(started.elapsed())) => {}
                Ok(_) = interrupted.wait_for(|stop| *stop) => {}
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) || done == total {
            last_report = Instant::now();
            let per_second = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            let eta = (total - done) as f64 / per_second.max(0.001);
            eprintln!("replayed {done}/{total} ({per_second:.0}/s, ETA {eta:.0} s)");
        }
    }
    println!(
        "replay {replay_id}: {} of {total} webhooks delivered or already delivered by this replay, {} failed",
        total - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        return Ok(());
    }
    for failure in &failed {
        eprintln!("  {}: {}", failure.id, failure.reason);
    }
    Err(format!("{} webhooks not delivered; run again with --replay-id {replay_id} to retry them", failed.len()))
}

/// The table a replay routes with: one rule of the configured table, or
/// `--to`'s destination for every type (Nector's too).
fn replay_table(args: &Args) -> Result<RouteTable, String> {
    if let Some(destination) = &args.to {
        return RouteTable::parse(&format!("*={destination}\nnector.*={destination}"))
            .map_err(|err| format!("--to {destination}: {}", err.problem));
    }
    let name = args.route.as_deref().unwrap_or_default();
    let (origin, table) = match &args.routes {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--routes {}: {e}", path.display()))?;
            (format!("--routes {}", path.display()), RouteTable::parse(&text).map_err(|e| e.to_string())?)
        }
        None => (config::ROUTES.to_owned(), config::routes_from_env().map_err(|e| e.to_string())?),
    };
    let route = table.routes().find(|route| route.name() == name).ok_or_else(|| {
        let names: Vec<String> = table.routes().map(|route| route.name()).collect();
        format!("--route {name:?}: no such rule in {origin}; its rules are: {}", names.join(", "))
    })?;
    RouteTable::parse(&route.to_string()).map_err(|e| e.to_string())
}

/// A record for the router: the archived envelope, its body in hand or by
/// reference (fetched when its turn comes, as from the queue).
fn record_for(record: &ArchiveRecord) -> Record {
    let (body, claim_check) = match &record.body {
        ArchivedBody::ClaimCheck { claim_check, .. } => (Ok(Bytes::new()), Some(claim_check.clone())),
        inline => (inline.bytes().map(Option::unwrap_or_default), None),
    };
    let message = body
        .map(|body| Envelope {
            source: record.source.clone(),
            id: record.id.clone(),
            timestamp: record.timestamp,
            body,
        })
        .map_err(|err| crate::core::envelope::DecodeError::PayloadUnavailable(err.to_string()));
    Record { id: format!("{}/{}", record.source, record.id), message, claim_check, received: Some(record.received) }
}

/// The AWS configuration, read from the environment on first use only, so
/// that commands given a local archive and local destinations need none.
#[derive(Default)]
pub(super) struct LazySdk(tokio::sync::OnceCell<aws_config::SdkConfig>);

impl LazySdk {
    pub(super) async fn config(&self) -> Result<aws_config::SdkConfig, String> {
        self.0.get_or_try_init(|| async { aws::sdk_config().await.map_err(|err| err.to_string()) }).await.cloned()
    }
}

/// A record's body, fetched if it was archived by reference.
pub(super) async fn body_of(record: &ArchiveRecord, payloads: &References) -> Result<Bytes, String> {
    match &record.body {
        ArchivedBody::ClaimCheck { claim_check, .. } => payloads.get(claim_check).await.map_err(|e| e.to_string()),
        inline => inline.bytes().map(Option::unwrap_or_default).map_err(|e| e.to_string()),
    }
}

pub(super) fn is_s3_reference(body: &ArchivedBody) -> bool {
    matches!(body, ArchivedBody::ClaimCheck { claim_check, .. } if claim_check.starts_with("s3://"))
}

/// Fetches payloads by their reference, wherever it points: S3
/// (`s3://BUCKET/KEY`, the deployed bucket) or a file (`file://PATH`, local
/// mode's payload directory). Replay and drift only read them.
pub(super) struct References {
    s3: Option<S3PayloadStore>,
}

impl References {
    pub(super) fn new(s3: Option<aws_sdk_s3::Client>) -> Self {
        Self { s3: s3.map(|client| S3PayloadStore::new(client, "")) }
    }
}

impl PayloadStore for References {
    fn put<'a>(&'a self, key: &'a str, _body: &'a [u8]) -> StoreFuture<'a, String> {
        Box::pin(async move { Err(ClaimCheckError(format!("{key}: a replay stores no payloads"))) })
    }

    fn get<'a>(&'a self, reference: &'a str) -> StoreFuture<'a, Bytes> {
        Box::pin(async move {
            if let Some(path) = reference.strip_prefix("file://") {
                return std::fs::read(path)
                    .map(Bytes::from)
                    .map_err(|err| ClaimCheckError(format!("reading {reference}: {err}")));
            }
            match &self.s3 {
                Some(store) => store.get(reference).await,
                None => Err(ClaimCheckError(format!("{reference:?}: not an s3:// or file:// reference"))),
            }
        })
    }
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("checkpoint {}: {e}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(err) => Err(format!("checkpoint {}: {err}", path.display())),
    }
}

/// Written whole, then renamed over the last one.
fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("checkpoint directory {}: {e}", dir.display()))?;
    let partial = path.with_extension("json~");
    let text = serde_json::to_vec(checkpoint).expect("a checkpoint serialises");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("checkpoint {}: {e}", path.display()))
}
