//! Payloads too large for an SQS message travel through S3 (moto): ingest
//! stores them and queues a reference; the router fetches them and every
//! destination gets the whole payload, SQS destinations by reference again.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::lambda_router::SqsBatchHandler;
use nectar_webhooks::adapters::payloads::{S3PayloadStore, read_envelope};
use nectar_webhooks::adapters::sqs::SqsQueue;
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::config::{IngestConfig, LAMBDA_BODY_LIMIT};
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
    assert_eq!(config.limits.max_body_bytes, LAMBDA_BODY_LIMIT, "with a bucket, the limit is Lambda's");
    let ingest =
        Ingest::new(config.sources(), SqsQueue::new(sqs.clone(), &queue), config.limits, Arc::new(FixedClock(NOW)))
            .with_payload_store(Arc::clone(&store));

    let body = large_document(2 * 1024 * 1024);
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
    assert_eq!(ingest.respond(request, std::future::pending()).await.status(), 202);
    let too_big = vec![b' '; LAMBDA_BODY_LIMIT + 1];
    let request = IncomingRequest { body: &too_big, ..request };
    let refused = ingest.respond(request, std::future::pending()).await;
    assert_eq!(refused.status(), 413);
    assert_eq!(refused.headers()["webhook-delivery"], "abort-message", "Svix stops retrying what can never fit");

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

/// A payload too large for an EventBridge entry reaches the bus as a claim
/// check (where the payload is, its size, type and resource id) rather than
/// failing for ever; the payload behind it is whole. Smaller ones go as they
/// are.
#[tokio::test]
async fn eventbridge_gets_a_claim_check_for_a_payload_over_its_entry_limit() {
    use nectar_webhooks::adapters::destinations::EVENTBRIDGE_ENTRY_LIMIT;
    let sqs = sqs_client();
    let events = eventbridge_client();
    let (store, bucket) = bucket().await;
    let bus = unique_name("large-bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let target = create_queue(&sqs, "large-bus-target").await;
    let rule = unique_name("documents");
    events.put_rule().name(&rule).event_bus_name(&bus).event_pattern(r#"{"source": ["nectar"]}"#).send().await.unwrap();
    let queue = aws_sdk_eventbridge::types::Target::builder().id("q").arn(queue_arn(&sqs, &target).await).build();
    events.put_targets().rule(&rule).event_bus_name(&bus).targets(queue.unwrap()).send().await.unwrap();

    let table = RouteTable::parse(&format!("*=eventbridge:{bus}")).unwrap();
    let destinations = Destinations::default()
        .with_eventbridge(events.clone())
        .with_payload_store(Arc::clone(&store), nectar_webhooks::core::ingest::QUEUE_MESSAGE_LIMIT);
    let handler =
        SqsBatchHandler { router: Router::new(table, destinations, InMemorySeen::default()), dead_letters: None };
    let large = large_document(EVENTBRIDGE_ENTRY_LIMIT + 1);
    let small = br#"{"eventType":"document.created.v2","id":"doc-small"}"#;
    let record = |id: &str, body: &[u8]| {
        Signed { source: "nectar", id, timestamp: now(), signature: "v1,unused", body, base64_body: false }.sqs_record()
    };
    let event =
        serde_json::from_value(json!({"Records": [record("msg_eb_large", &large), record("msg_eb_small", small)]}))
            .unwrap();
    assert!(handler.handle(event).await.batch_item_failures.is_empty(), "never a failure for size alone");

    let received = drain(&sqs, &target, 2).await;
    let detail_of = |id: &str| {
        received
            .iter()
            .map(|m| serde_json::from_str::<Value>(m.body().unwrap()).unwrap())
            .find(|e| e["resources"] == json!([format!("webhook-id:{id}")]))
            .unwrap_or_else(|| panic!("{id} reached the bus"))["detail"]
            .clone()
    };
    assert_eq!(detail_of("msg_eb_small"), serde_json::from_slice::<Value>(small).unwrap());
    let claim = detail_of("msg_eb_large");
    assert_eq!(claim["claimCheck"], format!("s3://{bucket}/payloads/nectar/msg_eb_large"));
    assert_eq!(claim["bytes"], large.len());
    assert_eq!(claim["eventType"], "document.created.v2");
    assert_eq!(claim["id"], "doc-large");
    assert_eq!(store.get(claim["claimCheck"].as_str().unwrap()).await.unwrap(), large);
}
