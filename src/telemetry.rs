//! Log set-up. In Lambda: one flat JSON object per line (CloudWatch's JSON
//! log format) carrying the invocation's `requestId`, plus CloudWatch
//! metrics as Embedded Metric Format lines ([`crate::adapters::metrics`]).
//! On a terminal: compact text on stderr. `RUST_LOG` filters the log lines
//! (default `info`), never the metrics.

use crate::adapters::metrics::{self, EmfLayer, FieldValues};
use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For the Lambda functions: JSON log lines and EMF metrics on stdout.
pub fn init_lambda() {
    lambda_subscriber(filter(), std::io::stdout, EmfLayer::stdout()).init();
}

/// The Lambda functions' subscriber: log lines filtered by `filter` and
/// written to `logs`, and metrics from every event of this crate.
///
/// A log line is one JSON object: `timestamp`, `level`, `message`, the
/// event's fields (`webhook_id`, `event_type`, `route`, `reason`, …), and the
/// fields of the spans it happened in. `lambda_runtime` runs each invocation
/// in a span `Lambda runtime invoke` with `requestId` (and `xrayTraceId`
/// when traced), so every line of an invocation carries them at the top
/// level, as Lambda's own JSON log records do.
pub fn lambda_subscriber<L, M>(filter: EnvFilter, logs: L, metrics: EmfLayer<M>) -> impl Subscriber + Send + Sync
where
    L: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    M: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log_lines = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(logs)
        .with_filter(filter);
    tracing_subscriber::registry().with(log_lines).with(metrics.with_filter(metrics::filter()))
}

/// For the command-line tool: logs on stderr, so stdout carries only data;
/// coloured only on a terminal, so `serve 2> serve.err` and pipes get plain
/// text, and never with `NO_COLOR` set (<https://no-color.org>).
pub fn init_local() {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt().compact().with_ansi(colour).with_env_filter(filter()).with_writer(std::io::stderr).init();
}

/// Formats an event as one flat JSON object: the event's own fields win over
/// its spans', and an inner span's over an outer one's.
struct FlatJson;

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
        let mut fields = FieldValues::default();
        event.record(&mut fields);
        line.extend(fields.0);
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert("level".into(), Value::String(event.metadata().level().as_str().to_owned()));
        line.entry("message").or_insert_with(|| Value::String(String::new()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Now, as RFC 3339 in UTC with microseconds.
fn timestamp() -> String {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::metrics::Captured;
    use tracing::{debug, info, info_span, warn};

    /// (log lines, EMF lines) written while `f` runs, logs filtered by `directives`.
    fn captured(directives: &str, f: impl FnOnce()) -> (Vec<Value>, Vec<Value>) {
        let (logs, emf) = (Captured::default(), Captured::default());
        let (l, e) = (logs.clone(), emf.clone());
        let subscriber = lambda_subscriber(
            EnvFilter::new(directives),
            move || l.clone(),
            EmfLayer::new("ingest", move || e.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        (logs.lines(), emf.lines())
    }

    #[test]
    fn every_line_of_an_invocation_carries_its_request_id_at_the_top_level() {
        let (logs, emf) = captured("info", || {
            info!("before any invocation");
            let span = info_span!("Lambda runtime invoke", requestId = "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
            let _entered = span.enter();
            info!(outcome = "queued", webhook_id = "msg_abc", source = "nectar", bytes = 12, "webhook queued");
            let inner = info_span!("inner", xrayTraceId = "Root=1-5759e988-bd862e3fe1be46a994272793");
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
        let rejected = &logs[2];
        assert_eq!(rejected["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
        assert_eq!(rejected["xrayTraceId"], "Root=1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(rejected["reason"], "signature_mismatch");
        assert_eq!(rejected["level"], "WARN");
        assert_eq!(emf.len(), 2);
        assert_eq!(emf[0]["Enqueued"], 1);
        assert_eq!(emf[1]["Reason"], "signature_mismatch");
    }

    #[test]
    fn metrics_do_not_depend_on_the_log_filter() {
        let (logs, emf) = captured("error", || info!(outcome = "queued", webhook_id = "msg_x", "webhook queued"));
        assert!(logs.is_empty());
        assert_eq!(emf.len(), 1);
        assert_eq!(emf[0]["Function"], "ingest");
    }

    #[test]
    fn the_event_fields_win_over_span_fields_of_the_same_name() {
        let (logs, _) = captured("info", || {
            let span = info_span!("outer", webhook_id = "from_span", route = "*");
            span.in_scope(|| info!(webhook_id = "from_event", "routed"));
        });
        assert_eq!(logs[0]["webhook_id"], "from_event");
        assert_eq!(logs[0]["route"], "*");
    }
}
