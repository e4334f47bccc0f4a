//! Item 2 of BENCHMARKS.md: the ingest Lambda's handler in process, from the
//! API Gateway HTTP API event's bytes to the response's bytes (what the
//! runtime receives and sends; read as `lambda_runtime` reads events), with
//! the queue stubbed in memory; beside the verification of the same body
//! alone and the steps in between, measured in the same rounds.

#[path = "support/interleaved.rs"]
mod interleaved;
#[path = "support/logs.rs"]
mod logs;
#[path = "support/payload.rs"]
mod payload;

use interleaved::Closure;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use lambda_runtime::tower::ServiceExt as _;
use lambda_runtime::{Context, LambdaEvent, Service as _};
use nectar_webhooks::adapters::lambda_ingest::{self, HttpEvent};
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::clock::FixedClock;
use nectar_webhooks::core::envelope::QueueMessage;
use nectar_webhooks::core::ingest::{IncomingRequest, Ingest, Limits};
use nectar_webhooks::core::queue::{Queue, QueueError, Webhook};
use nectar_webhooks::core::verification::svix::{
    DEFAULT_TOLERANCE_SECS, SignedHeaders, SigningSecrets, SvixVerifier, sign,
};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SECRET: &str = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";
const ID: &str = "msg_2pVbKXPc9NrP3sYqfB7LmT4vW1x";
const NOW: i64 = 1_764_201_600;
const BODY_BYTES: usize = 10 * 1024;

/// Takes every message at once and keeps only its size, as an SQS that
/// answered instantly would.
struct MemoryQueue(Arc<AtomicUsize>);

impl Queue for MemoryQueue {
    async fn enqueue(&self, message: QueueMessage, _: Webhook<'_>) -> Result<(), QueueError> {
        self.0.store(message.size(), Ordering::Relaxed);
        Ok(())
    }
}

/// Reads an event the way `lambda_runtime` does before calling the handler.
fn runtime_read<T: serde::de::DeserializeOwned>(event: &[u8]) -> T {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(black_box(event))).unwrap()
}

fn main() {
    logs::init();
    let body = payload::document_payload(BODY_BYTES);
    let signature = sign(SECRET, ID, NOW, &body).unwrap();
    let signed =
        Signed { source: "nectar", id: ID, timestamp: NOW, signature: &signature, body: &body, base64_body: false };
    let event = serde_json::to_vec(&signed.http_v2(false)).unwrap();
    let body_in_event = serde_json::to_vec(std::str::from_utf8(&body).unwrap()).unwrap();
    let mut without_body = signed.http_v2(false);
    without_body.as_object_mut().unwrap().remove("body");
    let event_without_body = serde_json::to_vec(&without_body).unwrap();

    let config = IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| SECRET.to_owned())).unwrap();
    let queued = Arc::new(AtomicUsize::new(0));
    let queue = MemoryQueue(Arc::clone(&queued));
    let ingest = Arc::new(Ingest::new(config.sources(), queue, Limits::default(), Arc::new(FixedClock(NOW))));
    let mut service = lambda_ingest::service(Arc::clone(&ingest));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();

    let verifier = SvixVerifier::new(SigningSecrets::parse(SECRET).unwrap(), DEFAULT_TOLERANCE_SECS);
    let signed_headers = SignedHeaders { id: ID, timestamp: "1764201600", signature: &signature };
    let mut headers = http::HeaderMap::new();
    headers.insert("svix-id", ID.parse().unwrap());
    headers.insert("svix-timestamp", NOW.to_string().parse().unwrap());
    headers.insert("svix-signature", signature.parse().unwrap());
    let request = IncomingRequest {
        method: &http::Method::POST,
        path: "/webhooks/nectar",
        headers: &headers,
        body: &body,
        body_undecodable: false,
    };

    let closures: Vec<(String, Closure<'_>)> = vec![
        (
            "verify_only".into(),
            Box::new(|| assert!(verifier.verify(black_box(&signed_headers), black_box(&body), NOW).is_ok())),
        ),
        (
            "core_handle".into(),
            Box::new(|| assert!(runtime.block_on(ingest.handle(black_box(request), std::future::pending())).is_ok())),
        ),
        (
            "core_respond".into(),
            Box::new(|| {
                assert_eq!(runtime.block_on(ingest.respond(black_box(request), std::future::pending())).status(), 202)
            }),
        ),
        (
            "event_skipped_by_serde_json".into(),
            Box::new(|| {
                runtime_read::<serde::de::IgnoredAny>(&event);
            }),
        ),
        (
            "body_read_by_serde_json".into(),
            Box::new(|| {
                black_box(runtime_read::<String>(&body_in_event));
            }),
        ),
        (
            "event_without_body_read_as_v2".into(),
            Box::new(|| {
                black_box(runtime_read::<ApiGatewayV2httpRequest>(&event_without_body));
            }),
        ),
        (
            "event_read_by_lambda_http".into(),
            Box::new(|| {
                black_box(runtime_read::<LambdaRequest>(&event));
            }),
        ),
        (
            "event_read_as_http_event".into(),
            Box::new(|| {
                black_box(runtime_read::<HttpEvent>(&event));
            }),
        ),
        (
            "lambda_event_to_response".into(),
            Box::new(|| {
                let response = runtime.block_on(async {
                    let event = LambdaEvent::new(runtime_read::<HttpEvent>(&event), Context::default());
                    let event = HttpEvent::into_lambda_request(event);
                    let response = service.ready().await.unwrap().call(event).await.unwrap();
                    serde_json::to_vec(&response).unwrap()
                });
                assert!(response.starts_with(br#"{"statusCode":202"#), "{}", String::from_utf8_lossy(&response));
            }),
        ),
    ];
    println!("ingest, 10 KiB document webhook:");
    let samples = interleaved::measure(closures, interleaved::rounds(400), Duration::from_millis(1));
    assert!(queued.load(Ordering::Relaxed) > BODY_BYTES, "the handler queued the webhook");
    interleaved::write("ingest", &interleaved::to_json(&samples));
}
