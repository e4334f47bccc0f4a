//! Section 6 of BENCHMARKS.md: what the whole pipeline costs, counted.
//!
//! Runs `COST_WEBHOOKS` (default 200) signed webhooks of about 1.5 KB, the
//! six v2 event types in turn, through the release `ingest` bootstrap, then
//! through the release `router` bootstrap in batches of up to 10, as Lambda's
//! SQS event source hands them over (`ReceiveMessage`, invoke,
//! `DeleteMessageBatch` of what succeeded), with the DynamoDB idempotency
//! table, each function behind a Lambda Runtime API emulator and every AWS
//! call going to moto's server through a proxy that counts it (by caller,
//! service and operation). It counts every byte each function writes to
//! standard output (what CloudWatch Logs ingests, before Lambda's own
//! platform lines), each function's invocations, their wall-clock time and
//! CPU time, and the distinct CloudWatch metrics the EMF lines publish.
//!
//! Route tables: one SQS destination, fan-out to three, one FIFO queue, one
//! EventBridge bus; each at `RUST_LOG=info` (the default) and `warn`, and
//! at `info` with the archive on (a Firehose stream on moto, which writes
//! to S3 at once: the bytes it stored are counted too). One SQS destination
//! also at the template's `LogLevel` `debug` (a line per webhook per
//! function), and at `info` one webhook a batch: a trickle, as a team
//! receiving 100,000 webhooks a month (one every 26 s) sees it.
//!
//! The one-SQS-queue `info` run, the goal's, is made three times.
//!
//! Webhook ids are as long as Svix's (`msg_` and 27 characters): the
//! router's batch line names each.
//! Writes the counts to `$BENCH_DIR/cost.json`; `scripts/cost_report.py`
//! multiplies them by the prices in `benches/cost/prices.json`.

#[allow(dead_code)]
#[path = "../lambda_process/http1.rs"]
mod http1;
#[path = "../lambda_process/runtime_api.rs"]
mod runtime_api;
#[allow(unused_imports)]
#[path = "../../tests/support/mod.rs"]
mod support;

mod proxy;

use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::core::verification::svix::sign;
use proxy::CountingProxy;
use runtime_api::{AnswerKind, RuntimeApi};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = support::SAMPLE_SECRET;
const LIMIT: Duration = Duration::from_secs(30);
const BODY_BYTES: usize = 1_500;
const EVENT_TYPES: [&str; 6] = [
    "document.created.v2",
    "document.updated.v2",
    "document.deleted.v2",
    "connection.created.v2",
    "connection.updated.v2",
    "connection.validated.v2",
];
/// Distinct resources the webhooks are about (FIFO message groups).
const RESOURCES: usize = 40;

#[derive(Clone, Copy, Debug)]
enum Routes {
    OneSqs,
    FanOutThree,
    Fifo,
    EventBridge,
}

impl Routes {
    const ALL: [Routes; 4] = [Routes::OneSqs, Routes::FanOutThree, Routes::Fifo, Routes::EventBridge];

    fn name(self) -> &'static str {
        match self {
            Self::OneSqs => "one SQS queue",
            Self::FanOutThree => "fan-out to three SQS queues",
            Self::Fifo => "one FIFO queue",
            Self::EventBridge => "one EventBridge bus",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::OneSqs => "sqs",
            Self::FanOutThree => "fanout3",
            Self::Fifo => "fifo",
            Self::EventBridge => "eventbridge",
        }
    }
}

/// A function process behind its own Runtime API emulator, its standard
/// output read line by line.
struct Function {
    child: Child,
    api: RuntimeApi,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Function {
    fn start(binary: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let api = RuntimeApi::start();
        assert!(binary.exists(), "{} is missing: build it first (make bench does)", binary.display());
        let mut command = Command::new(binary);
        command.env_clear().envs(lambda_environment(name, &api.address)).envs(env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().expect("not poisoned").push(line);
            }
        });
        let function = Self { child, api, lines };
        function.api.poll(LIMIT).unwrap_or_else(|| panic!("{name} never polled for an event"));
        function
    }

    /// Hands out one event; its answer and how long it took.
    fn invoke(&self, event: &Value) -> (Value, Duration) {
        let started = Instant::now();
        self.api.queue(serde_json::to_vec(event).expect("serialisable"));
        let answer = self.api.answer(LIMIT).expect("an answer");
        assert_eq!(answer.kind, AnswerKind::Response, "{}", String::from_utf8_lossy(&answer.body));
        let took = answer.at - started;
        self.api.poll(LIMIT).expect("the next poll");
        (serde_json::from_slice(&answer.body).expect("a JSON answer"), took)
    }

    /// User and system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("a live process");
        let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }

    /// The lines written so far, and forgets them.
    fn take_lines(&self) -> Vec<String> {
        // The reader thread may still be copying the last answer's lines.
        std::thread::sleep(Duration::from_millis(50));
        std::mem::take(&mut *self.lines.lock().expect("not poisoned"))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lambda_environment(name: &str, runtime_api: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("nectar-webhooks-{name}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/nectar-webhooks-{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]0000".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("TZ", ":UTC".to_owned()),
    ]
}

/// A ~1.5 KB v2 payload of `event_type` about resource `resource`.
fn payload(event_type: &str, n: usize) -> Vec<u8> {
    let path = format!("{}/events/payloads/{event_type}.json", env!("CARGO_MANIFEST_DIR"));
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("a sample")).expect("JSON");
    value["id"] = json!(format!("res-{:04}", n % RESOURCES));
    // Padded in a field the model names: a field it does not would be
    // schema drift, which the router logs (and counts) for every webhook.
    let name = value["company"]["name"].as_str().expect("every sample names its company").to_owned();
    let short = BODY_BYTES.saturating_sub(serde_json::to_vec(&value).expect("serialisable").len());
    value["company"]["name"] = json!(format!("{name}{}", "p".repeat(short)));
    serde_json::to_vec(&value).expect("serialisable")
}

/// What one function did in a run.
#[derive(Default)]
struct Usage {
    invocations: usize,
    wall: Duration,
    cpu: Duration,
    log_lines: usize,
    log_bytes: usize,
    init_log_bytes: usize,
    emf_lines: usize,
}

impl Usage {
    fn add_lines(&mut self, lines: &[String], metrics: &mut BTreeSet<String>) {
        self.log_lines += lines.len();
        self.log_bytes += lines.iter().map(|l| l.len() + 1).sum::<usize>();
        for line in lines {
            let Ok(value) = serde_json::from_str::<Value>(line) else { continue };
            let Some(directives) = value["_aws"]["CloudWatchMetrics"].as_array() else { continue };
            self.emf_lines += 1;
            for directive in directives {
                for set in directive["Dimensions"].as_array().into_iter().flatten() {
                    let dims: Vec<String> = set
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|d| format!("{d}={}", value[d].as_str().unwrap_or("?")))
                        .collect();
                    for metric in directive["Metrics"].as_array().into_iter().flatten() {
                        metrics.insert(format!("{} [{}]", metric["Name"].as_str().unwrap_or("?"), dims.join(", ")));
                    }
                }
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "invocations": self.invocations,
            "wall_us_mean": self.wall.as_secs_f64() * 1e6 / self.invocations as f64,
            "cpu_us_mean": self.cpu.as_secs_f64() * 1e6 / self.invocations as f64,
            "log_lines": self.log_lines,
            "log_bytes": self.log_bytes,
            "emf_lines": self.emf_lines,
            "init_log_bytes": self.init_log_bytes,
        })
    }
}

/// The destinations of `routes`, created on moto; the ROUTES value and the
/// queues to count deliveries on.
async fn destinations(routes: Routes) -> (String, Vec<String>) {
    let sqs = support::sqs_client();
    match routes {
        Routes::OneSqs => {
            let queue = support::create_queue(&sqs, "cost-dest").await;
            (format!("*={queue}"), vec![queue])
        }
        Routes::FanOutThree => {
            let mut queues = Vec::new();
            for n in 0..3 {
                queues.push(support::create_queue(&sqs, &format!("cost-dest{n}")).await);
            }
            (format!("*={}", queues.join(",")), queues)
        }
        Routes::Fifo => {
            use aws_sdk_sqs::types::QueueAttributeName;
            let queue =
                support::create_queue_with(&sqs, "cost-dest", &[(QueueAttributeName::FifoQueue, "true".into())]).await;
            (format!("*={queue}"), vec![queue])
        }
        Routes::EventBridge => {
            let bus = support::unique_name("cost-bus");
            support::eventbridge_client().create_event_bus().name(&bus).send().await.expect("a bus");
            (format!("*=eventbridge:{bus}"), Vec::new())
        }
    }
}

/// The template's `LogLevel` as the `RUST_LOG` it sets.
fn rust_log(level: &str) -> String {
    if level == "debug" { "info,nectar_webhooks=debug".to_owned() } else { level.to_owned() }
}

/// One run: `webhooks` through ingest and the router with `routes` at
/// `level`, archived when `archive` says, the router handed at most `batch`
/// at a time.
async fn run(dir: &Path, routes: Routes, level: &str, archive: bool, batch: i32, webhooks: usize) -> Value {
    let sqs = support::sqs_client();
    let (ingest_queue, dlq) = support::create_queue_with_dlq(&sqs, "cost-ingest", 5).await;
    let table = support::create_idempotency_table(&support::dynamodb_client()).await;
    let secret_arn = support::secretsmanager_client()
        .create_secret()
        .name(support::unique_name("cost-secret"))
        .secret_string(SECRET)
        .send()
        .await
        .expect("a secret")
        .arn
        .expect("an ARN");
    let (route_table, destination_queues) = destinations(routes).await;

    let (ingest_proxy, router_proxy, source_proxy) = (
        CountingProxy::start(support::moto_endpoint()),
        CountingProxy::start(support::moto_endpoint()),
        CountingProxy::start(support::moto_endpoint()),
    );
    let ingest = Function::start(
        &dir.join("ingest"),
        "ingest",
        &[
            ("AWS_ENDPOINT_URL", ingest_proxy.url.clone()),
            ("RUST_LOG", rust_log(level)),
            ("WEBHOOK_SECRET_ARN", secret_arn),
            ("QUEUE_URL", ingest_queue.clone()),
        ],
    );
    let s3 = support::s3_client();
    let archive_stream = if archive { Some(support::create_archive_stream(&s3).await) } else { None };
    let mut router_env = vec![
        ("AWS_ENDPOINT_URL", router_proxy.url.clone()),
        ("RUST_LOG", rust_log(level)),
        ("ROUTES", route_table),
        ("IDEMPOTENCY_TABLE", table),
        ("DEAD_LETTER_QUEUE_URL", dlq),
        ("MAX_RECEIVE_COUNT", "5".to_owned()),
    ];
    if let Some((_, stream)) = &archive_stream {
        router_env.push(("ARCHIVE_STREAM", stream.clone()));
    }
    let router = Function::start(&dir.join("router"), "router", &router_env);
    let mut metrics = BTreeSet::new();
    let (mut ingest_usage, mut router_usage) = (Usage::default(), Usage::default());
    ingest_usage.init_log_bytes = ingest.take_lines().iter().map(|l| l.len() + 1).sum();
    router_usage.init_log_bytes = router.take_lines().iter().map(|l| l.len() + 1).sum();
    let init_calls = (ingest_proxy.take(), router_proxy.take());

    let cpu_before = ingest.cpu();
    let run_tag = support::unique_name("c");
    for n in 0..webhooks {
        let event_type = EVENT_TYPES[n % EVENT_TYPES.len()];
        let body = payload(event_type, n);
        let id = format!("msg_{:x<27}", format!("{run_tag}_{n:06}"));
        assert_eq!(id.len(), 31, "{id}: a Svix id's length");
        let now = support::now();
        let signature = sign(SECRET, &id, now, &body).expect("a symmetric secret");
        let signed = Signed {
            source: "nectar",
            id: &id,
            timestamp: now,
            signature: &signature,
            body: &body,
            base64_body: false,
        };
        let (answer, took) = ingest.invoke(&signed.http_v2(true));
        assert_eq!(answer["statusCode"], 202, "{answer}");
        ingest_usage.invocations += 1;
        ingest_usage.wall += took;
    }
    ingest_usage.cpu = ingest.cpu() - cpu_before;
    ingest_usage.add_lines(&ingest.take_lines(), &mut metrics);

    let source = support::sqs_client_for(&source_proxy.url);
    let cpu_before = router.cpu();
    let mut routed = 0;
    let mut empty_receives = 0;
    while routed < webhooks && empty_receives < 20 {
        let received = source
            .receive_message()
            .queue_url(&ingest_queue)
            .max_number_of_messages(batch)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("a receive")
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            empty_receives += 1;
            continue;
        }
        let (answer, took) = router.invoke(&sqs_event(&received));
        router_usage.invocations += 1;
        router_usage.wall += took;
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        assert!(failed.is_empty(), "{} records failed: {answer}", failed.len());
        let mut delete = source.delete_message_batch().queue_url(&ingest_queue);
        for (n, message) in received.iter().enumerate() {
            delete = delete.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(message.receipt_handle().expect("a receipt"))
                    .build()
                    .expect("complete"),
            );
        }
        delete.send().await.expect("deleted");
        routed += received.len();
    }
    assert_eq!(routed, webhooks, "every webhook reached the router");
    router_usage.cpu = router.cpu() - cpu_before;
    router_usage.add_lines(&router.take_lines(), &mut metrics);
    assert!(metrics.is_empty(), "webhooks that fit the model and went well publish no metric: {metrics:?}");

    for queue in &destination_queues {
        let arrived = support::drain(&sqs, queue, webhooks).await;
        assert_eq!(arrived.len(), webhooks, "{}: every webhook delivered once to {queue}", routes.name());
    }

    let mut archived_bytes = 0;
    if let Some((bucket, _)) = &archive_stream {
        let listed = s3.list_objects_v2().bucket(bucket).send().await.expect("the archive bucket");
        archived_bytes = listed.contents().iter().filter_map(|o| o.size()).sum::<i64>();
        assert!(archived_bytes > 0, "the archive holds the webhooks");
    }
    let calls = |caller: &str, calls: &[proxy::Call]| -> Vec<Value> {
        CountingProxy::summary(calls)
            .into_iter()
            .map(|((service, operation), (requests, units, entries))| {
                json!({"caller": caller, "service": service, "operation": operation,
                       "requests": requests, "billed_64kb_units": units, "entries": entries})
            })
            .collect()
    };
    let mut requests = calls("ingest", &ingest_proxy.take());
    requests.extend(calls("router", &router_proxy.take()));
    requests.extend(calls("event source", &source_proxy.take()));
    let mut init = calls("ingest", &init_calls.0);
    init.extend(calls("router", &init_calls.1));
    println!(
        "cost {:<28} {level:>5}{}{}: ingest {:>6.0} B/webhook of logs, router {:>6.0} B/webhook; {} kinds of request",
        routes.name(),
        if archive { " +archive" } else { "" },
        if batch == 1 { " one a batch" } else { "" },
        ingest_usage.log_bytes as f64 / webhooks as f64,
        router_usage.log_bytes as f64 / webhooks as f64,
        requests.len()
    );
    json!({
        "routes": routes.key(),
        "routes_name": routes.name(),
        "log_level": level,
        "archive": archive,
        "batch": batch,
        "archived_bytes": archived_bytes,
        "webhooks": webhooks,
        "body_bytes": BODY_BYTES,
        "ingest": ingest_usage.json(),
        "router": router_usage.json(),
        "requests": requests,
        "init_requests": init,
        "metrics": metrics.into_iter().collect::<Vec<_>>(),
    })
}

/// The event Lambda's SQS event source would invoke the router with.
fn sqs_event(received: &[aws_sdk_sqs::types::Message]) -> Value {
    let records: Vec<Value> = received
        .iter()
        .map(|m| {
            let attributes: BTreeMap<&String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, json!({"stringValue": v.string_value(), "stringListValues": [], "binaryListValues": [], "dataType": "String"})))
                .collect();
            let system: BTreeMap<&str, &String> =
                m.attributes().into_iter().flatten().map(|(k, v)| (k.as_str(), v)).collect();
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                   "attributes": system, "messageAttributes": attributes, "md5OfBody": "",
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:cost-ingest",
                   "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BENCH_BINARIES").map_or_else(|| root.join("target/release"), PathBuf::from);
    let out = std::env::var_os("BENCH_DIR").map_or_else(|| root.join("target/bench"), PathBuf::from);
    let webhooks = std::env::var("COST_WEBHOOKS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let mut runs = Vec::new();
    for routes in Routes::ALL {
        for (level, archive) in [("info", false), ("warn", false), ("info", true)] {
            runs.push(runtime.block_on(run(&dir, routes, level, archive, 10, webhooks)));
        }
    }
    for (level, batch) in [("debug", 10), ("info", 1)] {
        runs.push(runtime.block_on(run(&dir, Routes::OneSqs, level, false, batch, webhooks)));
    }
    // The goal's row twice more: its Lambda duration, wall-clock on moto and
    // CPU time in 10 ms ticks, varies by about a cent between runs, as much
    // as the goal's margin; the report judges the goal by the worst.
    for repeat in 1..=2 {
        let mut again = runtime.block_on(run(&dir, Routes::OneSqs, "info", false, 10, webhooks));
        again["repeat"] = json!(repeat);
        runs.push(again);
    }
    std::fs::create_dir_all(&out).expect("a writable target directory");
    let path = out.join("cost.json");
    let report = json!({ "binaries": dir.display().to_string(), "runs": runs });
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("serialisable")).expect("writable");
    println!("wrote {}", path.display());
}
