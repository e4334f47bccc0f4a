//! Log set-up. In Lambda: one flat JSON object per line (CloudWatch's JSON
//! log format) carrying the invocation's `requestId`; a line that records
//! something going wrong (a failure, a duplicate, an unknown field) also
//! carries its CloudWatch metric in Embedded Metric Format
//! ([`crate::adapters::metrics`]). On a terminal: compact text on
//! stderr.
//!
//! `RUST_LOG` filters the lines. In Lambda the default is `info`: the router
//! writes one line per batch naming the webhooks it routed, ingest nothing
//! for a webhook it queued; `nectar_webhooks=debug` adds a line per webhook
//! per function; at `warn` a webhook that went well writes nothing. Every
//! failure, duplicate and unknown field writes its line and metric at any of
//! them. Locally the default is a line per webhook, which is what a person
//! watching `serve` wants to see.

use crate::adapters::metrics::{self, FieldValues};
use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// `RUST_LOG` as `target=level` directives (`warn`, `nectar_webhooks=debug,info`),
/// `default` when unset or unreadable. `Targets` rather than `EnvFilter`: the
/// span and field matchers `EnvFilter` adds need a regex engine, 347 KB
/// of each arm64 bootstrap that nobody filtering these lines uses.
fn filter(default: fn() -> Targets) -> Targets {
    std::env::var("RUST_LOG").ok().and_then(|directives| directives.parse().ok()).unwrap_or_else(default)
}

/// Lambda's default: the batch lines and every failure.
fn lambda_default() -> Targets {
    Targets::new().with_default(LevelFilter::INFO)
}

/// The local default: a line per webhook as well.
fn local_default() -> Targets {
    Targets::new().with_default(LevelFilter::INFO).with_target(env!("CARGO_CRATE_NAME"), LevelFilter::DEBUG)
}

/// For the Lambda functions: JSON log lines, with their metrics, on stdout,
/// for the function named by `AWS_LAMBDA_FUNCTION_NAME`.
pub fn init_lambda() {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
    lambda_subscriber(filter(lambda_default), function, std::io::stdout).init();
}

/// The Lambda functions' subscriber: lines filtered by `filter` and written
/// to `logs`, with the metrics of `function`.
///
/// A line is one JSON object: `timestamp`, `level`, `message`, the event's
/// fields (`webhook_id`, `event_type`, `route`, `reason`, …), and the fields
/// of the spans it happened in. `lambda_runtime` runs each invocation in a
/// span `Lambda runtime invoke` with `requestId` and `xrayTraceId`, so every
/// line of an invocation carries them at the top level, as Lambda's own JSON
/// log records do (the trace id only when the trace is sampled). A line of
/// this crate whose `outcome` counts a metric is also an EMF document
/// (`Function`, the metric, `_aws`).
pub fn lambda_subscriber<L>(filter: Targets, function: impl Into<String>, logs: L) -> impl Subscriber + Send + Sync
where
    L: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson { function: function.into() })
        .with_writer(logs)
        .with_filter(filter);
    tracing_subscriber::registry().with(lines)
}

/// For the command-line tool: logs on stderr, so stdout carries only data;
/// coloured only on a terminal, so `serve 2> serve.err` and pipes get plain
/// text, and never with `NO_COLOR` set (<https://no-color.org>).
pub fn init_local() {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let lines = tracing_subscriber::fmt::layer().compact().with_ansi(colour).with_writer(std::io::stderr);
    tracing_subscriber::registry().with(lines.with_filter(filter(local_default))).init();
}

/// Formats an event as one flat JSON object: the event's own fields win over
/// its spans', and an inner span's over an outer one's; this crate's
/// outcome lines get their metrics.
struct FlatJson {
    /// The `Function` dimension of the metrics.
    function: String,
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // JsonFields keeps each span's fields as a JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(fields) = serde_json::from_str::<Map<String, Value>>(fields)
                {
                    line.extend(fields);
                }
            }
        }
        // An unsampled trace id (`Sampled=0`: every invocation without
        // `Tracing: Active`) links to no trace, and in AWS it is about 100
        // bytes, more than a sixth of the router's batch line.
        if line.get(TRACE_ID).and_then(Value::as_str).is_some_and(|id| !sampled(id)) {
            line.remove(TRACE_ID);
        }
        let mut fields = FieldValues::default();
        event.record(&mut fields);
        let ours = event.metadata().target().split("::").next() == Some(env!("CARGO_CRATE_NAME"));
        let emf = ours.then(|| metrics::emf_fields(&self.function, &fields.0, unix_millis())).flatten();
        line.extend(fields.0);
        line.extend(emf.into_iter().flatten());
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert("level".into(), Value::String(event.metadata().level().as_str().to_owned()));
        line.entry("message").or_insert_with(|| Value::String(String::new()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The field `lambda_runtime`'s invocation span carries the X-Ray trace header in.
const TRACE_ID: &str = "xrayTraceId";

/// Whether an X-Ray trace header (`Root=…;Parent=…;Sampled=1`) says the
/// trace is recorded.
fn sampled(trace_header: &str) -> bool {
    trace_header.split(';').any(|part| part.trim() == "Sampled=1")
}

/// Now, as RFC 3339 in UTC with microseconds.
fn timestamp() -> String {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn unix_millis() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::metrics::Captured;
    use serde_json::json;
    use tracing::{debug, error, info, info_span, warn};

    /// The lines written while `f` runs, filtered by `directives`.
    fn captured(directives: &str, f: impl FnOnce()) -> Vec<Value> {
        let logs = Captured::default();
        let l = logs.clone();
        let subscriber = lambda_subscriber(directives.parse().expect("directives"), "ingest", move || l.clone());
        tracing::subscriber::with_default(subscriber, f);
        logs.lines()
    }

    #[test]
    fn every_line_of_an_invocation_carries_its_request_id_at_the_top_level() {
        let logs = captured("info", || {
            info!("before any invocation");
            let span = info_span!("Lambda runtime invoke", requestId = "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
            let _entered = span.enter();
            info!(outcome = "queued", webhook_id = "msg_abc", source = "nectar", bytes = 12, "webhook queued");
            let inner = info_span!("inner", xrayTraceId = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
            inner.in_scope(|| {
                warn!(outcome = "rejected", webhook_id = "msg_def", reason = "signature_mismatch", "webhook rejected")
            });
            debug!("filtered out");
        });
        assert_eq!(logs.len(), 3, "{logs:?}");
        assert!(logs[0].get("requestId").is_none());
        assert_eq!(logs[0]["message"], "before any invocation");
        let queued = &logs[1];
        assert_eq!(queued["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
        assert_eq!(queued["message"], "webhook queued");
        assert_eq!(queued["webhook_id"], "msg_abc");
        assert_eq!(queued["bytes"], 12);
        assert_eq!(queued["level"], "INFO");
        assert!(queued["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(queued.get("_aws").is_none(), "AWS counts queued webhooks for free");
        let rejected = &logs[2];
        assert_eq!(rejected["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
        assert_eq!(rejected["xrayTraceId"], "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
        assert_eq!(rejected["reason"], "signature_mismatch");
        assert_eq!(rejected["level"], "WARN");
        assert_eq!((rejected["Function"].clone(), rejected["Rejected"].clone()), (json!("ingest"), json!(1)));
        assert_eq!(rejected["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "Rejected");
    }

    #[test]
    fn an_unsampled_trace_id_is_left_out() {
        let logs = captured("info", || {
            let unsampled =
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=1:ab12:0";
            info_span!("Lambda runtime invoke", requestId = "r1", xrayTraceId = unsampled).in_scope(|| info!("a"));
            let sampled = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
            info_span!("Lambda runtime invoke", requestId = "r2", xrayTraceId = sampled).in_scope(|| info!("b"));
        });
        assert_eq!((logs[0]["requestId"].clone(), logs[0].get("xrayTraceId")), (json!("r1"), None));
        assert!(logs[1]["xrayTraceId"].as_str().unwrap().ends_with("Sampled=1"), "{logs:?}");
    }

    #[test]
    fn at_warn_a_webhook_that_went_well_writes_nothing_and_failures_keep_their_metrics() {
        let logs = captured("warn", || {
            info!(outcome = "queued", webhook_id = "msg_x", "webhook queued");
            info!(outcome = "routed", webhook_id = "msg_x", delivered = 1usize, duplicates = 0usize, "webhook routed");
            error!(outcome = "not_routed", webhook_id = "msg_y", error = "boom", "webhook not routed");
        });
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0]["DeliveryFailures"], 1);
    }

    #[test]
    fn other_crates_lines_carry_no_metrics() {
        let logs = captured("info", || info!(target: "aws_smithy_runtime", outcome = "rejected", "not ours"));
        assert!(logs[0].get("_aws").is_none(), "{logs:?}");
    }

    #[test]
    fn the_event_fields_win_over_span_fields_of_the_same_name() {
        let logs = captured("info", || {
            let span = info_span!("outer", webhook_id = "from_span", route = "*");
            span.in_scope(|| info!(webhook_id = "from_event", "routed"));
        });
        assert_eq!(logs[0]["webhook_id"], "from_event");
        assert_eq!(logs[0]["route"], "*");
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
    /// written for the test: ingest's accept (at debug), refuse and
    /// enqueue-failure answers each write one line, with the metric of what
    /// went wrong; at info, the default, an accept writes nothing.
    #[test]
    fn ingest_writes_one_line_per_webhook_with_the_metric_of_what_went_wrong() {
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
        let logged = |directives: &str, queue_takes: bool, request: IncomingRequest<'_>| {
            let ingest = Ingest::new(config.sources(), TestQueue(queue_takes), Limits::default(), clock.clone());
            captured(directives, || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                runtime.block_on(ingest.respond(request, std::future::pending()));
            })
        };
        let metric = |queue_takes: bool, request: IncomingRequest<'_>| {
            let lines = logged("info,nectar_webhooks=debug", queue_takes, request);
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"].as_str().map(str::to_owned)
        };
        assert_eq!(metric(true, request), None);
        assert_eq!(logged("info", true, request), Vec::<Value>::new(), "queued: the router's line names it");
        assert_eq!(metric(false, request).as_deref(), Some("EnqueueFailed"));
        assert_eq!(metric(true, IncomingRequest { headers: &unsigned, ..request }).as_deref(), Some("Rejected"));
    }

    /// Takes every delivery.
    struct Accepting;

    impl crate::core::router::Deliver for Accepting {
        async fn deliver(
            &self,
            _: &crate::core::routing::Destination,
            _: &crate::core::router::Delivery<'_>,
        ) -> Result<(), crate::core::router::DeliveryError> {
            Ok(())
        }
    }

    /// The router's clock in these tests.
    const NOW: i64 = 1_764_201_600;

    /// A record of webhook `id`, signed at `signed_at`, with `body`.
    fn record(id: &str, signed_at: i64, body: Vec<u8>) -> crate::core::router::Record {
        crate::core::router::Record {
            id: format!("sqs-{id}"),
            message: Ok(crate::core::envelope::Envelope {
                source: "nectar".into(),
                id: id.into(),
                timestamp: signed_at,
                body: body.into(),
            }),
            claim_check: None,
            received: None,
        }
    }

    /// A router of every webhook to a destination that takes it, at [`NOW`].
    fn router() -> crate::core::router::Router<Accepting, crate::core::dedup::InMemorySeen> {
        let table = crate::core::routing::RouteTable::parse("*=stdout").unwrap();
        crate::core::router::Router::new(table, Accepting, crate::core::dedup::InMemorySeen::default())
            .with_clock(std::sync::Arc::new(crate::core::clock::FixedClock(NOW)))
    }

    /// The lines `router` writes, filtered by `directives`, routing `records`,
    /// every one of which must succeed.
    fn routed(
        router: &crate::core::router::Router<Accepting, crate::core::dedup::InMemorySeen>,
        directives: &str,
        records: Vec<crate::core::router::Record>,
    ) -> Vec<Value> {
        captured(directives, || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let failed = runtime.block_on(router.route_batch(records));
            assert!(failed.is_empty(), "{failed:?}");
        })
    }

    /// Schema drift reaches CloudWatch from the router's own line: a payload
    /// with a field the model does not name is routed with a warning that
    /// counts UnknownFields by event type, kept at LOG_LEVEL=warn; one that
    /// fits writes nothing at warn.
    #[test]
    fn the_router_counts_payloads_with_fields_the_model_does_not_name() {
        let sample: Value =
            serde_json::from_slice(include_bytes!("../events/payloads/document.created.v2.json")).unwrap();
        let mut drifted = sample.clone();
        drifted["site"]["region"] = json!("eu");
        let lines = routed(
            &router(),
            "warn",
            vec![
                record("msg_fits", NOW, sample.to_string().into()),
                record("msg_new", NOW, drifted.to_string().into()),
            ],
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!((lines[0]["webhook_id"].clone(), lines[0]["unknown_fields"].clone()), (json!("msg_new"), json!(1)));
        assert_eq!(
            (lines[0]["UnknownFields"].clone(), lines[0]["EventType"].clone()),
            (json!(1), json!("document.created.v2"))
        );
        assert_eq!(lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "UnknownFields");
        assert!(!lines[0].to_string().contains("\"eu\""), "never a payload value");
    }

    /// At info the router writes one line per batch, naming every webhook
    /// it routed; a webhook that destinations had already writes its own
    /// line with the DuplicatesSkipped metric, kept at warn too.
    #[test]
    fn the_router_writes_one_line_per_batch_and_counts_duplicates_at_warn() {
        let sample = include_bytes!("../events/payloads/document.created.v2.json");
        let router = router();
        let route = |directives: &str, ids: &[&str]| {
            routed(&router, directives, ids.iter().map(|id| record(id, NOW - 2, sample.to_vec())).collect())
        };

        let lines = route("info", &["msg_a", "msg_b"]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["outcome"], "batch_routed");
        assert_eq!(lines[0]["webhook_ids"], "msg_a msg_b");
        assert_eq!(lines[0]["routed"], 2);
        assert!(
            lines[0].get("delivered").is_none() && lines[0].get("duplicates").is_none(),
            "one delivery each, no duplicate: nothing to add to `routed`: {lines:?}"
        );
        assert_eq!(lines[0]["oldest_age_secs"], 2);
        assert!(lines[0].get("_aws").is_none(), "{lines:?}");

        let lines = route("warn", &["msg_a", "msg_c"]);
        assert_eq!(lines.len(), 1, "only the duplicate at warn: {lines:?}");
        assert_eq!((lines[0]["webhook_id"].clone(), lines[0]["duplicates"].clone()), (json!("msg_a"), json!(1)));
        assert_eq!(lines[0]["DuplicatesSkipped"], 1);
    }
}
