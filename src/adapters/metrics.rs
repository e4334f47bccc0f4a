//! CloudWatch metrics without an SDK, an API call or a line of their own:
//! the log line that records a webhook's outcome carries its metrics in
//! [Embedded Metric Format](https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html),
//! which CloudWatch Logs extracts. Never a line of its own: log bytes are
//! billed ($0.50 per GB). A webhook that went well writes no line of its own
//! at `info` (the router's batch line names it) and nothing at `warn`; the
//! lines that count something are written at every level.
//!
//! Only what goes wrong is a custom metric: CloudWatch bills every metric
//! that received data in a month ($0.30 each), so a metric counting what
//! AWS already counts for free would cost a small team more than its
//! webhooks. The counts of what went right are AWS's own: `Invocations`
//! and `UrlRequestCount` (Lambda), `Count` (API Gateway),
//! `NumberOfMessagesSent` and `ApproximateAgeOfOldestMessage` (SQS); the
//! detail by event type and route is in the `routed` lines (`LogLevel`
//! `debug`) and the archive, for Logs Insights and Athena. A failure metric is billed only in a month it happened.
//!
//! The core knows nothing of metrics; this module reads the typed `outcome`
//! field of a line ([`Outcome`]), never its wording:
//!
//! | `outcome` | Metrics (namespace `NectarWebhooks`, dimension `Function`) |
//! |---|---|
//! | `queued` | none: Lambda's `Invocations`, SQS's `NumberOfMessagesSent` |
//! | `rejected` (`reason`) | `Rejected` (the reason is in the line) |
//! | `not_queued` | `EnqueueFailed` |
//! | `routed` (`duplicates`, `unknown_fields`) | `DuplicatesSkipped`, only when there were any; `UnknownFields` (also by `EventType`, Nectar's twelve or `other`), only when the payload had fields the model does not name (both lines are `warn`, the others `debug`) |
//! | `batch_routed` | none: the batch's line naming the webhooks it routed |
//! | `not_routed` | `DeliveryFailures` |
//! | `dead_lettered` | `DeadLettered` |
//! | `not_archived` | `ArchiveFailures` |

use crate::core::events::NECTAR_EVENT_TYPES;
use crate::core::outcome::{OUTCOME_FIELD, Outcome};
use serde_json::{Map, Value, json};
use std::fmt;
use tracing::field::{Field, Visit};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "NectarWebhooks";

/// One metric a line counts.
struct Metric {
    name: &'static str,
    value: Value,
    /// Also by `EventType`: one of Nectar's twelve, so the metric's
    /// dimension values, each billed, stay a known few.
    by_event_type: bool,
}

impl Metric {
    fn count(name: &'static str, value: Value) -> Self {
        Self { name, value, by_event_type: false }
    }
}

/// The metrics a line with `outcome` counts, and their values; none when
/// it counts nothing AWS does not count already.
fn metrics_for(outcome: Outcome, fields: &Map<String, Value>) -> Vec<Metric> {
    let positive = |name: &str| fields.get(name).filter(|n| n.as_u64().is_some_and(|n| n > 0));
    match outcome {
        Outcome::Queued | Outcome::BatchRouted => vec![],
        Outcome::Rejected => vec![Metric::count("Rejected", json!(1))],
        Outcome::NotQueued => vec![Metric::count("EnqueueFailed", json!(1))],
        Outcome::Routed => {
            let duplicates = positive("duplicates").map(|n| Metric::count("DuplicatesSkipped", n.clone()));
            let unknown = positive("unknown_fields").map(|_| Metric {
                name: "UnknownFields",
                value: json!(1),
                by_event_type: true,
            });
            duplicates.into_iter().chain(unknown).collect()
        }
        Outcome::NotRouted => vec![Metric::count("DeliveryFailures", json!(1))],
        Outcome::DeadLettered => vec![Metric::count("DeadLettered", json!(1))],
        Outcome::NotArchived => vec![Metric::count("ArchiveFailures", json!(1))],
    }
}

/// The fields that make a log line of `fields` an EMF document for the
/// function `function`: `Function` (and `EventType` where a metric is by
/// type), each metric's value under its name, and the `_aws` directive.
/// `None` if the line counts nothing.
pub fn emf_fields(function: &str, fields: &Map<String, Value>, timestamp_ms: u64) -> Option<Map<String, Value>> {
    let outcome = fields.get(OUTCOME_FIELD).and_then(Value::as_str).and_then(Outcome::parse)?;
    let metrics = metrics_for(outcome, fields);
    if metrics.is_empty() {
        return None;
    }
    let mut emf = Map::new();
    emf.insert("Function".into(), json!(function));
    let mut directives = Vec::new();
    for metric in metrics {
        let dimensions = if metric.by_event_type {
            let event_type = fields.get("event_type").and_then(Value::as_str).unwrap_or_default();
            let known = NECTAR_EVENT_TYPES.iter().find(|&&known| known == event_type).copied();
            emf.insert("EventType".into(), json!(known.unwrap_or("other")));
            // By function too, for the template's alarm on every type at once.
            json!([["Function"], ["Function", "EventType"]])
        } else {
            json!([["Function"]])
        };
        emf.insert(metric.name.into(), metric.value);
        directives.push(json!({
            "Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": [{"Name": metric.name, "Unit": "Count"}],
        }));
    }
    emf.insert("_aws".into(), json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}));
    Some(emf)
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

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// The metric names an EMF document declares, checking its shape.
    fn declared(emf: &Map<String, Value>) -> Vec<String> {
        let directives = emf["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], NAMESPACE);
        assert_eq!(directives[0]["Dimensions"], json!([["Function"]]));
        let names = directives[0]["Metrics"].as_array().unwrap().iter();
        names.map(|m| m["Name"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn each_failure_outcome_counts_one_metric_by_function() {
        for (outcome, metric) in [
            ("rejected", "Rejected"),
            ("not_queued", "EnqueueFailed"),
            ("not_routed", "DeliveryFailures"),
            ("dead_lettered", "DeadLettered"),
            ("not_archived", "ArchiveFailures"),
        ] {
            let emf =
                emf_fields("nectar-router", &fields(json!({"outcome": outcome, "reason": "x"})), 1_700_000_000_000)
                    .unwrap_or_else(|| panic!("{outcome} counts nothing"));
            assert_eq!(declared(&emf), [metric]);
            assert_eq!((emf["Function"].clone(), emf[metric].clone()), (json!("nectar-router"), json!(1)));
            assert_eq!(emf["_aws"]["Timestamp"], 1_700_000_000_000u64);
            assert!(emf.get("Reason").is_none(), "a reason is a Logs Insights field, not a billed dimension");
        }
    }

    #[test]
    fn what_aws_counts_for_free_is_no_custom_metric() {
        assert!(emf_fields("ingest", &fields(json!({"outcome": "queued", "bytes": 42})), 0).is_none());
        let routed = json!({"outcome": "routed", "event_type": "document.created.v2", "route": "*", "delivered": 1, "duplicates": 0});
        assert!(emf_fields("router", &fields(routed), 0).is_none());
        assert!(emf_fields("router", &fields(json!({"message": "listening"})), 0).is_none());
        assert!(emf_fields("router", &fields(json!({"outcome": "webhook queued"})), 0).is_none());
    }

    #[test]
    fn unknown_fields_are_counted_by_function_and_known_event_type_only_when_there_were_any() {
        let routed = |event_type: &str, unknown_fields: u64| {
            let line = json!({"outcome": "routed", "event_type": event_type, "delivered": 1, "duplicates": 0, "unknown_fields": unknown_fields});
            emf_fields("router", &fields(line), 0)
        };
        assert!(routed("document.created.v2", 0).is_none(), "no metric, so no bill, while none are unknown");
        let emf = routed("document.created.v2", 3).unwrap();
        let directives = emf["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Dimensions"], json!([["Function"], ["Function", "EventType"]]));
        assert_eq!(directives[0]["Metrics"][0]["Name"], "UnknownFields");
        assert_eq!((emf["UnknownFields"].clone(), emf["EventType"].clone()), (json!(1), json!("document.created.v2")));
        assert_eq!(
            routed("document.created.v3", 1).unwrap()["EventType"],
            "other",
            "a type from the payload is no dimension"
        );
        let both =
            json!({"outcome": "routed", "event_type": "connection.created", "duplicates": 1, "unknown_fields": 2});
        let emf = emf_fields("router", &fields(both), 0).unwrap();
        assert_eq!((emf["DuplicatesSkipped"].clone(), emf["UnknownFields"].clone()), (json!(1), json!(1)));
        assert_eq!(emf["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn duplicates_skipped_are_counted_when_there_were_any() {
        let routed = json!({"outcome": "routed", "delivered": 1, "duplicates": 2});
        let emf = emf_fields("router", &fields(routed), 0).unwrap();
        assert_eq!(declared(&emf), ["DuplicatesSkipped"]);
        assert_eq!(emf["DuplicatesSkipped"], 2);
    }
}
