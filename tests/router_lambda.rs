//! The router Lambda's handler, driven with SQS events, delivering to real
//! SQS queues (moto) and files.

#![cfg(feature = "adapters")]

mod support;

use aws_lambda_events::event::sqs::SqsEvent;
use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::lambda_router;
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::core::dedup::InMemorySeen;
use nectar_webhooks::core::envelope::{ATTR_EVENT_TYPE, ATTR_ID, ATTR_ROUTE};
use nectar_webhooks::core::router::Router;
use nectar_webhooks::core::routing::RouteTable;
use serde_json::{Value, json};
use std::path::Path;
use support::*;

type SqsRouter = Router<Destinations, InMemorySeen>;

fn router(routes: &str) -> SqsRouter {
    Router::new(RouteTable::parse(routes).unwrap(), Destinations::new(Some(sqs_client())), InMemorySeen::default())
}

fn record(id: &str, body: &[u8]) -> Value {
    Signed { source: "nectar", id, timestamp: 1_764_201_600, signature: "v1,unused", body, base64_body: false }
        .sqs_record()
}

fn batch(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failed_ids(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

fn payload(name: &str) -> Vec<u8> {
    std::fs::read(project_dir().join("events/payloads").join(name)).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn every_sample_payload_reaches_the_destination_of_its_type_byte_for_byte() {
    let client = sqs_client();
    let documents = create_queue(&client, "documents").await;
    let connections = create_queue(&client, "connections").await;
    let dir = tempdir();
    let others = dir.join("others.jsonl");
    let router = router(&format!("document.*={documents};connection.*={connections};*=file:{}", others.display()));

    let mut names: Vec<String> = std::fs::read_dir(project_dir().join("events/payloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let records = names.iter().map(|name| record(&format!("msg_{name}"), &payload(name))).collect();
    let response = lambda_router::handle(&router, batch(records)).await;
    assert!(failed_ids(&response).is_empty());

    let typed = names.iter().filter(|n| n.ends_with("d.json") || n.ends_with("d.v2.json")).count();
    let delivered_documents = drain(&client, &documents, 6).await;
    let delivered_connections = drain(&client, &connections, 6).await;
    assert_eq!(delivered_documents.len() + delivered_connections.len(), typed);
    for message in delivered_documents.iter().chain(&delivered_connections) {
        let name = attribute(message, ATTR_ID).unwrap().strip_prefix("msg_").unwrap();
        assert_eq!(message.body().unwrap().as_bytes(), payload(name), "{name} arrived byte for byte");
        let event_type = attribute(message, ATTR_EVENT_TYPE).unwrap();
        assert_eq!(format!("{event_type}.json"), name);
        let route = attribute(message, ATTR_ROUTE).unwrap();
        assert!(event_type.starts_with(route.trim_end_matches('*')), "{event_type} via {route}");
    }
    let unknown = lines(&others);
    assert_eq!(unknown.len(), names.len() - typed, "the payloads without a readable type");
    for line in unknown {
        assert_eq!(line["eventType"], "unknown");
        let name = line["id"].as_str().unwrap().strip_prefix("msg_").unwrap();
        assert_eq!(line["body"].as_str().unwrap().as_bytes(), payload(name));
    }
}

#[tokio::test]
async fn the_same_webhook_twice_reaches_each_destination_once() {
    let client = sqs_client();
    let queue = create_queue(&client, "dedup").await;
    let dir = tempdir();
    let file = dir.join("copies.jsonl");
    let router = router(&format!("*={queue},file:{}", file.display()));
    let body = payload("document.created.v2.json");
    let first = lambda_router::handle(&router, batch(vec![record("msg_twice", &body)])).await;
    let again =
        lambda_router::handle(&router, batch(vec![record("msg_twice", &body), record("msg_twice", &body)])).await;
    assert!(failed_ids(&first).is_empty() && failed_ids(&again).is_empty());
    assert_eq!(drain(&client, &queue, 1).await.len(), 1);
    assert_eq!(lines(&file).len(), 1);
}

#[tokio::test]
async fn a_failing_destination_fails_only_its_own_records() {
    let client = sqs_client();
    let healthy = create_queue(&client, "healthy").await;
    let missing = format!("{}/123456789012/no-such-queue", moto_endpoint());
    let router = router(&format!("document.*={missing};*={healthy}"));
    let records = vec![
        record("msg_doc", &payload("document.created.json")),
        record("msg_conn", &payload("connection.created.json")),
        json!({"messageId": "sqs-poison", "body": "{}", "messageAttributes": {}}),
    ];
    let response = lambda_router::handle(&router, batch(records)).await;
    assert_eq!(failed_ids(&response), vec!["sqs-msg_doc".to_string(), "sqs-poison".to_string()]);
    let delivered = drain(&client, &healthy, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(attribute(&delivered[0], ATTR_ID), Some("msg_conn"));
}

/// What Lambda's SQS event source does: receive a batch, invoke, delete
/// what the function did not report as failed.
async fn event_source_round(client: &aws_sdk_sqs::Client, queue: &str, router: &SqsRouter) -> usize {
    let received = client
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let records: Vec<Value> = received
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), json!({"stringValue": v.string_value(), "dataType": "String"})))
                .collect();
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(), "messageAttributes": attributes})
        })
        .collect();
    let response = lambda_router::handle(router, batch(records)).await;
    let failed = failed_ids(&response);
    for message in received.iter().filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id())) {
        client
            .delete_message()
            .queue_url(queue)
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    received.len()
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_queue_and_its_neighbours_are_delivered() {
    let client = sqs_client();
    let (ingest_queue, dlq) = create_queue_with_dlq(&client, "ingest", 3).await;
    let destination = create_queue(&client, "dest").await;
    let router = router(&format!("*={destination}"));

    client.send_message().queue_url(&ingest_queue).message_body("no attributes: undecodable").send().await.unwrap();
    let good = record("msg_good", &payload("document.updated.v2.json"));
    let attributes = good["messageAttributes"].as_object().unwrap();
    let mut send = client.send_message().queue_url(&ingest_queue).message_body(good["body"].as_str().unwrap());
    for (name, value) in attributes {
        let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value["stringValue"].as_str().unwrap())
            .build()
            .unwrap();
        send = send.message_attributes(name, value);
    }
    send.send().await.unwrap();

    for _ in 0..10 {
        if event_source_round(&client, &ingest_queue, &router).await == 0 {
            break;
        }
    }
    let dead = drain(&client, &dlq, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("no attributes: undecodable"));
    let delivered = drain(&client, &destination, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(attribute(&delivered[0], ATTR_ID), Some("msg_good"));
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name("nectar-router"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
