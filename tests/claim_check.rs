//! Payloads too large for an SQS message travel through S3 (moto): ingest
//! stores them and queues a reference; the router fetches them and every
//! destination gets the whole payload, SQS destinations by reference again.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::lambda_router::SqsBatchHandler;
use nectar_webhooks::adapters::payloads::{S3PayloadStore, read_envelope};
use nectar_webhooks::adapters::sqs::SqsQueue;
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::claim_check::PayloadStore;
use nectar_webhooks::core::clock::FixedClock;
use nectar_webhooks::core::dedup::InMemorySeen;
use nectar_webhooks::core::envelope::{ATTR_CLAIM_CHECK, ATTR_ID};
use nectar_webhooks::core::ingest::{IncomingRequest, Ingest};
use nectar_webhooks::core::router::Router;
use nectar_webhooks::core::routing::RouteTable;
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;

const NOW: i64 = 1_764_201_600;

/// A document event of about `size` bytes, as large bills with many line items are.
fn large_document(size: usize) -> Vec<u8> {
    let item = r#"{"description":"Energy charge","quantity":"1234.5","rate":"0.1234","totalCharge":"152.34"},"#;
    let items = item.repeat(size / item.len());
    format!(r#"{{"eventType":"document.created.v2","id":"doc-large","lineItems":[{}]}}"#, items.trim_end_matches(','))
        .into_bytes()
}

async fn bucket() -> (Arc<dyn PayloadStore>, String) {
    let s3 = s3_client();
    let bucket = unique_name("claim-checks");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    (Arc::new(S3PayloadStore::new(s3, &bucket)), bucket)
}

#[tokio::test]
async fn a_payload_over_the_queue_limit_goes_by_s3_and_arrives_whole() {
    let sqs = sqs_client();
    let queue = create_queue(&sqs, "claims").await;
    let (store, bucket) = bucket().await;
    let config = IngestConfig::from_lookup(|name| match name {
        "WEBHOOK_SECRET" => Some(SAMPLE_SECRET.to_owned()),
        "CLAIM_CHECK_BUCKET" => Some(bucket.clone()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.limits.max_body_bytes, 6 * 1024 * 1024, "with a bucket, the limit is Lambda's");
    let ingest =
        Ingest::new(config.sources(), SqsQueue::new(sqs.clone(), &queue), config.limits, Arc::new(FixedClock(NOW)))
            .with_payload_store(Arc::clone(&store));

    let body = large_document(1024 * 1024);
    let mut headers = http::HeaderMap::new();
    for (name, value) in svix_headers(SAMPLE_SECRET, "msg_large", NOW, &body) {
        headers.insert(name, value.parse().unwrap());
    }
    let request = IncomingRequest {
        method: &http::Method::POST,
        path: "/webhooks/nectar",
        headers: &headers,
        body: &body,
        body_undecodable: false,
    };
    assert_eq!(ingest.respond(request).await.status(), 202);
    let too_big = vec![b' '; 6 * 1024 * 1024 + 1];
    let request = IncomingRequest { body: &too_big, ..request };
    assert_eq!(ingest.respond(request).await.status(), 413);

    let queued = drain(&sqs, &queue, 1).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].body(), Some(""), "the queue carries only the reference");
    let reference = attribute(&queued[0], ATTR_CLAIM_CHECK).unwrap();
    assert_eq!(reference, format!("s3://{bucket}/payloads/nectar/msg_large"));
    let read = read_envelope(Some(store.as_ref()), queued[0].body().unwrap(), |name| attribute(&queued[0], name))
        .await
        .unwrap();
    assert_eq!(read.body, body);

    // The router fetches it; a file gets it whole, an SQS destination by reference.
    let destination = create_queue(&sqs, "claims-dest").await;
    let out = std::env::temp_dir().join(unique_name("claims")).with_extension("jsonl");
    let table = RouteTable::parse(&format!("*={destination},file:{}", out.display())).unwrap();
    let destinations = Destinations::default().with_sqs(sqs.clone()).with_payload_store(Arc::clone(&store), 256 * 1024);
    let handler = SqsBatchHandler {
        router: Router::new(table, destinations, InMemorySeen::default())
            .with_clock(Arc::new(FixedClock(NOW)))
            .with_payload_store(Arc::clone(&store)),
        dead_letters: None,
    };
    let attributes: serde_json::Map<String, Value> = queued[0]
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!({"stringValue": v.string_value(), "dataType": "String"})))
        .collect();
    let event =
        serde_json::from_value(json!({"Records": [{"messageId": "m1", "body": "", "messageAttributes": attributes}]}))
            .unwrap();
    assert!(handler.handle(event).await.batch_item_failures.is_empty());

    let line: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["body"].as_str().unwrap().as_bytes(), body);
    assert_eq!(line["eventType"], "document.created.v2");
    let copies = drain(&sqs, &destination, 1).await;
    assert_eq!(attribute(&copies[0], ATTR_ID), Some("msg_large"));
    let copy = read_envelope(Some(store.as_ref()), copies[0].body().unwrap(), |name| attribute(&copies[0], name))
        .await
        .unwrap();
    assert_eq!(copy.body, body);
}

#[tokio::test]
async fn a_missing_payload_fails_the_record_so_it_is_retried() {
    let (store, bucket) = bucket().await;
    let table = RouteTable::parse("*=drop").unwrap();
    let handler = SqsBatchHandler {
        router: Router::new(table, Destinations::default(), InMemorySeen::default()).with_payload_store(store),
        dead_letters: None,
    };
    let attribute = |value: &str| json!({"stringValue": value, "dataType": "String"});
    let event = serde_json::from_value(json!({"Records": [{"messageId": "m1", "body": "", "messageAttributes": {
        "webhook-id": attribute("msg_gone"), "webhook-timestamp": attribute("1"), "webhook-source": attribute("nectar"),
        "claim-check": attribute(&format!("s3://{bucket}/payloads/nectar/msg_gone")),
    }}]}))
    .unwrap();
    let failed: Vec<String> =
        handler.handle(event).await.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    assert_eq!(failed, ["m1"]);
}
