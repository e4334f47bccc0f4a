//! The routing decision and its execution: from a queued message to its
//! destinations, each reached once.
//!
//! The router Lambda and local mode's queue worker both hand batches to
//! [`Router::route_batch`]; what reaching a destination means is the
//! [`Deliver`] port's business.

use crate::core::archive::{Archive, ArchiveError, ArchiveRecord, ArchivedBody};
use crate::core::claim_check::{self, PayloadStore};
use crate::core::clock::{Clock, SystemClock};
use crate::core::dedup::{Claim, Lease, SeenStore, StoreError};
use crate::core::drift;
use crate::core::envelope::{ATTR_CLAIM_CHECK, DecodeError, Envelope, received_at};
use crate::core::events::{Probe, probe};
use crate::core::outcome::Outcome;
use crate::core::routing::{Destination, RouteTable};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, error, info, warn};

/// One routed webhook as a destination receives it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub envelope: &'a Envelope,
    pub event_type: &'a str,
    /// The rule that matched, as written (pattern and filters).
    pub route: &'a str,
    /// The connection's or document's id, if the payload has one.
    pub resource_id: Option<&'a str>,
}

/// A destination refused or could not be reached; the record is retried.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Puts a delivery where a destination says.
pub trait Deliver: Send + Sync {
    fn deliver(
        &self,
        destination: &Destination,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// Puts several deliveries to one destination, given in batch order;
    /// one result per delivery, in the same order. The router hands over
    /// every delivery of a wave (see [`Router::route_batch`]) to the same
    /// destination at once, so an adapter that can send many in one request
    /// (SQS's `SendMessageBatch`, EventBridge's `PutEvents`) pays for one
    /// request instead of ten. By default, each is delivered on its own,
    /// all at once.
    fn deliver_all(
        &self,
        destination: &Destination,
        deliveries: &[Delivery<'_>],
    ) -> impl Future<Output = Vec<Result<(), DeliveryError>>> + Send {
        join_all(deliveries.iter().map(move |delivery| self.deliver(destination, delivery)))
    }
}

/// Why one record was not fully delivered.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("undecodable message: {0}")]
    Undecodable(#[from] DecodeError),
    #[error("no route matches event type {0:?} (add a `*=...` rule, or `*=drop` to discard)")]
    NoRoute(String),
    #[error("{failed} of {total} destinations failed: {first}")]
    Delivery { failed: usize, total: usize, first: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signed longer ago than the idempotency store remembers (less
    /// [`AGE_MARGIN`]): whether it was delivered may be forgotten, so it goes
    /// to the dead-letter queue rather than risk a second delivery.
    #[error(
        "signed {age_hours} h ago, past IDEMPOTENCY_TTL_DAYS ({ttl_days} days) less a 1-hour margin: delivering it \
         could duplicate a delivery the idempotency store has forgotten"
    )]
    TooOld { age_hours: i64, ttl_days: u64 },
    /// Delivering it now would put it ahead of an earlier event about the
    /// same resource; it is retried with that one instead. Names the earlier
    /// record by its queue message id: the resource's id is a payload value,
    /// which log lines and dead-letter reasons never carry.
    #[error("an earlier event about the same resource (message {0}) failed; kept in order")]
    HeldBack(String),
    /// An earlier record's payload could not be fetched, so its resource is
    /// unknown: it may be this one's, so this one waits too.
    #[error("an earlier event's payload could not be fetched and may be about the same resource; kept in order")]
    HeldBackUnknown,
    /// Routed, but not archived: retried until the archive has it (its
    /// destinations, already reached, skip it as a duplicate).
    #[error(transparent)]
    NotArchived(#[from] ArchiveError),
}

/// What happened to a record that was fully handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub event_type: String,
    pub route: String,
    pub delivered: usize,
    pub duplicates: usize,
    /// Field paths of the payload the typed model does not name
    /// ([`drift::unknown_paths`]): Nectar's schema drifting.
    pub unknown_fields: usize,
}

/// A record routed, as its batch's one line names it.
#[derive(Debug)]
struct RoutedRecord {
    webhook_id: String,
    delivered: usize,
    duplicates: usize,
    age_secs: Option<i64>,
}

/// What a batch routed, written as one `info` line once the batch is done.
/// One line per batch rather than one per webhook: a line per webhook per
/// function (about 650 bytes) cost $0.33 per million webhooks, more than
/// the idempotency table's claims; the batch's line names every webhook id in
/// about 55 bytes each (BENCHMARKS.md section 6). The detail of each webhook
/// is a `debug` line (`LogLevel` `debug`).
#[derive(Debug, Default)]
struct BatchLine {
    /// The ids, space-separated: `filter webhook_ids like "msg_…"` finds one.
    webhook_ids: String,
    routed: usize,
    delivered: usize,
    duplicates: usize,
    oldest_age_secs: Option<i64>,
}

impl BatchLine {
    fn add(&mut self, record: RoutedRecord) {
        if !self.webhook_ids.is_empty() {
            self.webhook_ids.push(' ');
        }
        self.webhook_ids.push_str(&record.webhook_id);
        self.routed += 1;
        self.delivered += record.delivered;
        self.duplicates += record.duplicates;
        self.oldest_age_secs = self.oldest_age_secs.max(record.age_secs);
    }

    fn write(self) {
        if self.routed > 0 {
            info!(
                outcome = Outcome::BatchRouted.as_str(),
                routed = self.routed,
                // Only when they differ from `routed`: fan-out, drops, duplicates.
                delivered = (self.delivered != self.routed).then_some(self.delivered),
                duplicates = (self.duplicates > 0).then_some(self.duplicates),
                oldest_age_secs = self.oldest_age_secs,
                webhook_ids = %self.webhook_ids,
                "webhooks routed"
            );
        }
    }
}

/// One message of a batch, as its queue identifies it.
#[derive(Debug)]
pub struct Record {
    /// The queue's id for the message, reported back when it failed.
    pub id: String,
    pub message: Result<Envelope, DecodeError>,
    /// Where the payload is when it travelled by claim check (the envelope's
    /// body is then empty): the router fetches it when the record's turn
    /// comes (see [`Router::route_batch`]).
    pub claim_check: Option<String>,
    /// When ingest received it, if the message says ([`received_at`]).
    pub received: Option<DateTime<Utc>>,
}

impl Record {
    /// A record read from a queue message, its claim-checked payload (if
    /// any) left where it is.
    pub fn from_queue_message<'a>(id: String, body: &str, attribute: impl Fn(&str) -> Option<&'a str>) -> Self {
        let claim_check = attribute(ATTR_CLAIM_CHECK).map(str::to_owned);
        let received = received_at(&attribute);
        Self { id, message: Envelope::from_queue_message(body, &attribute), claim_check, received }
    }

    /// The same record, received when its queue says (SQS's `SentTimestamp`),
    /// if its message does not carry [`ATTR_RECEIVED`]: one queued before
    /// ingest added it.
    pub fn received_by_default(mut self, sent: Option<DateTime<Utc>>) -> Self {
        self.received = self.received.or(sent);
        self
    }
}

/// A record that was not fully delivered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    pub reason: String,
}

/// How much younger than the idempotency store's memory a webhook must be to
/// be delivered: room for the time between this check and the store's
/// writes, and for clocks that disagree a little.
pub const AGE_MARGIN: Duration = Duration::from_secs(3600);

/// How many times a delivered key's completion is tried before the router
/// gives up on remembering it (see [`Router::remember_delivered`]).
const COMPLETE_ATTEMPTS: u32 = 3;

/// Routes webhooks by event type and delivers each to its destinations once.
pub struct Router<D, S> {
    table: RouteTable,
    deliver: D,
    seen: S,
    clock: Arc<dyn Clock>,
    payloads: Option<Arc<dyn PayloadStore>>,
    archive: Option<Arc<dyn Archive>>,
    limits_age: bool,
    /// Put before every idempotency key: a replay's deliveries are keyed
    /// apart from the original ones (and from other replays').
    key_scope: String,
}

impl<D: Deliver, S: SeenStore> Router<D, S> {
    pub fn new(table: RouteTable, deliver: D, seen: S) -> Self {
        Self {
            table,
            deliver,
            seen,
            clock: Arc::new(SystemClock),
            payloads: None,
            archive: None,
            limits_age: true,
            key_scope: String::new(),
        }
    }

    /// Archives every record it reads (see [`crate::core::archive`]); a
    /// record the archive does not take is reported failed, so it is retried.
    pub fn with_archive(mut self, archive: Arc<dyn Archive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Keys deliveries apart from every other run's: a replay reaches
    /// destinations that had the webhook already, but twice under the same
    /// scope only once.
    pub fn with_key_scope(mut self, scope: &str) -> Self {
        self.key_scope = format!("{scope}/");
        self
    }

    /// Routes webhooks however long ago they were signed. Only for invoking
    /// the function locally (`sam local`, `cargo lambda`) with the committed
    /// sample events, which were signed long before any idempotency window:
    /// there, no durable store outlives the process anyway.
    pub fn without_age_limit(mut self) -> Self {
        self.limits_age = false;
        self
    }

    /// The clock that webhooks' ages are measured by (the machine's by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where claim-checked payloads are fetched from.
    pub fn with_payload_store(mut self, store: Arc<dyn PayloadStore>) -> Self {
        self.payloads = Some(store);
        self
    }

    /// Routes a batch: records about different resources together, those
    /// about the same resource (the payload's `id`) one after another in batch
    /// order, so a FIFO destination gets one resource's events in the order
    /// they came. Once one of a resource's records fails, its later records
    /// are reported failed without being delivered, so none overtakes it on
    /// the retry; that is also what AWS asks of a FIFO queue's batch (the
    /// failed record and every later one of its message group). Returns the
    /// records that failed, in batch order, so the queue redelivers only them.
    ///
    /// Records go in waves: the next record of every resource whose earlier
    /// records are done, once all that can be read without waiting are. A
    /// wave claims its deliveries in the idempotency store, hands each
    /// destination all of the wave's deliveries to it at once
    /// ([`Deliver::deliver_all`]), then completes what was delivered and
    /// releases the rest: ten webhooks about ten resources cost one send
    /// per destination, not ten. No two records of one resource are ever in
    /// the same wave.
    ///
    /// Claim-checked payloads are fetched as the batch is read, in order, at
    /// most [`PAYLOADS_AT_ONCE`] held at a time (being fetched, waiting in
    /// their lane, or being delivered): a record's lane is known only once
    /// its payload is, and a batch of ten payloads of several megabytes each
    /// would not fit a small function's memory all at once.
    pub async fn route_batch(&self, records: Vec<Record>) -> Vec<Failure> {
        let mut records = records.into_iter().enumerate().peekable();
        let mut fetching = FuturesOrdered::new();
        let mut waves = FuturesUnordered::new();
        let mut lanes: Vec<Lane> = Vec::new();
        let mut payloads_held = 0;
        let mut unreadable_before = false;
        let mut failures: Vec<(usize, Failure)> = Vec::new();
        let mut to_archive: Vec<(usize, String, Result<Vec<u8>, ArchiveError>)> = Vec::new();
        let mut batch_line = BatchLine::default();
        loop {
            while let Some((index, record)) =
                records.next_if(|(_, r)| r.claim_check.is_none() || payloads_held < PAYLOADS_AT_ONCE)
            {
                payloads_held += usize::from(record.claim_check.is_some());
                fetching.push_back(self.read(index, record));
            }
            let startable = waves.is_empty() && lanes.iter().any(|lane| !lane.busy && !lane.waiting.is_empty());
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(Some(ready)) = fetching.poll_next_unpin(cx) {
                    return Poll::Ready(Some(Event::Read(ready)));
                }
                if startable {
                    return Poll::Ready(Some(Event::Settled));
                }
                match waves.poll_next_unpin(cx) {
                    Poll::Ready(Some(routed)) => Poll::Ready(Some(Event::Routed(routed))),
                    _ if fetching.is_empty() && waves.is_empty() => Poll::Ready(None),
                    _ => Poll::Pending,
                }
            });
            match event.await {
                None => break,
                Some(Event::Read(mut ready)) => {
                    if let Some(line) = ready.archive_line.take() {
                        to_archive.push((ready.index, ready.id.clone(), line));
                    }
                    let resource = ready.message.as_ref().ok().and_then(|(_, p)| p.resource_id.clone());
                    if unreadable_before {
                        payloads_held -= usize::from(ready.holds_payload);
                        let reason = RecordError::HeldBackUnknown.to_string();
                        failures.push((ready.index, held_back(ready, &reason)));
                        continue;
                    }
                    unreadable_before = matches!(ready.message, Err(DecodeError::PayloadUnavailable(_)));
                    match lanes.iter_mut().find(|lane| resource.is_some() && lane.resource == resource) {
                        Some(lane) => lane.waiting.push_back(ready),
                        None => lanes.push(Lane { resource, waiting: [ready].into(), busy: false, held_back: None }),
                    }
                }
                Some(Event::Settled) => {
                    let mut wave = Vec::new();
                    for (lane_index, lane) in lanes.iter_mut().enumerate().filter(|(_, lane)| !lane.busy) {
                        while let Some(ready) = lane.waiting.pop_front() {
                            if let Some(reason) = &lane.held_back {
                                payloads_held -= usize::from(ready.holds_payload);
                                failures.push((ready.index, held_back(ready, reason)));
                                continue;
                            }
                            lane.busy = true;
                            wave.push((lane_index, ready));
                            break;
                        }
                    }
                    if !wave.is_empty() {
                        waves.push(self.route_wave(wave));
                    }
                }
                Some(Event::Routed(routed)) => {
                    for (lane_index, index, outcome, held) in routed {
                        payloads_held -= usize::from(held);
                        let lane = &mut lanes[lane_index];
                        lane.busy = false;
                        match outcome {
                            Ok(record) => batch_line.add(record),
                            Err(failure) => {
                                lane.held_back = lane
                                    .resource
                                    .as_ref()
                                    .map(|_| RecordError::HeldBack(failure.id.clone()).to_string());
                                failures.push((index, failure));
                            }
                        }
                    }
                }
            }
        }
        batch_line.write();
        self.archive_all(to_archive, &mut failures).await;
        failures.sort_by_key(|(index, _)| *index);
        failures.into_iter().map(|(_, failure)| failure).collect()
    }

    /// Appends a batch's archive lines in one call, after its routing; a
    /// record whose line the archive did not take is reported failed (unless
    /// it failed already), so the queue gives it back and it is archived on
    /// the retry. Its routing is not held up meanwhile: the destinations
    /// reached skip it as a duplicate then.
    async fn archive_all(
        &self,
        to_archive: Vec<(usize, String, Result<Vec<u8>, ArchiveError>)>,
        failures: &mut Vec<(usize, Failure)>,
    ) {
        let Some(archive) = &self.archive else { return };
        let (mut lines, mut owners) = (Vec::with_capacity(to_archive.len()), Vec::with_capacity(to_archive.len()));
        let mut not_archived = Vec::new();
        for (index, id, line) in to_archive {
            match line {
                Ok(line) => {
                    lines.push(line);
                    owners.push((index, id));
                }
                Err(err) => not_archived.push((index, id, err)),
            }
        }
        if !lines.is_empty() {
            let results = archive.append(&lines).await;
            for ((index, id), result) in owners.into_iter().zip(results) {
                if let Err(err) = result {
                    not_archived.push((index, id, err));
                }
            }
        }
        for (index, id, err) in not_archived {
            error!(
                outcome = Outcome::NotArchived.as_str(),
                message_id = %id,
                error = %err,
                "webhook not archived; will be retried"
            );
            if !failures.iter().any(|(failed, _)| *failed == index) {
                failures.push((index, Failure { id, reason: RecordError::NotArchived(err).to_string() }));
            }
        }
    }

    /// A record as its lane needs it: its claim-checked payload fetched, its
    /// event type and resource read.
    async fn read(&self, index: usize, record: Record) -> Ready {
        let Record { id, message, claim_check, received } = record;
        let holds_payload = claim_check.is_some();
        let message = match (message, &claim_check) {
            (Ok(envelope), Some(reference)) => {
                claim_check::resolve(self.payloads.as_deref(), envelope, Some(reference))
                    .await
                    .map_err(|err| DecodeError::PayloadUnavailable(err.to_string()))
            }
            (message, _) => message,
        };
        let message = message.map(|envelope| {
            let probe = probe(&envelope.source, &envelope.body);
            (envelope, probe)
        });
        let archive_line = match (&self.archive, &message) {
            (Some(archive), Ok((envelope, probe))) => {
                let received = received.unwrap_or_else(|| {
                    DateTime::from_timestamp_millis(self.clock.now_unix_millis()).unwrap_or_default()
                });
                Some(self.archive_line(archive.as_ref(), envelope, probe, received, claim_check.as_deref()).await)
            }
            _ => None,
        };
        Ready { index, id, message, holds_payload, archive_line }
    }

    /// A record's archive line: the body in it, unless the line would be
    /// over the archive's limit; then the body is kept by reference, where
    /// it already is if it came by claim check, else in the payload store.
    async fn archive_line(
        &self,
        archive: &dyn Archive,
        envelope: &Envelope,
        probe: &Probe,
        received: DateTime<Utc>,
        claim_check: Option<&str>,
    ) -> Result<Vec<u8>, ArchiveError> {
        let bytes = envelope.body.len() as u64;
        let limit = archive.max_line_bytes().unwrap_or(usize::MAX);
        let mut record = ArchiveRecord {
            id: envelope.id.clone(),
            source: envelope.source.clone(),
            timestamp: envelope.timestamp,
            event_type: probe.event_type.clone(),
            received,
            resource_id: probe.resource_id.clone(),
            body: match claim_check {
                // The line is longer than the body: no need to write it out to know.
                Some(reference) if envelope.body.len() > limit => {
                    ArchivedBody::ClaimCheck { claim_check: reference.to_owned(), bytes }
                }
                _ => ArchivedBody::inline(&envelope.body),
            },
        };
        let line = record.to_line();
        if line.len() <= limit {
            return Ok(line);
        }
        let reference = match claim_check {
            Some(reference) => reference.to_owned(),
            None => {
                let store = self.payloads.as_deref().ok_or(ArchiveError::TooLarge(line.len()))?;
                store
                    .put(&claim_check::key_for(envelope), &envelope.body)
                    .await
                    .map_err(|err| ArchiveError::Unavailable(err.to_string()))?
            }
        };
        record.body = ArchivedBody::ClaimCheck { claim_check: reference, bytes };
        Ok(record.to_line())
    }

    /// Routes one wave and logs each record's outcome; says for each record
    /// which lane, which record, how it ended, and whether it held a
    /// claim-checked payload.
    async fn route_wave(
        &self,
        mut wave: Vec<(usize, Ready)>,
    ) -> Vec<(usize, usize, Result<RoutedRecord, Failure>, bool)> {
        wave.sort_by_key(|(_, ready)| ready.index);
        let mut plans = Vec::new();
        let mut records = Vec::new();
        for (lane, Ready { index, id, message, holds_payload, .. }) in wave {
            let webhook_id = message.as_ref().map_or_else(|_| "-".to_owned(), |(e, _)| e.id.clone());
            let signed_at = message.as_ref().map(|(e, _)| e.timestamp).ok();
            let outcome = match message.map_err(RecordError::from).and_then(|(e, probe)| self.plan(e, probe)) {
                Ok(plan) => {
                    plans.push(plan);
                    None
                }
                Err(err) => Some(Err(err)),
            };
            records.push((lane, index, id, holds_payload, webhook_id, signed_at, outcome));
        }
        let mut delivered = self.deliver_planned(&plans).await.into_iter();
        records
            .into_iter()
            .map(|(lane, index, id, holds_payload, webhook_id, signed_at, outcome)| {
                let outcome = outcome.or_else(|| delivered.next()).expect("one outcome per plan");
                (lane, index, self.logged(id, webhook_id, signed_at, outcome), holds_payload)
            })
            .collect()
    }

    /// Logs a record's outcome: a failure at `error`; a webhook routed at
    /// `warn` when some destination had it already or its payload has
    /// fields the model does not name (so their metrics are kept at
    /// `LogLevel` `warn` too), else at `debug` (its batch's line names it).
    fn logged(
        &self,
        id: String,
        webhook_id: String,
        signed_at: Option<i64>,
        outcome: Result<Routed, RecordError>,
    ) -> Result<RoutedRecord, Failure> {
        match outcome {
            Ok(routed) => {
                let age_secs = signed_at.map(|t| self.clock.now_unix().saturating_sub(t));
                macro_rules! routed_line {
                    ($level:ident, $message:literal) => {
                        $level!(
                            outcome = Outcome::Routed.as_str(),
                            webhook_id,
                            event_type = %routed.event_type,
                            route = %routed.route,
                            delivered = routed.delivered,
                            duplicates = routed.duplicates,
                            age_secs,
                            unknown_fields = routed.unknown_fields,
                            $message
                        )
                    };
                }
                if routed.unknown_fields > 0 {
                    routed_line!(
                        warn,
                        "webhook routed; its payload has fields the model does not name (see `nectar-webhooks drift`)"
                    );
                } else if routed.duplicates > 0 {
                    routed_line!(warn, "webhook routed; destinations that had it already were skipped");
                } else {
                    routed_line!(debug, "webhook routed");
                }
                Ok(RoutedRecord { webhook_id, delivered: routed.delivered, duplicates: routed.duplicates, age_secs })
            }
            Err(err) => {
                error!(
                    outcome = Outcome::NotRouted.as_str(),
                    webhook_id,
                    message_id = %id,
                    error = %err,
                    "webhook not routed; will be retried"
                );
                Err(Failure { id, reason: err.to_string() })
            }
        }
    }

    /// A webhook young enough to deliver, with its route.
    fn plan(&self, envelope: Envelope, probe: Probe) -> Result<Plan<'_>, RecordError> {
        self.young_enough(&envelope)?;
        let event_type = probe.event_type;
        let route =
            self.table.route(&event_type, &envelope.body).ok_or_else(|| RecordError::NoRoute(event_type.clone()))?;
        Ok(Plan {
            route_name: route.name(),
            destinations: &route.destinations,
            unknown_fields: drift::unknown_paths(&event_type, &envelope.body),
            event_type,
            resource_id: probe.resource_id,
            envelope,
        })
    }

    /// Delivers each planned webhook to every destination of its route,
    /// skipping those that already have it: claims every (webhook,
    /// destination) key, hands each destination all its deliveries at once,
    /// then completes what was delivered and releases what was not. A
    /// webhook fails if any of its destinations failed; those that succeeded
    /// are remembered, so a retry reaches only the rest. A webhook whose
    /// claims could not all be made is not delivered anywhere. One outcome
    /// per plan, in order.
    async fn deliver_planned(&self, plans: &[Plan<'_>]) -> Vec<Result<Routed, RecordError>> {
        let keys: Vec<(usize, &Destination, String)> = plans
            .iter()
            .enumerate()
            .flat_map(|(p, plan)| {
                plan.destinations.iter().map(move |d| (p, d, idempotency_key(&self.key_scope, &plan.envelope, d)))
            })
            .collect();
        let owner = match Lease::new() {
            Ok(owner) => owner,
            Err(err) => {
                let reason = err.to_string();
                return plans
                    .iter()
                    .map(|_| Err(RecordError::Store(StoreError::Unavailable(reason.clone()))))
                    .collect();
            }
        };
        let claims = join_all(keys.iter().map(|(_, _, key)| self.seen.claim_as(key, &owner))).await;
        let mut tally: Vec<Tally> = plans.iter().map(|_| Tally::default()).collect();
        let mut leases: Vec<Option<Lease>> = Vec::with_capacity(keys.len());
        for ((p, destination, _), claim) in keys.iter().zip(claims) {
            let tally = &mut tally[*p];
            leases.push(match claim {
                Ok(Claim::Acquired(lease)) => Some(lease),
                Ok(Claim::AlreadyDelivered) => {
                    debug!(webhook_id = %plans[*p].envelope.id, %destination, "duplicate webhook; already delivered, skipped");
                    tally.duplicates += 1;
                    None
                }
                Ok(Claim::InProgress) => {
                    tally.failures.push(format!("{destination}: a delivery of the same webhook is under way"));
                    None
                }
                Err(err) => {
                    tally.store.get_or_insert(err);
                    None
                }
            });
        }
        let mut by_destination: Vec<(&Destination, Vec<usize>)> = Vec::new();
        for (k, (p, destination, _)) in keys.iter().enumerate() {
            if leases[k].is_none() || tally[*p].store.is_some() {
                continue;
            }
            match by_destination.iter_mut().find(|(d, _)| d == destination) {
                Some((_, members)) => members.push(k),
                None => by_destination.push((destination, vec![k])),
            }
        }
        let sends = by_destination.iter().map(|(destination, members)| {
            let deliveries: Vec<Delivery<'_>> = members.iter().map(|&k| plans[keys[k].0].delivery()).collect();
            async move { self.deliver.deliver_all(destination, &deliveries).await }
        });
        let mut results: Vec<Option<Result<(), DeliveryError>>> = keys.iter().map(|_| None).collect();
        for ((_, members), sent) in by_destination.iter().zip(join_all(sends).await) {
            for (&k, result) in members.iter().zip(sent) {
                results[k] = Some(result);
            }
        }
        let settling = keys
            .iter()
            .zip(&leases)
            .zip(results)
            .map(|(((_, destination, key), lease), result)| self.settle(destination, key, lease.as_ref(), result));
        let mut delivered = Vec::new();
        for (k, settled) in join_all(settling).await.into_iter().enumerate() {
            let (p, destination, key) = &keys[k];
            let tally = &mut tally[*p];
            match settled {
                Settled::Delivered => {
                    tally.delivered += 1;
                    let lease = leases[k].clone().expect("a delivered key was claimed");
                    delivered.push((key.clone(), lease, plans[*p].envelope.id.as_str(), *destination));
                }
                Settled::Failed(failure) => tally.failures.push(failure),
                Settled::StoreFailed(err) => {
                    tally.store.get_or_insert(err);
                }
                Settled::Untouched => {}
            }
        }
        self.remember_delivered(delivered).await;
        plans
            .iter()
            .zip(tally)
            .map(|(plan, tally)| {
                if let Some(err) = tally.store {
                    return Err(RecordError::Store(err));
                }
                if let Some(first) = tally.failures.first() {
                    return Err(RecordError::Delivery {
                        failed: tally.failures.len(),
                        total: plan.destinations.len(),
                        first: first.clone(),
                    });
                }
                Ok(Routed {
                    event_type: plan.event_type.clone(),
                    route: plan.route_name.clone(),
                    delivered: tally.delivered,
                    duplicates: tally.duplicates,
                    unknown_fields: plan.unknown_fields,
                })
            })
            .collect()
    }

    /// Releases a claimed key that was not delivered; one that was is
    /// completed with the rest of its wave ([`Self::remember_delivered`]).
    async fn settle(
        &self,
        destination: &Destination,
        key: &str,
        lease: Option<&Lease>,
        result: Option<Result<(), DeliveryError>>,
    ) -> Settled {
        let Some(lease) = lease else { return Settled::Untouched };
        match result {
            Some(Ok(())) => Settled::Delivered,
            Some(Err(err)) => match self.seen.release(key, lease).await {
                Ok(()) => Settled::Failed(format!("{destination}: {err}")),
                Err(store) => Settled::StoreFailed(store),
            },
            None => match self.seen.release(key, lease).await {
                Ok(()) => Settled::Untouched,
                Err(store) => Settled::StoreFailed(store),
            },
        }
    }
}

/// A webhook on its way: its route's destinations, and what a delivery says.
struct Plan<'r> {
    envelope: Envelope,
    event_type: String,
    route_name: String,
    resource_id: Option<String>,
    destinations: &'r [Destination],
    unknown_fields: usize,
}

impl Plan<'_> {
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            envelope: &self.envelope,
            event_type: &self.event_type,
            route: &self.route_name,
            resource_id: self.resource_id.as_deref(),
        }
    }
}

/// One planned webhook's destinations, as they went.
#[derive(Default)]
struct Tally {
    delivered: usize,
    duplicates: usize,
    failures: Vec<String>,
    store: Option<StoreError>,
}

/// What became of one claimed key.
enum Settled {
    Delivered,
    Failed(String),
    StoreFailed(StoreError),
    /// Not claimed here, or claimed and released without a delivery.
    Untouched,
}

/// How many claim-checked payloads a batch holds in memory at once.
pub const PAYLOADS_AT_ONCE: usize = 2;

/// A record read and probed, waiting for its turn in its lane.
struct Ready {
    /// Its place in the batch.
    index: usize,
    id: String,
    message: Result<(Envelope, Probe), DecodeError>,
    /// Whether it counts against [`PAYLOADS_AT_ONCE`] until routed.
    holds_payload: bool,
    /// Its archive line, when the router archives: taken when it is read.
    archive_line: Option<Result<Vec<u8>, ArchiveError>>,
}

/// The records about one resource (or one record about none), in batch order.
struct Lane {
    resource: Option<String>,
    waiting: VecDeque<Ready>,
    /// A record of the lane is being routed.
    busy: bool,
    /// Why the lane's later records are not attempted: an earlier one failed.
    held_back: Option<String>,
}

/// What `route_batch` waits for.
enum Event {
    /// A record was read.
    Read(Ready),
    /// Nothing more can be read without waiting, and no wave is under way.
    Settled,
    /// A wave is done: for each of its records, its lane, its place in the
    /// batch, how it ended, and whether it held a payload.
    Routed(Vec<(usize, usize, Result<RoutedRecord, Failure>, bool)>),
}

/// Reports a record not attempted because an earlier one failed.
fn held_back(ready: Ready, reason: &str) -> Failure {
    let webhook_id = ready.message.as_ref().map_or("-", |(e, _)| e.id.as_str());
    warn!(webhook_id, message_id = %ready.id, reason, "webhook held back behind an earlier failure; will be retried");
    Failure { id: ready.id, reason: reason.to_owned() }
}

impl<D, S: SeenStore> Router<D, S> {
    /// Completes a wave's delivered keys together ([`SeenStore::complete_all`]:
    /// one write for the wave in DynamoDB), each with its webhook and
    /// destination, trying [`COMPLETE_ATTEMPTS`] times. A delivery happened,
    /// so it counts as delivered even if completing keeps failing: reporting
    /// the record failed would have this router deliver it again on the
    /// retry. What is left is a window: the key stays claimed (`delivering`)
    /// until its lease ends ([`crate::core::dedup::DEFAULT_LEASE`] after the
    /// claim); a copy of the webhook arriving before then finds the delivery
    /// under way and is retried, but one arriving after it (a retry of such
    /// a copy, a later re-send) is delivered a second time.
    async fn remember_delivered(&self, delivered: Vec<(String, Lease, &str, &Destination)>) {
        let mut pending: Vec<usize> = (0..delivered.len()).collect();
        for attempt in 1..=COMPLETE_ATTEMPTS {
            if pending.is_empty() {
                return;
            }
            let done: Vec<(String, Lease)> =
                pending.iter().map(|&i| (delivered[i].0.clone(), delivered[i].1.clone())).collect();
            let results = self.seen.complete_all(&done).await;
            let mut again = Vec::new();
            for (&i, result) in pending.iter().zip(results) {
                let (_, _, webhook_id, destination) = &delivered[i];
                match result {
                    Ok(()) => {}
                    Err(err @ StoreError::LeaseLost(_)) => error!(webhook_id, %destination, error = %err,
                        "delivered after the claim expired; another delivery may duplicate it"),
                    Err(err) if attempt < COMPLETE_ATTEMPTS => {
                        warn!(webhook_id, %destination, attempt, error = %err, "delivered; completing again");
                        again.push(i);
                    }
                    Err(err) => error!(webhook_id, %destination, error = %err,
                        "delivered, but not remembered; a copy arriving after the claim's lease may be delivered again"),
                }
            }
            pending = again;
        }
    }

    /// Refuses a webhook signed longer ago than the idempotency store
    /// remembers, less [`AGE_MARGIN`]: a copy re-sent by hand however late
    /// then fails into the dead-letter queue instead of reaching a
    /// destination a second time. Claim-checked payloads are kept as long
    /// as the store remembers, so this also means the router never acts on
    /// a pointer whose payload has expired.
    fn young_enough(&self, envelope: &Envelope) -> Result<(), RecordError> {
        if !self.limits_age {
            return Ok(());
        }
        let window = self.seen.remembers().saturating_sub(AGE_MARGIN);
        let age = self.clock.now_unix().saturating_sub(envelope.timestamp);
        if age > i64::try_from(window.as_secs()).unwrap_or(i64::MAX) {
            return Err(RecordError::TooOld {
                age_hours: age / 3600,
                ttl_days: self.seen.remembers().as_secs() / 86_400,
            });
        }
        Ok(())
    }
}

fn idempotency_key(scope: &str, envelope: &Envelope, destination: &Destination) -> String {
    format!("{scope}{}/{}/{destination}", envelope.source, envelope.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::FixedClock;
    use crate::core::dedup::{DEFAULT_LEASE, InMemorySeen};
    use bytes::Bytes;
    use std::sync::Mutex;

    /// Records deliveries; fails for destinations named `file:broken`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, String)>>);

    impl Deliver for Recorder {
        async fn deliver(&self, destination: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
            if *destination == Destination::File("broken".into()) {
                return Err(DeliveryError("broken on purpose".into()));
            }
            self.0.lock().unwrap().push((
                destination.to_string(),
                delivery.envelope.id.clone(),
                delivery.event_type.to_owned(),
            ));
            Ok(())
        }
    }

    /// When the test webhooks were signed.
    const SIGNED_AT: i64 = 1_796_400_000;

    fn envelope(id: &str, body: &str) -> Envelope {
        let body = Bytes::copy_from_slice(body.as_bytes());
        Envelope { source: "nectar".into(), id: id.into(), timestamp: SIGNED_AT, body }
    }

    /// A router whose clock reads `SIGNED_AT` plus `age`.
    fn at_age<D: Deliver>(table: RouteTable, deliver: D, seen: InMemorySeen, age: Duration) -> Router<D, InMemorySeen> {
        let now = SIGNED_AT + i64::try_from(age.as_secs()).unwrap();
        Router::new(table, deliver, seen).with_clock(Arc::new(FixedClock(now)))
    }

    fn router(routes: &str) -> Router<Recorder, InMemorySeen> {
        at_age(RouteTable::parse(routes).unwrap(), Recorder::default(), InMemorySeen::default(), Duration::ZERO)
    }

    fn ids(failures: &[Failure]) -> Vec<&str> {
        failures.iter().map(|f| f.id.as_str()).collect()
    }

    fn record(id: &str, body: &str) -> Record {
        Record { id: format!("sqs-{id}"), message: Ok(envelope(id, body)), claim_check: None, received: None }
    }

    #[tokio::test]
    async fn routes_by_event_type() {
        let router = router("document.*=file:docs;*=stdout");
        let failed = router
            .route_batch(vec![
                record("a", r#"{"eventType":"document.created.v2"}"#),
                record("b", r#"{"eventType":"connection.updated"}"#),
                record("c", "not json"),
            ])
            .await;
        assert!(failed.is_empty());
        let seen = router.deliver.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("file:docs".into(), "a".into(), "document.created.v2".into()),
                ("stdout".into(), "b".into(), "connection.updated".into()),
                ("stdout".into(), "c".into(), "unknown".into()),
            ]
        );
    }

    #[tokio::test]
    async fn the_same_webhook_twice_is_delivered_once() {
        let router = router("*=stdout");
        let body = r#"{"eventType":"document.created"}"#;
        assert!(router.route_batch(vec![record("a", body)]).await.is_empty());
        assert!(router.route_batch(vec![record("a", body)]).await.is_empty());
        assert_eq!(router.deliver.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_same_webhook_twice_in_one_batch_is_delivered_once_and_the_copy_retried() {
        let router = router("*=stdout");
        let body = r#"{"eventType":"document.created"}"#;
        let slow_first = at_age(router.table.clone(), SlowOnce::default(), InMemorySeen::default(), Duration::ZERO);
        let failed = slow_first.route_batch(vec![record("a", body), record("a", body)]).await;
        assert_eq!(failed.len(), 1, "the copy found the first delivery under way");
        assert_eq!(*slow_first.deliver.0.lock().unwrap(), 1);
        assert!(slow_first.route_batch(vec![record("a", body)]).await.is_empty(), "its retry is a duplicate");
        assert_eq!(*slow_first.deliver.0.lock().unwrap(), 1);
    }

    /// Records the order of deliveries; the first webhook of a batch takes
    /// longer (yields several times), as a slow network call would.
    #[derive(Default)]
    struct SlowFirst(Mutex<Vec<String>>);

    impl Deliver for SlowFirst {
        async fn deliver(&self, _: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
            let yields = if delivery.envelope.id == "a1" { 5 } else { 1 };
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            self.0.lock().unwrap().push(delivery.envelope.id.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_resources_events_are_delivered_in_batch_order_others_alongside() {
        let table = RouteTable::parse("*=stdout").unwrap();
        let router = at_age(table, SlowFirst::default(), InMemorySeen::default(), Duration::ZERO);
        let failed = router
            .route_batch(vec![
                record("a1", r#"{"eventType":"document.created.v2","id":"doc-a"}"#),
                record("a2", r#"{"eventType":"document.updated.v2","id":"doc-a"}"#),
                record("b1", r#"{"eventType":"document.created.v2","id":"doc-b"}"#),
            ])
            .await;
        assert!(failed.is_empty());
        assert_eq!(*router.deliver.0.lock().unwrap(), ["b1", "a1", "a2"], "b1 did not wait for doc-a's events");
    }

    /// Records the order of deliveries; the first delivery of `a1` fails.
    #[derive(Default)]
    struct FailsA1Once(Mutex<(bool, Vec<String>)>);

    impl Deliver for FailsA1Once {
        async fn deliver(&self, _: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
            let mut state = self.0.lock().unwrap();
            if delivery.envelope.id == "a1" && !state.0 {
                state.0 = true;
                return Err(DeliveryError("a1 fails once".into()));
            }
            state.1.push(delivery.envelope.id.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn after_a_failure_a_resources_later_events_wait_for_the_retry_and_arrive_in_order() {
        let table = RouteTable::parse("*=stdout").unwrap();
        let router = at_age(table, FailsA1Once::default(), InMemorySeen::default(), Duration::ZERO);
        let batch = || {
            vec![
                record("a1", r#"{"eventType":"document.created.v2","id":"doc-a"}"#),
                record("a2", r#"{"eventType":"document.updated.v2","id":"doc-a"}"#),
                record("b1", r#"{"eventType":"document.created.v2","id":"doc-b"}"#),
                record("a3", r#"{"eventType":"document.deleted.v2","id":"doc-a"}"#),
            ]
        };
        let failed = router.route_batch(batch()).await;
        assert_eq!(ids(&failed), ["sqs-a1", "sqs-a2", "sqs-a3"]);
        assert!(
            failed[1].reason.contains("an earlier event about the same resource (message sqs-a1) failed"),
            "{failed:?}"
        );
        assert_eq!(router.deliver.0.lock().unwrap().1, ["b1"], "neither a2 nor a3 went ahead of a1");

        let retry: Vec<Record> = batch().into_iter().filter(|r| failed.iter().any(|f| f.id == r.id)).collect();
        assert!(router.route_batch(retry).await.is_empty());
        assert_eq!(router.deliver.0.lock().unwrap().1, ["b1", "a1", "a2", "a3"]);
    }

    /// An in-memory store whose `complete` fails its first `failures` calls.
    struct FlakyComplete {
        inner: InMemorySeen,
        failures: Mutex<u32>,
        completes: Mutex<u32>,
    }

    impl FlakyComplete {
        fn failing(failures: u32) -> Self {
            Self { inner: InMemorySeen::default(), failures: Mutex::new(failures), completes: Mutex::new(0) }
        }
    }

    impl SeenStore for FlakyComplete {
        fn remembers(&self) -> Duration {
            self.inner.remembers()
        }
        async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
            self.inner.claim(key).await
        }
        async fn complete(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
            *self.completes.lock().unwrap() += 1;
            let fail = {
                let mut failures = self.failures.lock().unwrap();
                let fail = *failures > 0;
                *failures = failures.saturating_sub(1);
                fail
            };
            if fail {
                return Err(StoreError::Unavailable("throttled".into()));
            }
            self.inner.complete(key, lease).await
        }
        async fn release(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
            self.inner.release(key, lease).await
        }
    }

    fn flaky_router(failures: u32) -> Router<Recorder, FlakyComplete> {
        let table = RouteTable::parse("*=stdout").unwrap();
        Router::new(table, Recorder::default(), FlakyComplete::failing(failures))
            .with_clock(Arc::new(FixedClock(SIGNED_AT)))
    }

    #[tokio::test]
    async fn completing_a_delivery_is_retried_and_then_remembered() {
        let router = flaky_router(COMPLETE_ATTEMPTS - 1);
        let body = r#"{"eventType":"document.created.v2"}"#;
        assert!(router.route_batch(vec![record("a", body)]).await.is_empty());
        assert_eq!(*router.seen.completes.lock().unwrap(), COMPLETE_ATTEMPTS);
        assert!(router.route_batch(vec![record("a", body)]).await.is_empty(), "a duplicate, skipped");
        assert_eq!(router.deliver.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_delivery_that_cannot_be_completed_still_counts_and_its_lease_keeps_copies_out() {
        let router = flaky_router(u32::MAX);
        let body = r#"{"eventType":"document.created.v2"}"#;
        assert!(router.route_batch(vec![record("a", body)]).await.is_empty(), "not failed: it was delivered");
        assert_eq!(*router.seen.completes.lock().unwrap(), COMPLETE_ATTEMPTS);
        let copy = router.route_batch(vec![record("a", body)]).await;
        assert!(copy[0].reason.contains("under way"), "{copy:?}");
        assert_eq!(router.deliver.0.lock().unwrap().len(), 1, "delivered once");
    }

    /// Payloads by reference (`mem://KEY`); counts fetches begun, and the
    /// most payloads held at once: fetched or being fetched, not yet delivered.
    #[derive(Default)]
    struct Payloads {
        bodies: Mutex<std::collections::HashMap<String, Bytes>>,
        fetched: Mutex<usize>,
        delivered: Mutex<usize>,
        most_held: Mutex<usize>,
    }

    impl PayloadStore for Payloads {
        fn put<'a>(&'a self, key: &'a str, body: &'a [u8]) -> claim_check::StoreFuture<'a, String> {
            self.bodies.lock().unwrap().insert(key.to_owned(), Bytes::copy_from_slice(body));
            Box::pin(async move { Ok(format!("mem://{key}")) })
        }

        fn get<'a>(&'a self, reference: &'a str) -> claim_check::StoreFuture<'a, Bytes> {
            Box::pin(async move {
                let held = {
                    let mut fetched = self.fetched.lock().unwrap();
                    *fetched += 1;
                    *fetched - *self.delivered.lock().unwrap()
                };
                {
                    let mut most_held = self.most_held.lock().unwrap();
                    *most_held = (*most_held).max(held);
                }
                tokio::task::yield_now().await;
                let key = reference.trim_start_matches("mem://");
                let body = self.bodies.lock().unwrap().get(key).cloned();
                body.ok_or_else(|| claim_check::ClaimCheckError(format!("{key}: no such payload")))
            })
        }
    }

    /// Delivers in order of arrival, yielding twice as a network call would,
    /// and tells the payload store each delivery is done.
    struct Counted(Arc<Payloads>, Mutex<Vec<String>>);

    impl Deliver for Counted {
        async fn deliver(&self, _: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            self.1.lock().unwrap().push(delivery.envelope.id.clone());
            *self.0.delivered.lock().unwrap() += 1;
            Ok(())
        }
    }

    /// A record whose payload waits in `payloads` under its id.
    fn claim_checked(payloads: &Payloads, id: &str, body: &str) -> Record {
        payloads.bodies.lock().unwrap().insert(id.to_owned(), Bytes::copy_from_slice(body.as_bytes()));
        let mut envelope = envelope(id, "");
        envelope.body = Bytes::new();
        Record {
            id: format!("sqs-{id}"),
            message: Ok(envelope),
            claim_check: Some(format!("mem://{id}")),
            received: None,
        }
    }

    fn claim_checking_router(payloads: &Arc<Payloads>) -> Router<Counted, InMemorySeen> {
        let table = RouteTable::parse("*=stdout").unwrap();
        at_age(table, Counted(Arc::clone(payloads), Mutex::default()), InMemorySeen::default(), Duration::ZERO)
            .with_payload_store(Arc::clone(payloads) as Arc<dyn PayloadStore>)
    }

    #[tokio::test]
    async fn claim_checked_payloads_are_fetched_in_turn_and_few_are_held_at_once() {
        let payloads = Arc::new(Payloads::default());
        let router = claim_checking_router(&payloads);
        let event = |resource: &str| format!(r#"{{"eventType":"document.updated.v2","id":"{resource}"}}"#);
        let mut batch: Vec<Record> =
            (1..=8).map(|n| claim_checked(&payloads, &format!("big{n}"), &event(&format!("doc-{}", n % 3)))).collect();
        batch.insert(3, record("small", &event("doc-1")));
        assert!(router.route_batch(batch).await.is_empty());

        assert_eq!(*payloads.fetched.lock().unwrap(), 8, "each payload fetched once");
        let most_held = *payloads.most_held.lock().unwrap();
        assert!(most_held <= PAYLOADS_AT_ONCE, "{most_held} payloads held at once");
        let delivered = router.deliver.1.lock().unwrap().clone();
        assert_eq!(delivered.len(), 9);
        let order = |ids: &[&str]| -> Vec<usize> {
            ids.iter().map(|id| delivered.iter().position(|d| d == id).unwrap()).collect()
        };
        for lane in [&["big3", "big6"][..], &["big1", "small", "big4", "big7"], &["big2", "big5", "big8"]] {
            let positions = order(lane);
            assert!(positions.is_sorted(), "{lane:?} in batch order: {delivered:?}");
        }
    }

    #[tokio::test]
    async fn a_payload_that_cannot_be_fetched_holds_back_the_records_after_it() {
        let payloads = Arc::new(Payloads::default());
        let router = claim_checking_router(&payloads);
        let body = r#"{"eventType":"document.created.v2","id":"doc-a"}"#;
        let mut gone = claim_checked(&payloads, "gone", body);
        gone.claim_check = Some("mem://missing".into());
        let batch = vec![record("before", body), gone, record("after", r#"{"eventType":"document.created.v2"}"#)];
        let failed = router.route_batch(batch).await;
        assert_eq!(ids(&failed), ["sqs-gone", "sqs-after"]);
        assert!(failed[0].reason.contains("missing: no such payload"), "{}", failed[0].reason);
        assert!(failed[1].reason.contains("payload could not be fetched"), "{}", failed[1].reason);
        assert_eq!(*router.deliver.1.lock().unwrap(), ["before"]);
    }

    /// Counts deliveries; yields once inside each, as a network call would.
    #[derive(Default)]
    struct SlowOnce(Mutex<u32>);

    impl Deliver for SlowOnce {
        async fn deliver(&self, _: &Destination, _: &Delivery<'_>) -> Result<(), DeliveryError> {
            tokio::task::yield_now().await;
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_failed_records_are_reported_and_retries_skip_delivered_destinations() {
        let router = router("document.*=stdout,file:broken;*=stdout");
        let failed = router
            .route_batch(vec![
                record("a", r#"{"eventType":"document.created"}"#),
                Record {
                    id: "sqs-poison".into(),
                    message: Err(DecodeError::MissingAttribute("webhook-id")),
                    claim_check: None,
                    received: None,
                },
                record("b", r#"{"eventType":"connection.created"}"#),
            ])
            .await;
        assert_eq!(ids(&failed), ["sqs-a", "sqs-poison"]);
        assert!(failed[0].reason.contains("broken on purpose"), "{}", failed[0].reason);
        assert!(failed[1].reason.contains("webhook-id"), "{}", failed[1].reason);

        let retried = router.route_batch(vec![record("a", r#"{"eventType":"document.created"}"#)]).await;
        assert_eq!(ids(&retried), ["sqs-a"]);
        let stdout_copies = router.deliver.0.lock().unwrap().iter().filter(|(_, id, _)| id == "a").count();
        assert_eq!(stdout_copies, 1);
    }

    #[tokio::test]
    async fn unmatched_event_types_fail_rather_than_vanish() {
        let router = router("document.*=stdout");
        let failed = router.route_batch(vec![record("a", r#"{"eventType":"connection.created"}"#)]).await;
        assert_eq!(ids(&failed), ["sqs-a"]);
    }

    #[tokio::test]
    async fn a_webhook_older_than_the_store_remembers_fails_instead_of_risking_a_duplicate() {
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        let table = RouteTable::parse("*=stdout").unwrap();
        let seen = || InMemorySeen::new(days(35), DEFAULT_LEASE, 10);
        let body = r#"{"eventType":"document.created.v2"}"#;

        let just_in_time = at_age(table.clone(), Recorder::default(), seen(), days(35) - AGE_MARGIN);
        assert!(just_in_time.route_batch(vec![record("a", body)]).await.is_empty());
        assert_eq!(just_in_time.deliver.0.lock().unwrap().len(), 1);

        let late = at_age(table, Recorder::default(), seen(), days(35) - AGE_MARGIN + Duration::from_secs(1));
        let failed = late.route_batch(vec![record("a", body)]).await;
        assert_eq!(ids(&failed), ["sqs-a"]);
        assert!(failed[0].reason.contains("IDEMPOTENCY_TTL_DAYS (35 days)"), "{}", failed[0].reason);
        assert!(failed[0].reason.contains("could duplicate"), "{}", failed[0].reason);
        assert!(late.deliver.0.lock().unwrap().is_empty(), "not delivered");

        let sample = at_age(RouteTable::parse("*=stdout").unwrap(), Recorder::default(), seen(), days(400));
        assert!(sample.without_age_limit().route_batch(vec![record("a", body)]).await.is_empty(), "local invocation");
    }

    /// Records each `deliver_all` call (destination, webhook ids); refuses
    /// the webhooks in `refuse` (their first delivery only).
    #[derive(Default)]
    struct Batches {
        calls: Mutex<Vec<(String, Vec<String>)>>,
        refuse: Mutex<Vec<String>>,
    }

    impl Deliver for Batches {
        async fn deliver(&self, destination: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
            self.deliver_all(destination, std::slice::from_ref(delivery)).await.pop().unwrap()
        }

        async fn deliver_all(
            &self,
            destination: &Destination,
            deliveries: &[Delivery<'_>],
        ) -> Vec<Result<(), DeliveryError>> {
            tokio::task::yield_now().await;
            let ids: Vec<String> = deliveries.iter().map(|d| d.envelope.id.clone()).collect();
            self.calls.lock().unwrap().push((destination.to_string(), ids.clone()));
            let mut refuse = self.refuse.lock().unwrap();
            ids.iter()
                .map(|id| match refuse.iter().position(|r| r == id) {
                    Some(at) => {
                        refuse.remove(at);
                        Err(DeliveryError(format!("{id} refused by the batch")))
                    }
                    None => Ok(()),
                })
                .collect()
        }
    }

    fn about(id: &str, resource: &str) -> Record {
        record(id, &format!(r#"{{"eventType":"document.updated.v2","id":"{resource}"}}"#))
    }

    #[tokio::test]
    async fn a_batch_about_different_resources_is_one_send_per_destination() {
        let table = RouteTable::parse("*=file:one,file:two").unwrap();
        let router = at_age(table, Batches::default(), InMemorySeen::default(), Duration::ZERO);
        let batch: Vec<Record> = (0..10).map(|n| about(&format!("w{n}"), &format!("doc-{n}"))).collect();
        assert!(router.route_batch(batch).await.is_empty());
        let calls = router.deliver.calls.lock().unwrap().clone();
        let all: Vec<String> = (0..10).map(|n| format!("w{n}")).collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls.iter().any(|(d, ids)| d == "file:one" && *ids == all), "{calls:?}");
        assert!(calls.iter().any(|(d, ids)| d == "file:two" && *ids == all), "{calls:?}");
    }

    #[tokio::test]
    async fn one_resources_records_go_in_successive_sends_in_batch_order() {
        let table = RouteTable::parse("*=file:fifo").unwrap();
        let router = at_age(table, Batches::default(), InMemorySeen::default(), Duration::ZERO);
        let batch = vec![about("a1", "doc-a"), about("b1", "doc-b"), about("a2", "doc-a"), about("a3", "doc-a")];
        assert!(router.route_batch(batch).await.is_empty());
        let sends: Vec<Vec<String>> = router.deliver.calls.lock().unwrap().iter().map(|(_, ids)| ids.clone()).collect();
        assert_eq!(sends, [vec!["a1", "b1"], vec!["a2"], vec!["a3"]]);
    }

    #[tokio::test]
    async fn an_entry_a_batch_send_refuses_fails_only_its_record_and_the_retry_sends_only_it() {
        let table = RouteTable::parse("*=file:one").unwrap();
        let deliver = Batches::default();
        deliver.refuse.lock().unwrap().push("w1".into());
        let router = at_age(table, deliver, InMemorySeen::default(), Duration::ZERO);
        let batch = || vec![about("w0", "doc-0"), about("w1", "doc-1"), about("w2", "doc-2"), about("w1b", "doc-1")];
        let failed = router.route_batch(batch()).await;
        assert_eq!(ids(&failed), ["sqs-w1", "sqs-w1b"], "w1 and, behind it, its resource's later w1b");
        assert!(failed[0].reason.contains("w1 refused by the batch"), "{failed:?}");
        assert!(failed[1].reason.contains("(message sqs-w1) failed"), "{failed:?}");

        let retry: Vec<Record> = batch().into_iter().filter(|r| failed.iter().any(|f| f.id == r.id)).collect();
        assert!(router.route_batch(retry).await.is_empty());
        let sends: Vec<Vec<String>> = router.deliver.calls.lock().unwrap().iter().map(|(_, ids)| ids.clone()).collect();
        assert_eq!(sends, [vec!["w0", "w1", "w2"], vec!["w1"], vec!["w1b"]], "w0 and w2 were not sent again");
    }

    /// Keeps lines up to `limit` bytes; refuses every append while `down`.
    #[derive(Default)]
    struct Lines {
        limit: Option<usize>,
        down: std::sync::atomic::AtomicBool,
        lines: Mutex<Vec<ArchiveRecord>>,
    }

    impl Archive for Lines {
        fn max_line_bytes(&self) -> Option<usize> {
            self.limit
        }

        fn append<'a>(
            &'a self,
            lines: &'a [Vec<u8>],
        ) -> crate::core::archive::ArchiveFuture<'a, Vec<Result<(), ArchiveError>>> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                    return lines.iter().map(|_| Err(ArchiveError::Unavailable("down".into()))).collect();
                }
                for line in lines {
                    assert!(self.limit.is_none_or(|limit| line.len() <= limit));
                    self.lines.lock().unwrap().push(ArchiveRecord::from_line(line).unwrap());
                }
                lines.iter().map(|_| Ok(())).collect()
            })
        }
    }

    #[tokio::test]
    async fn every_record_read_is_archived_large_bodies_by_reference_and_failures_are_retried() {
        let payloads = Arc::new(Payloads::default());
        let archive = Arc::new(Lines { limit: Some(400), ..Lines::default() });
        let router = claim_checking_router(&payloads).with_archive(Arc::clone(&archive) as Arc<dyn Archive>);
        let small = r#"{"eventType":"document.created.v2","id":"doc-1"}"#;
        let large = format!(r#"{{"eventType":"document.updated.v2","id":"doc-2","note":"{}"}}"#, "x".repeat(400));
        let checked = format!(r#"{{"eventType":"document.deleted.v2","id":"doc-3","note":"{}"}}"#, "y".repeat(400));
        let mut unmatched = record("d", r#"{"eventType":"nector.order.created"}"#);
        unmatched.received = DateTime::from_timestamp_millis(1_700_000_000_123);
        let batch = vec![record("a", small), record("b", &large), claim_checked(&payloads, "c", &checked), unmatched];
        let failed = router.route_batch(batch).await;
        assert_eq!(ids(&failed), ["sqs-d"], "no route, but archived all the same");
        let lines = archive.lines.lock().unwrap().clone();
        let by_id = |id: &str| lines.iter().find(|r| r.id == id).unwrap().clone();
        assert_eq!(lines.len(), 4);
        assert_eq!(by_id("a").body.bytes().unwrap().unwrap(), small.as_bytes());
        assert_eq!(by_id("a").event_type, "document.created.v2");
        assert_eq!(by_id("a").resource_id.as_deref(), Some("doc-1"));
        let stored =
            ArchivedBody::ClaimCheck { claim_check: "mem://payloads/nectar/b".into(), bytes: large.len() as u64 };
        assert_eq!(by_id("b").body, stored, "over the limit: kept in the payload store");
        assert_eq!(
            by_id("c").body,
            ArchivedBody::ClaimCheck { claim_check: "mem://c".into(), bytes: checked.len() as u64 }
        );
        assert_eq!(by_id("d").received.timestamp_millis(), 1_700_000_000_123);

        archive.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = router.route_batch(vec![record("e", small)]).await;
        assert_eq!(ids(&failed), ["sqs-e"]);
        assert!(failed[0].reason.contains("archive: down"), "{}", failed[0].reason);
        archive.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(router.route_batch(vec![record("e", small)]).await.is_empty());
        assert_eq!(
            *payloads.delivered.lock().unwrap(),
            4,
            "a, b, c and e once each: e's retry skipped its destination"
        );
        assert_eq!(archive.lines.lock().unwrap().len(), 5);
    }
}
