//! Item 7 of BENCHMARKS.md: ingest's worst-case time per path, against the
//! template's 12 s timeout. The ingest Lambda's handler runs in process with
//! the deployed SDK configuration (`adapters::aws`: its connect, attempt and
//! operation limits and its retries) against a loopback AWS whose S3 and SQS
//! are told to answer, stall or answer late, invoked with a Lambda context
//! whose deadline is the timeout's, as the runtime gives it. Each scenario
//! reports the status and how long the answer took.
//!
//! Writes `$BENCH_DIR/time_budget.json` (default `target/bench`).

#[path = "support/payload.rs"]
mod payload;

use lambda_http::request::LambdaRequest;
use lambda_runtime::tower::ServiceExt as _;
use lambda_runtime::{Context, LambdaEvent, Service as _};
use nectar_webhooks::adapters::payloads::S3PayloadStore;
use nectar_webhooks::adapters::sqs::SqsQueue;
use nectar_webhooks::adapters::{aws, lambda_ingest};
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::clock::SystemClock;
use nectar_webhooks::core::ingest::{Ingest, Limits};
use nectar_webhooks::core::verification::svix::sign;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

const SECRET: &str = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";
/// The ingest function's `Timeout` in template.yaml.
const LAMBDA_TIMEOUT: Duration = Duration::from_secs(12);
/// Bodies over this go by claim check in the scenarios that need one.
const QUEUE_LIMIT: usize = 1024;

/// What the loopback service does with a request.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Answer,
    /// Answers after this long.
    Late(Duration),
    /// Accepts the connection and never answers.
    Stall,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    claim_check: bool,
    s3: Behaviour,
    sqs: Behaviour,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario { name: "inline, SQS stalls", claim_check: false, s3: Behaviour::Answer, sqs: Behaviour::Stall },
    Scenario { name: "claim check, S3 stalls", claim_check: true, s3: Behaviour::Stall, sqs: Behaviour::Answer },
    Scenario {
        name: "claim check, S3 answers at 1.9 s, then SQS stalls",
        claim_check: true,
        s3: Behaviour::Late(Duration::from_millis(1900)),
        sqs: Behaviour::Stall,
    },
    Scenario { name: "claim check, both answer", claim_check: true, s3: Behaviour::Answer, sqs: Behaviour::Answer },
];

/// A loopback S3 (PUT) and SQS (JSON protocol POST) behaving as told.
async fn start_aws(behaviours: Arc<Mutex<(Behaviour, Behaviour)>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let behaviours = Arc::clone(&behaviours);
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut reader = BufReader::new(reader);
                loop {
                    let (mut head, mut line) = (String::new(), String::new());
                    while reader.read_line(&mut line).await.unwrap_or(0) > 2 {
                        head.push_str(&line.to_ascii_lowercase());
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|n| n.trim().parse().ok())
                        .unwrap_or(0usize);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let is_s3 = head.starts_with("put ");
                    let (s3, sqs) = *behaviours.lock().expect("not poisoned");
                    match if is_s3 { s3 } else { sqs } {
                        Behaviour::Stall => std::future::pending::<()>().await,
                        Behaviour::Late(after) => tokio::time::sleep(after).await,
                        Behaviour::Answer => {}
                    }
                    let (content_type, reply) = if is_s3 {
                        ("application/xml", String::new())
                    } else {
                        ("application/x-amz-json-1.0", r#"{"MessageId":"stub","MD5OfMessageBody":"0"}"#.to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\netag: \"0\"\r\nx-amzn-requestid: stub\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if writer.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    endpoint
}

/// A signed function URL event for `body`.
fn event(id: &str, body: &[u8]) -> LambdaRequest {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let signature = sign(SECRET, id, timestamp, body).expect("a valid secret");
    let signed = Signed { source: "nectar", id, timestamp, signature: &signature, body, base64_body: false };
    serde_json::from_value(signed.http_v2(true)).expect("a valid event")
}

/// A context whose invocation ends when the template's timeout would end it.
fn context() -> Context {
    let mut context = Context::default();
    let deadline = SystemTime::now() + LAMBDA_TIMEOUT;
    context.deadline = deadline.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    context
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let behaviours = Arc::new(Mutex::new((Behaviour::Answer, Behaviour::Answer)));
    let endpoint = start_aws(Arc::clone(&behaviours)).await;
    // SAFETY: set before any other thread reads the environment.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        std::env::set_var("AWS_REGION", "eu-west-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    }
    let sdk = aws::sdk_config().await.expect("an SDK configuration");
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let config = IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| SECRET.to_owned()))
        .expect("a valid configuration");
    let ingest = |claim_check: bool| {
        let limits = if claim_check {
            Limits { max_body_bytes: 64 * 1024, max_queue_message_bytes: QUEUE_LIMIT }
        } else {
            Limits::default()
        };
        let queue = SqsQueue::new(sqs.clone(), format!("{endpoint}/123456789012/ingest"));
        let ingest = Ingest::new(config.sources(), queue, limits, Arc::new(SystemClock))
            .with_payload_store(Arc::new(S3PayloadStore::new(s3.clone(), "payloads")));
        Arc::new(ingest)
    };
    let body = payload::document_payload(4 * QUEUE_LIMIT);
    let mut rows = Vec::new();
    for (n, scenario) in SCENARIOS.iter().enumerate() {
        *behaviours.lock().expect("not poisoned") = (scenario.s3, scenario.sqs);
        let mut service = lambda_ingest::service(ingest(scenario.claim_check));
        let invocation = LambdaEvent::new(event(&format!("msg_budget_{n}"), &body), context());
        let started = Instant::now();
        let answer = service.ready().await.expect("ready").call(invocation).await.expect("infallible");
        let seconds = started.elapsed().as_secs_f64();
        let answer = serde_json::to_value(answer).expect("serialisable");
        let status = answer["statusCode"].as_u64().unwrap_or_default();
        let error = serde_json::from_str::<Value>(answer["body"].as_str().unwrap_or("{}"))
            .ok()
            .and_then(|b| b["error"].as_str().map(str::to_owned));
        println!("{:<52} {status} {:>6.2} s {}", scenario.name, seconds, error.as_deref().unwrap_or(""));
        rows.push(json!({"scenario": scenario.name, "status": status, "error": error, "seconds": seconds}));
    }
    let out = std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into());
    std::fs::create_dir_all(&out).expect("a bench directory");
    let report = json!({
        "timeout_secs": LAMBDA_TIMEOUT.as_secs(),
        "margin_secs": lambda_ingest::ANSWER_MARGIN.as_secs_f64(),
        "operation_timeout_secs": aws::OPERATION_TIMEOUT.as_secs_f64(),
        "scenarios": rows,
    });
    let path = format!("{out}/time_budget.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("serialisable")).expect("written");
    println!("wrote {path}");
}
