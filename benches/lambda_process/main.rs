//! Items 4 and 5 of BENCHMARKS.md: the release binaries as Lambda runs them,
//! each started against a loopback emulator of the Lambda Runtime API (and a
//! loopback SQS stub), measuring
//!
//! - init: process start → first `next` poll, and the first invocation
//!   (event handed out → answer received), for `ingest` (its secret from the
//!   environment, and from Secrets Manager: the one fetch at cold start),
//!   `router` and a hello-world `lambda_runtime` function, interleaved and
//!   repeated;
//! - peak RSS (VmHWM) over 10,000 invocations of each function;
//! - peak RSS of the router routing a batch of ten of the largest payloads
//!   ingest accepts, claim-checked in (stubbed) S3, to a `file:` destination;
//! - the stripped binaries' sizes.
//!
//! Build the binaries first (`make bench` does): `cargo build --release --bin
//! ingest --bin router --example hello_lambda`; `BENCH_BINARIES` names their
//! directory (default `target/release`). Writes its figures to
//! `$BENCH_DIR/lambda_process.json` and `$BENCH_DIR/large_payloads.json`
//! (default `target/bench`). `LAMBDA_PROCESS_ONLY=large_payloads` runs only
//! the large-payload batch, which needs only the `router` binary.

#[path = "../support/payload.rs"]
mod payload;

mod aws_stub;
mod http1;
mod runtime_api;

use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::core::verification::svix::sign;
use runtime_api::{AnswerKind, RuntimeApi};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";
/// How long a process may take to reach `next` or answer before the bench fails.
const LIMIT: Duration = Duration::from_secs(20);
const RSS_CHECKPOINTS: [usize; 3] = [1_000, 5_000, 10_000];
/// The functions' `MemorySize` in `template.yaml`, in Lambda's MB (MiB).
const MEMORY_SIZE_MB: u64 = 128;
/// The largest body ingest accepts: what a Lambda event can carry.
const LARGE_PAYLOAD_BYTES: usize = 3_112_960;
/// Records in the large-payload batch: the router's batch size.
const LARGE_BATCH: usize = 10;
/// Invocations of the large-payload batch (fresh webhook ids each time).
const LARGE_INVOCATIONS: u64 = 3;
/// Where the large payloads are claim-checked.
const PAYLOAD_BUCKET: &str = "bench-payloads";
/// The CA bundle the SDK's TLS client loads at start-up, as on Amazon Linux
/// 2023 (one bundle file, no directory of extra certificates): Debian's
/// bundle, and an empty directory set in `main`.
const CA_BUNDLES: [&str; 2] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];
static EMPTY_CERT_DIR: OnceLock<PathBuf> = OnceLock::new();

#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    Hello,
    Ingest,
    /// Ingest reading its secret from Secrets Manager, as deployed.
    IngestSecretsManager,
    Router,
    /// The router fetching claim-checked payloads and writing them to a file.
    RouterLargePayloads,
}

impl Function {
    const ALL: [Function; 4] = [Function::Hello, Function::Ingest, Function::IngestSecretsManager, Function::Router];

    fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello_lambda",
            Self::Ingest => "ingest",
            Self::IngestSecretsManager => "ingest_secrets_manager",
            Self::Router => "router",
            Self::RouterLargePayloads => "router_large_payloads",
        }
    }

    fn binary(self, dir: &Path) -> PathBuf {
        match self {
            Self::Hello => dir.join("examples").join("hello_lambda"),
            Self::Ingest | Self::IngestSecretsManager => dir.join("ingest"),
            Self::Router | Self::RouterLargePayloads => dir.join("router"),
        }
    }

    /// The event one invocation gets: a signed 10 KiB document webhook for
    /// ingest, a batch of ten of them for the router.
    fn event(self, serial: u64) -> Vec<u8> {
        if self == Self::RouterLargePayloads {
            return large_payload_batch(serial);
        }
        let body = payload::document_payload(10 * 1024);
        let id = format!("msg_bench_{serial:012}");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
        let signature = sign(SECRET, &id, now, &body).expect("a symmetric secret");
        let signed = Signed {
            source: "nectar",
            id: &id,
            timestamp: now,
            signature: &signature,
            body: &body,
            base64_body: false,
        };
        let event = match self {
            Self::Hello => json!({ "hello": "world" }),
            Self::Ingest | Self::IngestSecretsManager => signed.http_v2(false),
            Self::Router | Self::RouterLargePayloads => {
                let records: Vec<Value> =
                    (0..10).map(|n| Signed { id: &format!("{id}_{n}"), ..signed }.sqs_record()).collect();
                json!({ "Records": records })
            }
        };
        serde_json::to_vec(&event).expect("serialisable")
    }

    /// What a good answer contains.
    fn check(self, answer: &[u8]) {
        let answer: Value = serde_json::from_slice(answer).expect("a JSON answer");
        let good = match self {
            Self::Hello => answer["hello"] == "world",
            Self::Ingest | Self::IngestSecretsManager => answer["statusCode"] == 202,
            Self::Router | Self::RouterLargePayloads => {
                answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty)
            }
        };
        assert!(good, "{}: unexpected answer {answer}", self.name());
    }
}

/// A started function process and its Runtime API.
struct Process {
    child: Child,
    api: RuntimeApi,
    started: Instant,
    log_bytes: Arc<AtomicU64>,
}

impl Process {
    fn start(function: Function, dir: &Path, aws: &str) -> Self {
        let api = RuntimeApi::start();
        let binary = function.binary(dir);
        assert!(binary.exists(), "{} is missing: build it first (make bench does)", binary.display());
        let mut command = Command::new(&binary);
        command.env_clear().envs(lambda_environment(function, &api.address, aws));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let started = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
        let log_bytes = Arc::new(AtomicU64::new(0));
        let mut stdout = child.stdout.take().expect("piped");
        let counter = Arc::clone(&log_bytes);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 64 * 1024];
            while let Ok(read @ 1..) = stdout.read(&mut buffer) {
                counter.fetch_add(read as u64, Ordering::Relaxed);
            }
        });
        Self { child, api, started, log_bytes }
    }

    fn wait_for_poll(&self, function: Function) -> Instant {
        self.api.poll(LIMIT).unwrap_or_else(|| panic!("{} never polled for an event", function.name()))
    }

    /// Hands out one event and waits for its answer; returns when the answer arrived.
    fn invoke(&self, function: Function, event: Vec<u8>) -> Instant {
        self.api.queue(event);
        let answer = self.api.answer(LIMIT).unwrap_or_else(|| panic!("{} never answered", function.name()));
        assert_eq!(answer.kind, AnswerKind::Response, "{}: {}", function.name(), String::from_utf8_lossy(&answer.body));
        function.check(&answer.body);
        answer.at
    }

    /// Peak and current resident memory, in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("a live process");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variables Lambda sets for a function, plus the function's own.
fn lambda_environment(function: Function, runtime_api: &str, aws: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.name().to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_SIZE_MB.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", function.name())),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]0000".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "ASIABENCHBENCHBENCH0".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "benchbenchbenchbenchbenchbenchbenchbench".to_owned()),
        ("AWS_SESSION_TOKEN", "bench-session-token".to_owned()),
        ("AWS_ENDPOINT_URL", aws.to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
    ];
    if let Some(bundle) = CA_BUNDLES.into_iter().find(|path| Path::new(path).exists()) {
        env.push(("SSL_CERT_FILE", bundle.to_owned()));
        let empty = EMPTY_CERT_DIR.get().expect("set in main");
        env.push(("SSL_CERT_DIR", empty.display().to_string()));
    }
    match function {
        Function::Hello => {}
        Function::Ingest => {
            env.push(("WEBHOOK_SECRET", SECRET.to_owned()));
            env.push(("QUEUE_URL", format!("{aws}/123456789012/nectar-webhooks-ingest")));
        }
        Function::IngestSecretsManager => {
            env.push(("WEBHOOK_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench".to_owned()));
            env.push(("QUEUE_URL", format!("{aws}/123456789012/nectar-webhooks-ingest")));
        }
        Function::Router => env.push(("ROUTES", "*=drop".to_owned())),
        Function::RouterLargePayloads => {
            env.push(("ROUTES", format!("*=file:{}", large_payload_output().display())));
            env.push(("CLAIM_CHECK_BUCKET", PAYLOAD_BUCKET.to_owned()));
        }
    }
    env
}

/// Where the large-payload router writes what it routes.
fn large_payload_output() -> PathBuf {
    EMPTY_CERT_DIR.get().expect("set in main").with_file_name("large-payloads.jsonl")
}

/// The stubbed S3 objects: `LARGE_BATCH` document payloads of
/// `LARGE_PAYLOAD_BYTES`, each about a different document, so the router
/// may deliver them all at once.
fn large_payload_objects() -> HashMap<String, Vec<u8>> {
    let body = payload::document_payload(LARGE_PAYLOAD_BYTES);
    let id = br#""id":"b2d4e6f8-1234-5678-9abc-def012345678""#;
    let at = body.windows(id.len()).position(|w| w == id).expect("the sample document's id");
    (0..LARGE_BATCH)
        .map(|n| {
            let mut body = body.clone();
            body[at + id.len() - 2] = b'0' + u8::try_from(n).expect("under 10");
            (format!("/{PAYLOAD_BUCKET}/payloads/nectar/large_{n}"), body)
        })
        .collect()
}

/// A batch of `LARGE_BATCH` pointer messages, as ingest queues webhooks too
/// large for SQS: no body, the payload's S3 reference in an attribute.
fn large_payload_batch(serial: u64) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let records: Vec<Value> = (0..LARGE_BATCH)
        .map(|n| {
            let id = format!("msg_large_{serial:06}_{n}");
            let signed =
                Signed { source: "nectar", id: &id, timestamp: now, signature: "", body: b"", base64_body: false };
            let mut record = signed.sqs_record();
            record["messageAttributes"]["claim-check"] = json!({
                "stringValue": format!("s3://{PAYLOAD_BUCKET}/payloads/nectar/large_{n}"),
                "stringListValues": [], "binaryListValues": [], "dataType": "String",
            });
            record
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).expect("serialisable")
}

/// The router's peak memory routing batches of large claim-checked payloads.
fn large_payloads(dir: &Path, aws: &str) -> Value {
    let function = Function::RouterLargePayloads;
    let output = large_payload_output();
    let _ = std::fs::remove_file(&output);
    let process = Process::start(function, dir, aws);
    let mut polled = process.wait_for_poll(function);
    let (after_init, _) = process.memory();
    let mut peaks = Vec::new();
    let mut busy = Duration::ZERO;
    for serial in 1..=LARGE_INVOCATIONS {
        busy += process.invoke(function, function.event(serial)) - polled;
        polled = process.wait_for_poll(function);
        peaks.push(process.memory().0);
    }
    let written = std::fs::read_to_string(&output).expect("the router wrote its deliveries");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), LARGE_BATCH * LARGE_INVOCATIONS as usize, "every payload delivered");
    assert!(lines.iter().all(|line| line.len() > LARGE_PAYLOAD_BYTES), "whole payloads delivered");
    std::fs::remove_file(&output).expect("removable");
    let peak = *peaks.iter().max().expect("invocations");
    println!(
        "router, {LARGE_BATCH} claim-checked payloads of {LARGE_PAYLOAD_BYTES} bytes per batch: VmHWM {peak} KiB \
         ({:.0}% of {MEMORY_SIZE_MB} MB)",
        peak as f64 / (MEMORY_SIZE_MB as f64 * 1024.0) * 100.0
    );
    json!({
        "payload_bytes": LARGE_PAYLOAD_BYTES,
        "records_per_batch": LARGE_BATCH,
        "invocations": LARGE_INVOCATIONS,
        "memory_size_mb": MEMORY_SIZE_MB,
        "after_init_vm_hwm_kib": after_init,
        "vm_hwm_kib_after_each": peaks,
        "mean_invocation_us": micros(busy / LARGE_INVOCATIONS as u32),
    })
}

/// One cold start: (init, first invocation, second invocation).
fn cold_start(function: Function, dir: &Path, aws: &str, serial: &mut u64) -> [Duration; 3] {
    let process = Process::start(function, dir, aws);
    let first_poll = process.wait_for_poll(function);
    let mut invocation = |polled: Instant| {
        *serial += 1;
        process.invoke(function, function.event(*serial)) - polled
    };
    let first = invocation(first_poll);
    let second = invocation(process.wait_for_poll(function));
    [first_poll - process.started, first, second]
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn cold_starts(dir: &Path, aws: &str, runs: usize) -> Value {
    let mut samples: Vec<Vec<[Duration; 3]>> = vec![Vec::new(); Function::ALL.len()];
    let mut serial = 0;
    for _ in 0..runs {
        for (index, function) in Function::ALL.into_iter().enumerate() {
            samples[index].push(cold_start(function, dir, aws, &mut serial));
        }
    }
    let rows: Vec<Value> = Function::ALL
        .into_iter()
        .zip(&samples)
        .map(|(function, runs)| {
            let column = |i: usize| runs.iter().map(|r| r[i]).collect::<Vec<_>>();
            let (init, first, second) = (median(column(0)), median(column(1)), median(column(2)));
            println!(
                "cold start {:>12}: init {:>8.0} µs, first invocation {:>8.0} µs, second {:>6.0} µs (medians of {runs})",
                function.name(),
                micros(init),
                micros(first),
                micros(second),
                runs = runs.len()
            );
            json!({
                "function": function.name(),
                "init_us": micros(init),
                "init_min_us": micros(column(0).into_iter().min().expect("runs")),
                "first_invocation_us": micros(first),
                "second_invocation_us": micros(second),
            })
        })
        .collect();
    json!({ "runs": runs, "functions": rows })
}

/// Invokes one process `RSS_CHECKPOINTS.last()` times, reading its memory at each checkpoint.
fn memory(function: Function, dir: &Path, aws: &str) -> Value {
    let process = Process::start(function, dir, aws);
    let mut polled = process.wait_for_poll(function);
    let (after_init, _) = process.memory();
    let logs_after_init = process.log_bytes.load(Ordering::Relaxed);
    // One event, re-signed every 1,000 invocations to stay within the timestamp tolerance.
    let mut event = function.event(0);
    let mut points = Vec::new();
    let mut busy = Duration::ZERO;
    let total = *RSS_CHECKPOINTS.last().expect("checkpoints");
    for count in 1..=total {
        if count % 1000 == 0 {
            event = function.event(count as u64);
        }
        busy += process.invoke(function, event.clone()) - polled;
        polled = process.wait_for_poll(function);
        if RSS_CHECKPOINTS.contains(&count) {
            let (peak, current) = process.memory();
            println!("{:>6}: {count:>6} invocations, VmHWM {peak} KiB, VmRSS {current} KiB", function.name());
            points.push(json!({ "invocations": count, "vm_hwm_kib": peak, "vm_rss_kib": current }));
        }
    }
    let log_bytes = process.log_bytes.load(Ordering::Relaxed) - logs_after_init;
    json!({
        "function": function.name(),
        "after_init_vm_hwm_kib": after_init,
        "checkpoints": points,
        "mean_invocation_us": micros(busy / total as u32),
        "log_bytes_per_invocation": log_bytes as f64 / total as f64,
    })
}

fn sizes(dir: &Path) -> Value {
    [Function::Hello, Function::Ingest, Function::Router]
        .into_iter()
        .map(|f| {
            let bytes = std::fs::metadata(f.binary(dir)).map(|m| m.len()).unwrap_or(0);
            json!({ "function": f.name(), "bytes": bytes })
        })
        .collect()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BENCH_BINARIES").map_or_else(|| root.join("target/release"), PathBuf::from);
    let runs = std::env::var("COLD_STARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let out = std::env::var_os("BENCH_DIR").map_or_else(|| root.join("target/bench"), PathBuf::from);
    let empty = out.join("empty-certificate-directory");
    std::fs::create_dir_all(&empty).expect("a writable target directory");
    EMPTY_CERT_DIR.set(empty).expect("set once");

    let aws = aws_stub::start(SECRET, large_payload_objects());
    let large = large_payloads(&dir, &aws);
    std::fs::create_dir_all(&out).expect("a writable target directory");
    let path = out.join("large_payloads.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&large).expect("serialisable")).expect("writable");
    println!("wrote {}", path.display());
    if std::env::var("LAMBDA_PROCESS_ONLY").is_ok_and(|only| only == "large_payloads") {
        return;
    }
    let memory: Vec<Value> =
        [Function::Hello, Function::Ingest, Function::Router].into_iter().map(|f| memory(f, &dir, &aws)).collect();
    let report = json!({
        "binaries": dir.display().to_string(),
        "sizes": sizes(&dir),
        "cold_start": cold_starts(&dir, &aws, runs),
        "memory": memory,
    });
    let path = out.join("lambda_process.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("serialisable")).expect("writable");
    println!("wrote {}", path.display());
}
