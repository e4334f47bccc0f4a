//! CloudWatch metrics without an SDK or an API call: a `tracing` layer that
//! turns the log events the core already emits into
//! [Embedded Metric Format](https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)
//! lines on standard output, which CloudWatch Logs extracts as metrics.
//!
//! The core knows nothing of metrics; this layer reads the typed `outcome`
//! field its log lines carry ([`Outcome`]), never their wording, and the
//! fields beside it:
//!
//! | `outcome` | Metrics (namespace `NectarWebhooks`) |
//! |---|---|
//! | `queued` | `Received`, `Enqueued` |
//! | `rejected` (`reason`) | `Received`, `Rejected` (also by `Reason`) |
//! | `not_queued` | `Received`, `EnqueueFailed` |
//! | `routed` (`event_type`, `route`, `delivered`, `duplicates`, `age_secs`) | `Routed` = delivered (also by `EventType`, `Route`), `DuplicatesSkipped`, `EndToEndAge` (seconds) |
//! | `not_routed` | `DeliveryFailures` |
//! | `dead_lettered` | `DeadLettered` |
//! | `not_archived` | `ArchiveFailures` |
//!
//! Every metric carries the dimension `Function` (`AWS_LAMBDA_FUNCTION_NAME`);
//! those with more dimensions are published both ways, so an alarm can watch
//! the total without naming every reason or route.

use crate::core::events::types::{NECTAR_EVENT_TYPES, UNKNOWN_EVENT_TYPE};
use crate::core::outcome::{OUTCOME_FIELD, Outcome};
use serde_json::{Map, Value, json};
use std::fmt;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "NectarWebhooks";

/// The layer: one EMF line per recognised event, written with `make_writer`.
pub struct EmfLayer<W> {
    function: String,
    make_writer: W,
}

impl<W> EmfLayer<W> {
    /// Metrics for the function `function`, written to `make_writer`.
    pub fn new(function: impl Into<String>, make_writer: W) -> Self {
        Self { function: function.into(), make_writer }
    }
}

impl EmfLayer<fn() -> std::io::Stdout> {
    /// On standard output, for the function named by `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn stdout() -> Self {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
        Self::new(function, std::io::stdout)
    }
}

/// The events the layer needs: this crate's, at `INFO` and above, whatever
/// `RUST_LOG` says about the log lines.
pub fn filter() -> Targets {
    Targets::new().with_target(env!("CARGO_CRATE_NAME"), Level::INFO)
}

impl<S: Subscriber, W: for<'w> MakeWriter<'w> + 'static> Layer<S> for EmfLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = FieldValues::default();
        event.record(&mut fields);
        let Some(outcome) = fields.0.get(OUTCOME_FIELD).and_then(Value::as_str).and_then(Outcome::parse) else {
            return;
        };
        let metrics = metrics_for(outcome, &fields.0);
        let mut line = document(&self.function, unix_millis(), &metrics).to_string();
        line.push('\n');
        // One write per line, so lines never interleave; a failed write only
        // loses a data point.
        let _ = self.make_writer.make_writer().write_all(line.as_bytes());
    }
}

/// One data point: a name, a value, a unit, and dimensions beyond `Function`.
#[derive(Debug, Clone, PartialEq)]
struct Metric {
    name: &'static str,
    value: Value,
    unit: &'static str,
    dimensions: Vec<(&'static str, String)>,
}

fn count(name: &'static str, value: impl Into<Value>) -> Metric {
    Metric { name, value: value.into(), unit: "Count", dimensions: Vec::new() }
}

/// The `EventType` dimension: Nectar's documented types (and `unknown`) as
/// they are, anything else `other`. The type comes from the payload, and
/// every distinct dimension value is a metric CloudWatch bills by the month,
/// so a sender (or anyone past verification) must not be able to mint them.
fn bounded_event_type(event_type: &str) -> String {
    let known = NECTAR_EVENT_TYPES.contains(&event_type) || event_type == UNKNOWN_EVENT_TYPE;
    if known { event_type.to_owned() } else { OTHER_EVENT_TYPE.to_owned() }
}

/// The `EventType` of every type Nectar does not document.
pub const OTHER_EVENT_TYPE: &str = "other";

fn metrics_for(outcome: Outcome, fields: &Map<String, Value>) -> Vec<Metric> {
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    };
    let number = |name: &str| fields.get(name).filter(|v| v.is_number()).cloned();
    match outcome {
        Outcome::Queued => vec![count("Received", 1), count("Enqueued", 1)],
        Outcome::Rejected => {
            vec![count("Received", 1), Metric { dimensions: vec![("Reason", text("reason"))], ..count("Rejected", 1) }]
        }
        Outcome::NotQueued => vec![count("Received", 1), count("EnqueueFailed", 1)],
        Outcome::Routed => {
            let mut metrics = vec![
                Metric {
                    dimensions: vec![("EventType", bounded_event_type(&text("event_type"))), ("Route", text("route"))],
                    ..count("Routed", number("delivered").unwrap_or(json!(0)))
                },
                count("DuplicatesSkipped", number("duplicates").unwrap_or(json!(0))),
            ];
            if let Some(age) = number("age_secs") {
                metrics.push(Metric { unit: "Seconds", ..count("EndToEndAge", age) });
            }
            metrics
        }
        Outcome::NotRouted => vec![count("DeliveryFailures", 1)],
        Outcome::DeadLettered => vec![count("DeadLettered", 1)],
        Outcome::NotArchived => vec![count("ArchiveFailures", 1)],
    }
}

/// The EMF document: one directive per set of extra dimensions; a metric
/// with extra dimensions is published with `Function` alone too.
fn document(function: &str, timestamp_ms: u64, metrics: &[Metric]) -> Value {
    let mut root = Map::new();
    root.insert("Function".into(), json!(function));
    let mut directives: Vec<(Vec<&'static str>, Vec<Value>)> = Vec::new();
    for metric in metrics {
        let names: Vec<&'static str> = metric.dimensions.iter().map(|(name, _)| *name).collect();
        for (name, value) in &metric.dimensions {
            root.insert((*name).into(), json!(value));
        }
        root.insert(metric.name.into(), metric.value.clone());
        let definition = json!({"Name": metric.name, "Unit": metric.unit});
        match directives.iter_mut().find(|(dimensions, _)| *dimensions == names) {
            Some((_, definitions)) => definitions.push(definition),
            None => directives.push((names, vec![definition])),
        }
    }
    let directives: Vec<Value> = directives
        .into_iter()
        .map(|(extra, definitions)| {
            let mut sets = vec![json!(["Function"])];
            if !extra.is_empty() {
                let mut set = vec!["Function"];
                set.extend(extra);
                sets.push(json!(set));
            }
            json!({"Namespace": NAMESPACE, "Dimensions": sets, "Metrics": definitions})
        })
        .collect();
    root.insert("_aws".into(), json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}));
    Value::Object(root)
}

fn unix_millis() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// An event's or span's fields as JSON values: numbers and booleans as
/// such, everything else as text (`%` and `?` values as they display).
#[derive(Debug, Default)]
pub struct FieldValues(pub Map<String, Value>);

impl Visit for FieldValues {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), json!(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), json!(format!("{value:?}")));
    }
}

/// A writer into a shared buffer, for tests of what the layers write.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Everything written, one JSON value per line.
    pub(crate) fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{error, info, warn};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// The EMF lines emitted while `f` runs.
    fn emf(f: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let writer = out.clone();
        let layer = EmfLayer::new("nectar-router", move || writer.clone()).with_filter(filter());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        out.lines()
    }

    /// (dimension sets, metric names) of each directive.
    fn directives(line: &Value) -> Vec<(Value, Vec<String>)> {
        let directives = line["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        directives
            .iter()
            .map(|d| {
                assert_eq!(d["Namespace"], NAMESPACE);
                let names = d["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap().to_owned());
                (d["Dimensions"].clone(), names.collect())
            })
            .collect()
    }

    #[test]
    fn a_queued_webhook_is_received_and_enqueued() {
        let lines =
            emf(|| info!(outcome = "queued", webhook_id = "msg_1", source = "nectar", bytes = 42, "webhook queued"));
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["Function"], "nectar-router");
        assert_eq!((line["Received"].clone(), line["Enqueued"].clone()), (json!(1), json!(1)));
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(directives(line), [(json!([["Function"]]), vec!["Received".to_owned(), "Enqueued".to_owned()])]);
        let units = &line["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(units[0]["Unit"], "Count");
    }

    #[test]
    fn a_rejection_is_counted_in_total_and_by_reason() {
        let lines = emf(|| {
            warn!(
                webhook_id = "msg_2",
                reason = "signature_mismatch",
                detail = "x",
                status = 401u16,
                outcome = "rejected",
                "webhook rejected"
            );
        });
        let line = &lines[0];
        assert_eq!(line["Reason"], "signature_mismatch");
        assert_eq!((line["Received"].clone(), line["Rejected"].clone()), (json!(1), json!(1)));
        assert_eq!(
            directives(line),
            [
                (json!([["Function"]]), vec!["Received".to_owned()]),
                (json!([["Function"], ["Function", "Reason"]]), vec!["Rejected".to_owned()]),
            ]
        );
    }

    #[test]
    fn an_enqueue_failure_is_counted() {
        let lines = emf(|| {
            error!(
                webhook_id = "msg_3",
                reason = "queue_unavailable",
                detail = "x",
                outcome = "not_queued",
                "webhook not queued; sender will retry"
            );
        });
        assert_eq!((lines[0]["Received"].clone(), lines[0]["EnqueueFailed"].clone()), (json!(1), json!(1)));
        assert!(lines[0].get("Enqueued").is_none());
    }

    #[test]
    fn a_routed_webhook_counts_deliveries_by_type_and_route_with_its_age() {
        let lines = emf(|| {
            let event_type = String::from("document.created.v2");
            info!(
                webhook_id = "msg_4",
                event_type = %event_type,
                route = %"document.*",
                delivered = 2usize,
                duplicates = 1usize,
                age_secs = Some(7i64),
                outcome = "routed",
                "webhook routed"
            );
        });
        let line = &lines[0];
        assert_eq!(line["EventType"], "document.created.v2");
        assert_eq!(line["Route"], "document.*");
        assert_eq!(line["Routed"], 2);
        assert_eq!(line["DuplicatesSkipped"], 1);
        assert_eq!(line["EndToEndAge"], 7);
        assert_eq!(
            directives(line),
            [
                (json!([["Function"], ["Function", "EventType", "Route"]]), vec!["Routed".to_owned()]),
                (json!([["Function"]]), vec!["DuplicatesSkipped".to_owned(), "EndToEndAge".to_owned()]),
            ]
        );
        let age = &line["_aws"]["CloudWatchMetrics"][1]["Metrics"][1];
        assert_eq!(age["Unit"], "Seconds");
    }

    #[test]
    fn a_routed_webhook_without_a_timestamp_has_no_age() {
        let lines = emf(|| {
            let age_secs: Option<i64> = None;
            info!(
                event_type = "unknown",
                route = "*",
                delivered = 1usize,
                duplicates = 0usize,
                age_secs,
                outcome = "routed",
                "webhook routed"
            );
        });
        assert!(lines[0].get("EndToEndAge").is_none());
        assert_eq!(lines[0]["Routed"], 1);
    }

    #[test]
    fn an_event_type_nectar_does_not_document_is_counted_as_other() {
        let types = ["document.created.v2", "unknown", "document.created.v2-MARKER", "x".repeat(300).leak()];
        let lines = emf(|| {
            for event_type in types {
                info!(
                    outcome = "routed",
                    event_type,
                    route = "*",
                    delivered = 1usize,
                    duplicates = 0usize,
                    "webhook routed"
                );
            }
        });
        let dimension: Vec<&str> = lines.iter().filter_map(|l| l["EventType"].as_str()).collect();
        assert_eq!(dimension, ["document.created.v2", "unknown", "other", "other"]);
    }

    /// A queue that takes everything, or refuses everything.
    struct TestQueue(bool);

    impl crate::core::queue::Queue for TestQueue {
        async fn enqueue(
            &self,
            _: crate::core::envelope::QueueMessage,
            _: crate::core::queue::Webhook<'_>,
        ) -> Result<(), crate::core::queue::QueueError> {
            if self.0 { Ok(()) } else { Err(crate::core::queue::QueueError("refused".into())) }
        }
    }

    /// The metrics come from the code paths themselves, not from log lines
    /// written for the test: ingest's accept, refuse and enqueue-failure
    /// answers each emit the metric its alarm or dashboard reads.
    #[test]
    fn ingest_emits_each_metric_from_its_own_code_path() {
        use crate::core::ingest::{IncomingRequest, Ingest, Limits};
        let secret = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";
        let config =
            crate::config::IngestConfig::from_lookup(|n| (n == "WEBHOOK_SECRET").then(|| secret.into())).unwrap();
        let clock = std::sync::Arc::new(crate::core::clock::FixedClock(1_764_201_600));
        let body = br#"{"eventType":"document.created.v2"}"#;
        let signature = crate::core::verification::svix::sign(secret, "msg_m", 1_764_201_600, body).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("svix-id", "msg_m".parse().unwrap());
        headers.insert("svix-timestamp", "1764201600".parse().unwrap());
        headers.insert("svix-signature", signature.parse().unwrap());
        let request = IncomingRequest {
            method: &http::Method::POST,
            path: "/webhooks/nectar",
            headers: &headers,
            body,
            body_undecodable: false,
        };
        let unsigned = http::HeaderMap::new();
        let metrics = |queue_takes: bool, request: IncomingRequest<'_>| {
            let ingest = Ingest::new(config.sources(), TestQueue(queue_takes), Limits::default(), clock.clone());
            let lines = emf(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                runtime.block_on(ingest.respond(request, std::future::pending()));
            });
            directives(&lines[0]).into_iter().flat_map(|(_, names)| names).collect::<Vec<_>>()
        };
        assert!(metrics(true, request).contains(&"Enqueued".to_owned()));
        assert!(metrics(false, request).contains(&"EnqueueFailed".to_owned()));
        assert!(metrics(true, IncomingRequest { headers: &unsigned, ..request }).contains(&"Rejected".to_owned()));
    }

    #[test]
    fn failures_and_dead_letters_are_counted() {
        let lines = emf(|| {
            error!(outcome = "not_routed", webhook_id = "msg_5", message_id = "m", error = "boom", "not routed");
            error!(outcome = "dead_lettered", message_id = "m", receives = 5u32, reason = "boom", "any wording");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["DeliveryFailures"], 1);
        assert_eq!(lines[1]["DeadLettered"], 1);
        assert_eq!(directives(&lines[1]), [(json!([["Function"]]), vec!["DeadLettered".to_owned()])]);
    }

    #[test]
    fn other_events_and_other_crates_give_no_metrics() {
        let lines = emf(|| {
            info!(webhook_id = "msg_6", "duplicate webhook; already delivered, skipped");
            info!("listening");
            info!(target: "aws_smithy_runtime", outcome = "queued", "webhook queued");
        });
        assert!(lines.is_empty(), "{lines:?}");
    }
}
