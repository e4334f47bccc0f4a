//! The destinations a routed webhook can be delivered to.

use crate::adapters::aws::{self, ErrorChain};
use crate::adapters::sqs;
use crate::core::claim_check::{self, PayloadStore};
use crate::core::envelope::{ATTR_EVENT_TYPE, ATTR_ROUTE};
use crate::core::events::NectarEvent;
use crate::core::handlers::Handler;
use crate::core::router::{Deliver, Delivery, DeliveryError};
use crate::core::routing::{Destination, Route, RouteTable};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use base64::Engine as _;
use futures_util::future::join_all;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use thiserror::Error;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;
use tracing::debug;

/// Delivers to SQS queues (standard and FIFO), EventBridge buses, typed
/// handlers, JSON-lines files, standard output, or nowhere.
#[derive(Default)]
pub struct Destinations {
    sqs: Option<aws_sdk_sqs::Client>,
    eventbridge: Option<aws_sdk_eventbridge::Client>,
    handlers: HashMap<String, Box<dyn Handler>>,
    file_lock: Mutex<()>,
    /// Where copies too large for an SQS message go, and the size limit.
    payload_store: Option<(Arc<dyn PayloadStore>, usize)>,
}

impl Destinations {
    pub fn with_sqs(mut self, client: aws_sdk_sqs::Client) -> Self {
        self.sqs = Some(client);
        self
    }

    pub fn with_eventbridge(mut self, client: aws_sdk_eventbridge::Client) -> Self {
        self.eventbridge = Some(client);
        self
    }

    /// Claim-checks copies to SQS destinations larger than `limit` bytes.
    pub fn with_payload_store(mut self, store: Arc<dyn PayloadStore>, limit: usize) -> Self {
        self.payload_store = Some((store, limit));
        self
    }

    /// Registers a typed handler for `handler:NAME` routes.
    pub fn with_handler(mut self, name: &str, handler: impl Handler + 'static) -> Self {
        self.handlers.insert(name.to_owned(), Box::new(handler));
        self
    }

    /// Checks at start-up that every destination of `table` can be reached,
    /// as far as `depth` says; every destination that cannot is reported,
    /// with the first rule that names it.
    pub async fn check(&self, table: &RouteTable, depth: Check) -> Result<(), UnreachableDestinations> {
        let mut seen = HashSet::new();
        let named: Vec<(&Route, &Destination)> = table
            .routes()
            .flat_map(|route| route.destinations.iter().map(move |d| (route, d)))
            .filter(|(_, destination)| seen.insert(*destination))
            .collect();
        let checks = named.iter().map(|(route, destination)| async move {
            self.check_one(destination, depth).await.err().map(|(problem, fix)| UnreachableDestination {
                rule: route.to_string(),
                destination: destination.to_string(),
                problem,
                fix,
            })
        });
        let failed: Vec<_> = join_all(checks).await.into_iter().flatten().collect();
        if failed.is_empty() { Ok(()) } else { Err(UnreachableDestinations(failed)) }
    }

    /// What is wrong with one destination, and the fix.
    async fn check_one(&self, destination: &Destination, depth: Check) -> Result<(), (String, &'static str)> {
        match destination {
            Destination::Sqs(url) => {
                let client = self.sqs.as_ref().ok_or(("has no SQS client".to_owned(), FIX_CLIENT))?;
                if depth == Check::Reachable {
                    sqs::reach(client, url).await.map_err(|err| aws_problem("GetQueueAttributes", &err))?;
                }
                Ok(())
            }
            Destination::EventBridge(bus) => {
                let client = self.eventbridge.as_ref().ok_or(("has no EventBridge client".to_owned(), FIX_CLIENT))?;
                if depth == Check::Reachable {
                    client
                        .describe_event_bus()
                        .name(bus)
                        .send()
                        .await
                        .map_err(|err| aws_problem("DescribeEventBus", &err))?;
                }
                Ok(())
            }
            Destination::Handler(name) if !self.handlers.contains_key(name) => Err((
                format!("names no registered handler (none under {name:?})"),
                "register it with Destinations::with_handler (see examples/typed_handler.rs), or route elsewhere",
            )),
            // Blocking, once at start-up: a [`Check::Configured`] check then
            // makes no await point and is done when first polled.
            Destination::File(path) => {
                std::fs::OpenOptions::new().create(true).append(true).open(path).map(drop).map_err(|err| {
                    (
                        format!("cannot be opened for append ({err})"),
                        "create its directory or make it writable, or change the path",
                    )
                })
            }
            Destination::Handler(_) | Destination::Stdout | Destination::Drop => Ok(()),
        }
    }
}

/// How far [`Destinations::check`] goes.
///
/// `serve` checks [`Check::Reachable`] before it listens: a webhook answered
/// 202 and then lost to a mistyped queue URL or missing credentials is worse
/// than a refusal to start, and the calls cost a developer nothing.
///
/// The router Lambda checks [`Check::Configured`] at cold start, which is
/// free: its role holds only `sqs:SendMessage` and `events:PutEvents` on its
/// destinations, so a `GetQueueAttributes` or `DescribeEventBus` would be
/// denied, and even allowed it would add a round trip per destination to
/// every cold start, for a table the deployment already checked (the
/// template names its queues). A destination that fails there fails its
/// records, which SQS retries and dead-letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Handlers registered, a client for every queue and bus, every file
    /// opened for append (created if missing).
    Configured,
    /// As [`Check::Configured`], plus one harmless call per queue
    /// (`GetQueueAttributes`) and per bus (`DescribeEventBus`).
    Reachable,
}

/// One destination that cannot be reached: the rule that names it, what is
/// wrong, and the fix.
#[derive(Debug, Error)]
#[error("rule {rule:?}: {destination} {problem}; {fix}")]
pub struct UnreachableDestination {
    pub rule: String,
    pub destination: String,
    pub problem: String,
    pub fix: &'static str,
}

/// Every destination [`Destinations::check`] found wanting, one per line.
#[derive(Debug, Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct UnreachableDestinations(pub Vec<UnreachableDestination>);

const FIX_CLIENT: &str = "build Destinations with_sqs / with_eventbridge";

/// What an AWS call's failure means for a destination, and the fix: missing
/// credentials are the common case on a developer's machine.
fn aws_problem(call: &str, error: &(dyn std::error::Error + 'static)) -> (String, &'static str) {
    let cause = aws::short_cause(error);
    if cause == aws::NO_CREDENTIALS {
        return (format!("cannot be reached ({call} failed)"), aws::NO_CREDENTIALS);
    }
    let fix = "check the name or URL in the rule, AWS_REGION, and (for moto or LocalStack) AWS_ENDPOINT_URL";
    (format!("cannot be reached ({call} failed: {cause})"), fix)
}

impl Deliver for Destinations {
    async fn deliver(&self, destination: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
        let one = std::slice::from_ref(delivery);
        match destination {
            Destination::Sqs(url) => only(self.to_sqs(url, destination.is_fifo_queue(), one).await),
            Destination::EventBridge(bus) => only(self.to_eventbridge(bus, one).await),
            Destination::Handler(name) => {
                let handler = self.handlers.get(name).ok_or_else(|| DeliveryError(format!("no handler {name:?}")))?;
                let event = NectarEvent::parse(delivery.event_type, &delivery.envelope.body)
                    .map_err(|err| DeliveryError(format!("cannot type the payload for handler {name:?}: {err}")))?;
                handler.handle(&event, delivery).await
            }
            Destination::File(path) => self.to_file(path, delivery).await,
            Destination::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(json_line(delivery).as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|err| DeliveryError(format!("stdout: {err}")))
            }
            Destination::Drop => {
                // `debug`, as every line of a webhook that went well: its
                // batch's line names it.
                debug!(webhook_id = %delivery.envelope.id, event_type = delivery.event_type, "webhook dropped by route");
                Ok(())
            }
        }
    }

    /// SQS queues and EventBridge buses take up to ten at a time
    /// (`SendMessageBatch`, `PutEvents`), each refused entry failing only
    /// its own delivery; the rest one by one.
    async fn deliver_all(
        &self,
        destination: &Destination,
        deliveries: &[Delivery<'_>],
    ) -> Vec<Result<(), DeliveryError>> {
        match destination {
            Destination::Sqs(url) => self.to_sqs(url, destination.is_fifo_queue(), deliveries).await,
            Destination::EventBridge(bus) => self.to_eventbridge(bus, deliveries).await,
            _ => join_all(deliveries.iter().map(|delivery| self.deliver(destination, delivery))).await,
        }
    }
}

/// The one result of a batch of one.
fn only(mut results: Vec<Result<(), DeliveryError>>) -> Result<(), DeliveryError> {
    results.pop().unwrap_or_else(|| Err(DeliveryError("no result for the delivery".into())))
}

impl Destinations {
    /// Each payload as a message body, with the webhook's attributes; on a
    /// FIFO queue, grouped by resource (so one connection's or document's
    /// events stay in order) and de-duplicated by webhook id. Sent in as
    /// few `SendMessageBatch` requests as SQS's limits allow.
    async fn to_sqs(&self, url: &str, fifo: bool, deliveries: &[Delivery<'_>]) -> Vec<Result<(), DeliveryError>> {
        let Some(client) = self.sqs.as_ref() else {
            return deliveries.iter().map(|_| Err(DeliveryError("no SQS client configured".into()))).collect();
        };
        let (store, limit) = match &self.payload_store {
            Some((store, limit)) => (Some(store.as_ref()), *limit),
            None => (None, usize::MAX),
        };
        let prepared = join_all(deliveries.iter().map(|delivery| async move {
            let mut message = delivery.envelope.to_queue_message();
            message.attributes.push((ATTR_EVENT_TYPE, delivery.event_type.to_owned()));
            message.attributes.push((ATTR_ROUTE, delivery.route.to_owned()));
            let fifo_ids = fifo.then(|| sqs::fifo_ids(delivery.resource_id, &delivery.envelope.id));
            let message = claim_check::fit(store, delivery.envelope, message, limit)
                .await
                .map_err(|err| DeliveryError(err.to_string()))?
                .unwrap_or_else(|inline| inline);
            Ok((message, fifo_ids))
        }))
        .await;
        let mut ready = Vec::new();
        let refused: Vec<Option<DeliveryError>> =
            prepared.into_iter().map(|prepared| prepared.map(|message| ready.push(message)).err()).collect();
        let mut sent = sqs::send_all(client, url, ready).await.into_iter();
        refused
            .into_iter()
            .map(|refused| match refused {
                Some(err) => Err(err),
                None => sent.next().unwrap_or_else(|| Err("no result for the message".into())).map_err(DeliveryError),
            })
            .collect()
    }

    /// `Source` = the webhook's source, `DetailType` = the event type,
    /// `Detail` = the payload's JSON as received (a payload that is not a
    /// JSON object is wrapped as `{"body": "..."}`), `Resources` = the
    /// webhook id as `webhook-id:<svix-id>`. An entry over EventBridge's
    /// limit carries a claim check instead of the payload (see
    /// [`claim_checked_detail`]): never a dead letter for size alone. Put
    /// up to [`EVENTBRIDGE_BATCH_ENTRIES`] at a time, at most
    /// [`EVENTBRIDGE_ENTRY_LIMIT`] bytes together.
    async fn to_eventbridge(&self, bus: &str, deliveries: &[Delivery<'_>]) -> Vec<Result<(), DeliveryError>> {
        let Some(client) = self.eventbridge.as_ref() else {
            return deliveries.iter().map(|_| Err(DeliveryError("no EventBridge client configured".into()))).collect();
        };
        let prepared = join_all(deliveries.iter().map(|delivery| self.eventbridge_entry(bus, delivery))).await;
        let mut chunks: Vec<Vec<(usize, PutEventsRequestEntry)>> = Vec::new();
        let mut bytes = 0;
        let mut results: Vec<Result<(), DeliveryError>> = Vec::with_capacity(deliveries.len());
        for (n, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Ok((entry, size)) => {
                    results.push(Ok(()));
                    match chunks.last_mut() {
                        Some(chunk)
                            if chunk.len() < EVENTBRIDGE_BATCH_ENTRIES && bytes + size <= EVENTBRIDGE_ENTRY_LIMIT =>
                        {
                            bytes += size;
                            chunk.push((n, entry));
                        }
                        _ => {
                            bytes = size;
                            chunks.push(vec![(n, entry)]);
                        }
                    }
                }
                Err(err) => results.push(Err(err)),
            }
        }
        let puts = chunks.into_iter().map(|chunk| async move {
            let (positions, entries): (Vec<usize>, Vec<PutEventsRequestEntry>) = chunk.into_iter().unzip();
            let answer = client.put_events().set_entries(Some(entries)).send().await;
            let outcomes: Vec<Result<(), DeliveryError>> = match answer {
                Ok(output) => (0..positions.len())
                    .map(|n| match output.entries().get(n) {
                        Some(entry) if entry.error_code().is_some() => Err(DeliveryError(format!(
                            "EventBridge refused the event: {} {}",
                            entry.error_code().unwrap_or_default(),
                            entry.error_message().unwrap_or_default()
                        ))),
                        Some(_) => Ok(()),
                        None => Err(DeliveryError("EventBridge's answer did not mention the event".into())),
                    })
                    .collect(),
                Err(err) => {
                    let reason = ErrorChain(&err).to_string();
                    positions.iter().map(|_| Err(DeliveryError(reason.clone()))).collect()
                }
            };
            positions.into_iter().zip(outcomes).collect::<Vec<_>>()
        });
        for (n, outcome) in join_all(puts).await.into_iter().flatten() {
            results[n] = outcome;
        }
        results
    }

    /// One delivery's PutEvents entry and its size as EventBridge counts it.
    async fn eventbridge_entry(
        &self,
        bus: &str,
        delivery: &Delivery<'_>,
    ) -> Result<(PutEventsRequestEntry, usize), DeliveryError> {
        let envelope = delivery.envelope;
        let body = &envelope.body;
        let resource = format!("webhook-id:{}", envelope.id);
        let around_detail = envelope.source.len() + delivery.event_type.len() + resource.len();
        // The detail is at least as long as the body, so a body that alone
        // takes the entry over the limit goes by claim check unparsed: a JSON
        // value of megabytes would sit beside the payload in the router's
        // 128 MB, only to be thrown away.
        let mut detail = if around_detail + body.len() > EVENTBRIDGE_ENTRY_LIMIT {
            String::new()
        } else {
            let is_object =
                matches!(serde_json::from_slice::<serde_json::Value>(body), Ok(serde_json::Value::Object(_)));
            match std::str::from_utf8(body) {
                Ok(text) if is_object => text.to_owned(),
                _ => serde_json::json!({ "body": String::from_utf8_lossy(body) }).to_string(),
            }
        };
        let entry_size = around_detail + detail.len().max(body.len());
        if entry_size > EVENTBRIDGE_ENTRY_LIMIT {
            let (store, _) = self.payload_store.as_ref().ok_or_else(|| {
                DeliveryError(format!(
                    "a {entry_size}-byte EventBridge entry is over its {EVENTBRIDGE_ENTRY_LIMIT}-byte limit and no payload store is configured"
                ))
            })?;
            let reference =
                store.put(&claim_check::key_for(envelope), body).await.map_err(|err| DeliveryError(err.to_string()))?;
            detail = claim_checked_detail(delivery, &reference);
        }
        let size = around_detail + detail.len();
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(&envelope.source)
            .detail_type(delivery.event_type)
            .detail(detail)
            .resources(resource)
            .build();
        Ok((entry, size))
    }

    async fn to_file(&self, path: &str, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
        let line = json_line(delivery);
        let _serialised = self.file_lock.lock().await;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|err| DeliveryError(format!("open {path}: {err}")))?;
        file.write_all(line.as_bytes()).await.map_err(|err| DeliveryError(format!("write {path}: {err}")))?;
        file.flush().await.map_err(|err| DeliveryError(format!("flush {path}: {err}")))
    }
}

/// The most entries one PutEvents takes.
pub const EVENTBRIDGE_BATCH_ENTRIES: usize = 10;

/// The largest PutEvents entry (its source, detail type, detail and
/// resources, in UTF-8 bytes): 1 MB since January 2026, read as the decimal
/// megabyte, the smaller reading.
pub const EVENTBRIDGE_ENTRY_LIMIT: usize = 1_000_000;

/// The `Detail` of an event whose payload is too large for EventBridge:
/// where the payload is (`claimCheck`: `s3://BUCKET/KEY` deployed, readable
/// with `s3:GetObject` on the stack's payload bucket), its size, and what
/// rules most often match on (`eventType`, the resource's `id`).
pub fn claim_checked_detail(delivery: &Delivery<'_>, reference: &str) -> String {
    serde_json::json!({
        "claimCheck": reference,
        "bytes": delivery.envelope.body.len(),
        "eventType": delivery.event_type,
        "id": delivery.resource_id,
    })
    .to_string()
}

/// One line of the `file:` and `stdout` formats: the payload exactly as
/// received in `body` (base64 in `bodyBase64` if it was not UTF-8). A struct,
/// not a JSON map, so the keys keep the documented order and the short ones
/// come before the body, which can run to megabytes.
pub fn json_line(delivery: &Delivery<'_>) -> String {
    let envelope = delivery.envelope;
    let text = std::str::from_utf8(&envelope.body).ok();
    let line = JsonLine {
        id: &envelope.id,
        source: &envelope.source,
        timestamp: envelope.timestamp,
        event_type: delivery.event_type,
        route: delivery.route,
        body: text,
        body_base64: text.is_none().then(|| base64::engine::general_purpose::STANDARD.encode(&envelope.body)),
    };
    let mut text = serde_json::to_string(&line).expect("strings and numbers serialise");
    text.push('\n');
    text
}

/// [`json_line`]'s fields, in the order they are written.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLine<'a> {
    id: &'a str,
    source: &'a str,
    timestamp: i64,
    event_type: &'a str,
    route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envelope::Envelope;

    fn line(body: &'static [u8]) -> String {
        let envelope =
            Envelope { source: "nectar".into(), id: "msg_1".into(), timestamp: 1_700_000_000, body: body.into() };
        json_line(&Delivery { envelope: &envelope, event_type: "document.created.v2", route: "*", resource_id: None })
    }

    #[test]
    fn a_json_line_keeps_the_documented_key_order() {
        assert_eq!(
            line(br#"{"a":1}"#),
            "{\"id\":\"msg_1\",\"source\":\"nectar\",\"timestamp\":1700000000,\"eventType\":\"document.created.v2\",\"route\":\"*\",\"body\":\"{\\\"a\\\":1}\"}\n"
        );
        assert_eq!(
            line(b"\xff"),
            "{\"id\":\"msg_1\",\"source\":\"nectar\",\"timestamp\":1700000000,\"eventType\":\"document.created.v2\",\"route\":\"*\",\"bodyBase64\":\"/w==\"}\n"
        );
    }
}
