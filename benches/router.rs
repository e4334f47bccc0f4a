//! Item 3 of BENCHMARKS.md: the router Lambda's handler in process, one SQS
//! batch of 10 records (the event source's default batch size) from the
//! event's bytes to the partial-batch response, with delivery stubbed out and
//! the in-memory de-duplication store (the deployed stack's DynamoDB table
//! adds its round trips).

#[path = "support/interleaved.rs"]
mod interleaved;
#[path = "support/logs.rs"]
mod logs;
#[path = "support/payload.rs"]
mod payload;

use aws_lambda_events::event::sqs::SqsEvent;
use interleaved::Closure;
use nectar_webhooks::adapters::lambda_router::SqsBatchHandler;
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::core::clock::{Clock as _, SystemClock};
use nectar_webhooks::core::dedup::InMemorySeen;
use nectar_webhooks::core::router::{Deliver, Delivery, DeliveryError, Router};
use nectar_webhooks::core::routing::{Destination, RouteTable};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const BATCH: usize = 10;

/// Accepts every delivery at once, counting them.
struct Accepting(Arc<AtomicUsize>);

impl Deliver for Accepting {
    async fn deliver(&self, _: &Destination, _: &Delivery<'_>) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Ten 10 KiB document webhooks as ingest queued them, as one SQS event.
fn batch() -> Vec<u8> {
    let body = payload::document_payload(10 * 1024);
    let now = SystemClock.now_unix();
    let records: Vec<Value> = (0..BATCH)
        .map(|n| {
            let id = format!("msg_bench_{n:04}");
            let signed =
                Signed { source: "nectar", id: &id, timestamp: now, signature: "", body: &body, base64_body: false };
            signed.sqs_record()
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap()
}

fn main() {
    logs::init();
    let event = batch();
    let table = RouteTable::parse("document.*=stdout; connection.*=stdout; *=drop").unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // A router with an empty de-duplication store each time, so every record
    // is delivered rather than skipped as already seen.
    let closures: Vec<(String, Closure<'_>)> = vec![(
        "sqs_batch_of_10_to_response".into(),
        Box::new(|| {
            let router = Router::new(table.clone(), Accepting(Arc::clone(&delivered)), InMemorySeen::default());
            let handler = SqsBatchHandler { router, dead_letters: None };
            let response = runtime.block_on(async {
                let event: SqsEvent = serde_json::from_slice(black_box(&event)).unwrap();
                serde_json::to_vec(&handler.handle(event).await).unwrap()
            });
            assert_eq!(response, br#"{"batchItemFailures":[]}"#);
        }),
    )];
    println!("router, one SQS batch of {BATCH}:");
    let samples = interleaved::measure(closures, interleaved::rounds(200), Duration::from_millis(1));
    assert!(delivered.load(Ordering::Relaxed) >= BATCH, "the records were delivered");
    interleaved::write("router", &interleaved::to_json(&samples));
}
