//! The router Lambda's handler, driven with SQS events, delivering to real
//! SQS queues (standard and FIFO), EventBridge and a DynamoDB idempotency
//! table on moto's server, and to files and typed handlers.

#![cfg(feature = "adapters")]

mod support;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use futures_util::FutureExt as _;
use nectar_webhooks::adapters::destinations::{Check, Destinations};
use nectar_webhooks::adapters::idempotency::DynamoSeen;
use nectar_webhooks::adapters::lambda_router::{DeadLetters, SqsBatchHandler};
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::core::dedup::{Claim, DEFAULT_LEASE, DEFAULT_TTL, InMemorySeen, SeenStore, StoreError};
use nectar_webhooks::core::envelope::{
    ATTR_EVENT_TYPE, ATTR_FAILED_RECEIVES, ATTR_FAILURE_REASON, ATTR_ID, ATTR_ROUTE,
};
use nectar_webhooks::core::events::NectarEvent;
use nectar_webhooks::core::handlers::{Handler, HandlerFuture};
use nectar_webhooks::core::router::{Delivery, Router};
use nectar_webhooks::core::routing::RouteTable;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::*;

fn destinations() -> Destinations {
    Destinations::default().with_sqs(sqs_client()).with_eventbridge(eventbridge_client())
}

fn handler_with<S: SeenStore>(routes: &str, destinations: Destinations, store: S) -> SqsBatchHandler<Destinations, S> {
    let table = RouteTable::parse(routes).unwrap();
    destinations.check(&table, Check::Configured).now_or_never().unwrap().unwrap();
    SqsBatchHandler { router: Router::new(table, destinations, store), dead_letters: None }
}

fn handler(routes: &str) -> SqsBatchHandler<Destinations, InMemorySeen> {
    handler_with(routes, destinations(), InMemorySeen::default())
}

fn record(id: &str, body: &[u8]) -> Value {
    Signed { source: "nectar", id, timestamp: now(), signature: "v1,unused", body, base64_body: false }.sqs_record()
}

fn batch(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

fn payload(name: &str) -> Vec<u8> {
    std::fs::read(project_dir().join("events/payloads").join(name)).unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique_name(name)).with_extension("jsonl")
}

#[tokio::test]
async fn every_sample_payload_reaches_the_destination_of_its_type_byte_for_byte() {
    let client = sqs_client();
    let documents = create_queue(&client, "documents").await;
    let connections = create_queue(&client, "connections").await;
    let others = temp_file("others");
    let handler = handler(&format!("document.*={documents};connection.*={connections};*=file:{}", others.display()));

    let mut names: Vec<String> = std::fs::read_dir(project_dir().join("events/payloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let records = names.iter().map(|name| record(&format!("msg_{name}"), &payload(name))).collect();
    let response = handler.handle(batch(records)).await;
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
    let unknown = json_lines(&others);
    assert_eq!(unknown.len(), names.len() - typed, "the payloads without a readable type");
    for line in unknown {
        assert_eq!(line["eventType"], "unknown");
        let name = line["id"].as_str().unwrap().strip_prefix("msg_").unwrap();
        assert_eq!(line["body"].as_str().unwrap().as_bytes(), payload(name));
    }
}

#[tokio::test]
async fn fan_out_and_filters_pick_destinations_by_payload() {
    let client = sqs_client();
    let flagged = create_queue(&client, "flagged").await;
    let all_documents = create_queue(&client, "all-docs").await;
    let company = temp_file("company");
    let handler = handler(&format!(
        "document.*[isFlagged=true]={flagged},{all_documents}; document.*[company=c-42]=file:{}; document.*={all_documents}; *=drop",
        company.display()
    ));
    let records = vec![
        record("msg_flagged", br#"{"eventType":"document.created.v2","id":"d1","isFlagged":true,"company":"c-1"}"#),
        record("msg_company", br#"{"eventType":"document.updated","id":"d2","company":{"id":"c-42"}}"#),
        record("msg_plain", br#"{"eventType":"document.deleted.v2","id":"d3","isFlagged":false}"#),
        record("msg_connection", br#"{"eventType":"connection.created","id":"c1","isFlagged":true}"#),
    ];
    assert!(failed_ids(&handler.handle(batch(records)).await).is_empty());
    let ids = |messages: Vec<aws_sdk_sqs::types::Message>| {
        let mut ids: Vec<String> = messages.iter().map(|m| attribute(m, ATTR_ID).unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(drain(&client, &flagged, 1).await), ["msg_flagged"]);
    assert_eq!(ids(drain(&client, &all_documents, 2).await), ["msg_flagged", "msg_plain"]);
    let company_lines = json_lines(&company);
    assert_eq!(company_lines.len(), 1);
    assert_eq!(company_lines[0]["route"], "document.*[company=c-42]");
}

#[tokio::test]
async fn fifo_queues_group_by_resource_and_deduplicate_by_webhook_id() {
    let client = sqs_client();
    let fifo = create_queue_with(
        &client,
        "ordered",
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::ContentBasedDeduplication, "false".into()),
        ],
    )
    .await;
    let body_a1 = br#"{"eventType":"document.created.v2","id":"doc-a"}"#;
    let body_a2 = br#"{"eventType":"document.updated.v2","id":"doc-a"}"#;
    let body_b = br#"{"eventType":"document.created.v2","id":"doc-b"}"#;
    let first = handler(&format!("*={fifo}"));
    let records = vec![record("msg_a1", body_a1), record("msg_a2", body_a2), record("msg_b", body_b)];
    assert!(failed_ids(&first.handle(batch(records)).await).is_empty());
    // Another container without shared memory sends msg_a1 again: FIFO
    // deduplication by webhook id keeps it out.
    let second = handler(&format!("*={fifo}"));
    assert!(failed_ids(&second.handle(batch(vec![record("msg_a1", body_a1)])).await).is_empty());

    let messages = drain(&client, &fifo, 3).await;
    let seen: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            let group = m.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
            (attribute(m, ATTR_ID).unwrap().to_owned(), group)
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.contains(&("msg_a1".into(), "doc-a".into())));
    assert!(seen.contains(&("msg_a2".into(), "doc-a".into())));
    assert!(seen.contains(&("msg_b".into(), "doc-b".into())));
    let a_order: Vec<&str> = seen.iter().filter(|(_, g)| g == "doc-a").map(|(id, _)| id.as_str()).collect();
    assert_eq!(a_order, ["msg_a1", "msg_a2"], "one resource's events stay in order");
}

#[tokio::test]
async fn eventbridge_gets_the_payload_as_detail_and_the_type_as_detail_type() {
    let sqs = sqs_client();
    let events = eventbridge_client();
    let bus = unique_name("nectar-bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let target = create_queue(&sqs, "eventbridge-target").await;
    let rule = unique_name("flagged-documents");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(
            r#"{"source": ["nectar"], "detail-type": [{"prefix": "document."}], "detail": {"isFlagged": [true]}}"#,
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn(&sqs, &target).await)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let handler = handler(&format!("*=eventbridge:{bus}"));
    let flagged = br#"{"eventType":"document.created.v2","id":"d1","isFlagged":true,"totalCharges":12.30}"#;
    let records = vec![
        record("msg_flagged", flagged),
        record("msg_other", br#"{"eventType":"document.created.v2","id":"d2","isFlagged":false}"#),
        record("msg_text", b"not json at all"),
    ];
    assert!(failed_ids(&handler.handle(batch(records)).await).is_empty());

    let received = drain(&sqs, &target, 1).await;
    assert_eq!(received.len(), 1, "only the flagged document matches the rule");
    let event: Value = serde_json::from_str(received[0].body().unwrap()).unwrap();
    assert_eq!(event["source"], "nectar");
    assert_eq!(event["detail-type"], "document.created.v2");
    assert_eq!(event["detail"], serde_json::from_slice::<Value>(flagged).unwrap());
    assert_eq!(event["resources"], json!(["webhook-id:msg_flagged"]));
}

#[tokio::test]
async fn with_dynamodb_the_same_webhook_reaches_each_destination_once_across_containers() {
    let sqs = sqs_client();
    let dynamodb = dynamodb_client();
    let table = create_idempotency_table(&dynamodb).await;
    let queue = create_queue(&sqs, "once").await;
    let file = temp_file("once");
    let routes = format!("*={queue},file:{}", file.display());
    let store = || DynamoSeen::new(dynamodb.clone(), &table, DEFAULT_TTL, DEFAULT_LEASE);
    let container_a = handler_with(&routes, destinations(), store());
    let container_b = handler_with(&routes, destinations(), store());
    let body = payload("document.created.v2.json");

    assert!(failed_ids(&container_a.handle(batch(vec![record("msg_twice", &body)])).await).is_empty());
    assert!(failed_ids(&container_b.handle(batch(vec![record("msg_twice", &body)])).await).is_empty());
    assert!(failed_ids(&container_a.handle(batch(vec![record("msg_twice", &body)])).await).is_empty());
    assert_eq!(drain(&sqs, &queue, 1).await.len(), 1);
    assert_eq!(json_lines(&file).len(), 1);
}

#[tokio::test]
async fn in_dynamodb_only_a_claims_owner_completes_or_releases_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let dynamodb = dynamodb_client();
    let table = create_idempotency_table(&dynamodb).await;
    let store = DynamoSeen::new(dynamodb.clone(), &table, DEFAULT_TTL, DEFAULT_LEASE);
    let acquire = async |key: &str| match store.claim(key).await.unwrap() {
        Claim::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    let owner = async || {
        let item = dynamodb.get_item().table_name(&table).key("key", AttributeValue::S("k".into())).send().await;
        item.unwrap().item.unwrap().get("owner").map(|o| o.as_s().unwrap().clone())
    };

    let stale = acquire("k").await;
    assert_eq!(store.claim("k").await.unwrap(), Claim::InProgress);
    // The stale delivery's lease runs out.
    dynamodb
        .update_item()
        .table_name(&table)
        .key("key", AttributeValue::S("k".into()))
        .update_expression("SET lease_until = :past")
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let live = acquire("k").await;
    assert_ne!(stale, live);

    store.release("k", &stale).await.unwrap();
    assert_eq!(owner().await.as_deref(), Some(live.owner()), "the live claim stands");
    assert!(matches!(store.complete("k", &stale).await, Err(StoreError::LeaseLost(key)) if key == "k"));
    assert_eq!(store.claim("k").await.unwrap(), Claim::InProgress);

    store.complete("k", &live).await.unwrap();
    store.release("k", &stale).await.unwrap();
    store.release("k", &live).await.unwrap();
    assert_eq!(store.claim("k").await.unwrap(), Claim::AlreadyDelivered, "a completed key stays delivered");
    let released = acquire("r").await;
    store.release("r", &released).await.unwrap();
    acquire("r").await;
}

#[tokio::test]
async fn a_failing_destination_fails_only_its_own_records_and_is_retried_alone() {
    let client = sqs_client();
    let healthy = create_queue(&client, "healthy").await;
    let missing = format!("{}/123456789012/no-such-queue", moto_endpoint());
    let handler = handler(&format!("document.*={healthy},{missing};*={healthy}"));
    let records = vec![
        record("msg_doc", &payload("document.created.json")),
        record("msg_conn", &payload("connection.created.json")),
        json!({"messageId": "sqs-poison", "body": "{}", "messageAttributes": {}}),
    ];
    let response = handler.handle(batch(records)).await;
    assert_eq!(failed_ids(&response), ["sqs-msg_doc", "sqs-poison"]);
    let retry = handler.handle(batch(vec![record("msg_doc", &payload("document.created.json"))])).await;
    assert_eq!(failed_ids(&retry), ["sqs-msg_doc"], "still failing for the missing queue");
    let delivered = drain(&client, &healthy, 2).await;
    let mut ids: Vec<&str> = delivered.iter().map(|m| attribute(m, ATTR_ID).unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["msg_conn", "msg_doc"], "the healthy copy of msg_doc was delivered once, not on the retry");
}

async fn send_record(client: &aws_sdk_sqs::Client, queue: &str, record: &Value) {
    let mut send = client.send_message().queue_url(queue).message_body(record["body"].as_str().unwrap());
    for (name, value) in record["messageAttributes"].as_object().unwrap() {
        let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value["stringValue"].as_str().unwrap())
            .build()
            .unwrap();
        send = send.message_attributes(name, value);
    }
    send.send().await.unwrap();
}

#[tokio::test]
async fn poison_ends_in_the_dead_letter_queue_with_its_reason_and_neighbours_are_delivered() {
    let client = sqs_client();
    let (ingest_queue, dlq) = create_queue_with_dlq(&client, "ingest", 3).await;
    let destination = create_queue(&client, "dest").await;
    let mut handler = handler(&format!("document.*={destination}"));
    handler.dead_letters = Some(DeadLetters { client: client.clone(), queue_url: dlq.clone(), max_receive_count: 3 });

    client.send_message().queue_url(&ingest_queue).message_body("no attributes: undecodable").send().await.unwrap();
    send_record(&client, &ingest_queue, &record("msg_unrouted", br#"{"eventType":"connection.created"}"#)).await;
    send_record(&client, &ingest_queue, &record("msg_good", &payload("document.updated.v2.json"))).await;

    for _ in 0..10 {
        if event_source_round(&client, &ingest_queue, &handler).await == 0 {
            break;
        }
    }
    let dead = drain(&client, &dlq, 2).await;
    assert_eq!(dead.len(), 2);
    for message in &dead {
        assert_eq!(attribute(message, ATTR_FAILED_RECEIVES), Some("3"));
        let reason = attribute(message, ATTR_FAILURE_REASON).unwrap();
        match attribute(message, ATTR_ID) {
            None => {
                assert_eq!(message.body(), Some("no attributes: undecodable"));
                assert!(reason.contains("undecodable message"), "{reason}");
            }
            Some(id) => {
                assert_eq!(id, "msg_unrouted");
                assert!(reason.contains("no route matches event type \"connection.created\""), "{reason}");
            }
        }
    }
    let delivered = drain(&client, &destination, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(attribute(&delivered[0], ATTR_ID), Some("msg_good"));
}

#[tokio::test]
async fn without_a_configured_dead_letter_queue_the_redrive_policy_still_catches_poison() {
    let client = sqs_client();
    let (ingest_queue, dlq) = create_queue_with_dlq(&client, "redrive", 2).await;
    let handler = handler("*=drop");
    client.send_message().queue_url(&ingest_queue).message_body("undecodable").send().await.unwrap();
    for _ in 0..10 {
        if event_source_round(&client, &ingest_queue, &handler).await == 0 {
            break;
        }
    }
    let dead = drain(&client, &dlq, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("undecodable"));
}

/// A typed handler as a user would write one: remembers flagged bills.
#[derive(Default, Clone)]
struct FlaggedBills(Arc<Mutex<Vec<Bill>>>);

/// A webhook id and the bill's exact total.
type Bill = (String, Option<String>);

impl Handler for FlaggedBills {
    fn handle<'a>(&'a self, event: &'a NectarEvent, delivery: &'a Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            if let NectarEvent::DocumentCreated { document, .. } = event {
                let total = document.total_charges.as_ref().and_then(|d| d.value()).map(|d| d.to_string());
                self.0.lock().unwrap().push((delivery.envelope.id.clone(), total));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn typed_handlers_receive_parsed_events_and_untypable_payloads_fail() {
    let bills = FlaggedBills::default();
    let handler = handler_with(
        "document.*=handler:bills; *=handler:bills",
        Destinations::default().with_handler("bills", bills.clone()),
        InMemorySeen::default(),
    );
    let records = vec![
        record("msg_bill", br#"{"eventType":"document.created.v2","totalCharges":1234.5600000001}"#),
        record("msg_untypable", b"[0137746423]"),
    ];
    let response = handler.handle(batch(records)).await;
    assert_eq!(failed_ids(&response), ["sqs-msg_untypable"]);
    assert_eq!(*bills.0.lock().unwrap(), [("msg_bill".to_string(), Some("1234.5600000001".to_string()))]);
}

#[tokio::test]
async fn a_route_to_an_unregistered_handler_is_refused_at_start_up() {
    let table = RouteTable::parse("*=handler:missing").unwrap();
    let err = Destinations::default().check(&table, Check::Configured).await.unwrap_err().to_string();
    assert!(err.contains("rule \"*=handler:missing\": handler:missing names no registered handler"), "{err}");
    assert!(err.contains("register it with Destinations::with_handler"), "{err}");
}

/// A typed handler that records the webhooks it handled, in order; the first
/// attempt at `msg_a1` fails.
#[derive(Default, Clone)]
struct FailsFirstAttemptAtA1(Arc<Mutex<(bool, Vec<String>)>>);

impl Handler for FailsFirstAttemptAtA1 {
    fn handle<'a>(&'a self, _: &'a NectarEvent, delivery: &'a Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let mut state = self.0.lock().unwrap();
            if delivery.envelope.id == "msg_a1" && !state.0 {
                state.0 = true;
                return Err(nectar_webhooks::core::router::DeliveryError("down for a moment".into()));
            }
            state.1.push(delivery.envelope.id.clone());
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_resources_events_stay_in_order_across_a_failure_and_its_retry() {
    let seen = FailsFirstAttemptAtA1::default();
    let handler = handler_with(
        "*=handler:ordered",
        Destinations::default().with_handler("ordered", seen.clone()),
        InMemorySeen::default(),
    );
    let records = || {
        vec![
            record("msg_a1", &payload("document.created.v2.json")),
            record("msg_a2", &payload("document.updated.v2.json")),
            record("msg_a3", &payload("document.deleted.v2.json")),
        ]
    };
    let response = handler.handle(batch(records())).await;
    assert_eq!(failed_ids(&response), ["sqs-msg_a1", "sqs-msg_a2", "sqs-msg_a3"], "the whole message group");
    assert!(seen.0.lock().unwrap().1.is_empty(), "nothing about the document went ahead of its creation");
    assert!(failed_ids(&handler.handle(batch(records())).await).is_empty());
    assert_eq!(seen.0.lock().unwrap().1, ["msg_a1", "msg_a2", "msg_a3"]);
}

/// Order across batches, end to end, on FIFO queues: ingest groups each
/// webhook by the document it is about; the router reports a failed record
/// and the rest of its group failed, so SQS hands them back together; the
/// destination receives the document's events in order, the first after its
/// retry. A record that keeps failing is copied by the router into the FIFO
/// dead-letter queue (in its group, with its reason) and its group goes on.
#[tokio::test]
async fn with_fifo_queues_one_documents_events_arrive_in_order_across_batches() {
    use nectar_webhooks::adapters::sqs::SqsQueue;
    use nectar_webhooks::core::envelope::QueueMessage;
    use nectar_webhooks::core::queue::{Queue, Webhook};
    let client = sqs_client();
    let fifo = |prefix: &str| format!("{}.fifo", unique_name(prefix));
    let create = |name: String, attributes: Vec<(QueueAttributeName, String)>| {
        let client = client.clone();
        async move {
            let mut create = client.create_queue().queue_name(name).attributes(QueueAttributeName::FifoQueue, "true");
            for (name, value) in attributes {
                create = create.attributes(name, value);
            }
            create.send().await.unwrap().queue_url.unwrap()
        }
    };
    let dlq = create(fifo("ordered-dlq"), vec![]).await;
    let policy = json!({"deadLetterTargetArn": queue_arn(&client, &dlq).await, "maxReceiveCount": "2"}).to_string();
    let visible_at_once = (QueueAttributeName::VisibilityTimeout, "0".to_owned());
    let ingest_queue =
        create(fifo("ordered"), vec![(QueueAttributeName::RedrivePolicy, policy), visible_at_once]).await;

    let ingest = SqsQueue::new(client.clone(), &ingest_queue);
    let document = payload("document.created.v2.json");
    let poison = br#"{"eventType":"document.created.v2","id":"doc-poison"}"#;
    for (id, body) in [("msg_a1", &document[..]), ("msg_poison", poison), ("msg_a2", &document), ("msg_a3", &document)]
    {
        let message = QueueMessage::for_webhook("nectar", id, now(), body);
        ingest.enqueue(message, Webhook { source: "nectar", id, body }).await.unwrap();
    }
    let seen = FailsFirstAttemptAtA1::default();
    let routes = "document.*[id=doc-poison]=handler:missing-on-purpose; *=handler:ordered";
    let table = RouteTable::parse(routes).unwrap();
    let destinations = Destinations::default().with_handler("ordered", seen.clone());
    let mut handler =
        SqsBatchHandler { router: Router::new(table, destinations, InMemorySeen::default()), dead_letters: None };
    handler.dead_letters = Some(DeadLetters { client: client.clone(), queue_url: dlq.clone(), max_receive_count: 2 });

    for _ in 0..10 {
        if event_source_round(&client, &ingest_queue, &handler).await == 0 {
            break;
        }
    }
    assert_eq!(seen.0.lock().unwrap().1, ["msg_a1", "msg_a2", "msg_a3"], "in order, once each");
    let dead = drain(&client, &dlq, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(attribute(&dead[0], ATTR_ID), Some("msg_poison"));
    assert!(attribute(&dead[0], ATTR_FAILURE_REASON).unwrap().contains("missing-on-purpose"));
    let group = &dead[0].attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId];
    assert_eq!(group, "doc-poison", "the copy stays in its message group");
}

/// A scripted SQS (JSON protocol) whose `SendMessageBatch` refuses, once
/// each, the entries whose body contains `REFUSE-ONCE`, and keeps every
/// batch it was sent (the webhook ids of its entries); moto never refuses
/// one entry of a batch.
async fn refusing_sqs(batches: Arc<Mutex<Vec<Vec<String>>>>) -> String {
    use axum::http::HeaderMap;
    let refused = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (batches, refused) = (Arc::clone(&batches), Arc::clone(&refused));
            async move {
                let target = headers["x-amz-target"].to_str().unwrap();
                assert_eq!(target, "AmazonSQS.SendMessageBatch", "the router sends in batches");
                let input: Value = serde_json::from_str(&body).unwrap();
                let entries = input["Entries"].as_array().unwrap();
                let ids: Vec<String> = entries
                    .iter()
                    .map(|e| e["MessageAttributes"][ATTR_ID]["StringValue"].as_str().unwrap().to_owned())
                    .collect();
                batches.lock().unwrap().push(ids.clone());
                let (mut successful, mut failed) = (Vec::new(), Vec::new());
                for (entry, id) in entries.iter().zip(ids) {
                    let refuse = entry["MessageBody"].as_str().unwrap().contains("REFUSE-ONCE")
                        && refused.lock().unwrap().insert(id.clone());
                    if refuse {
                        failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError", "Message": "scripted refusal"}));
                    } else {
                        successful.push(json!({"Id": entry["Id"], "MessageId": format!("m-{id}"), "MD5OfMessageBody": "-"}));
                    }
                }
                let output = json!({"Successful": successful, "Failed": failed});
                ([("content-type", "application/x-amz-json-1.0")], output.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn one_batch_send_per_destination_and_an_entry_sqs_refuses_fails_only_its_record() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let endpoint = refusing_sqs(Arc::clone(&batches)).await;
    let queue = format!("{endpoint}/123456789012/destination");
    let handler = handler_with(
        &format!("*={queue}"),
        Destinations::default().with_sqs(sqs_client_for(&endpoint)),
        InMemorySeen::default(),
    );
    let body =
        |n: usize, note: &str| format!(r#"{{"eventType":"document.updated.v2","id":"doc-{n}","note":"{note}"}}"#);
    let records = || {
        (0..10)
            .map(|n| record(&format!("msg_{n}"), body(n, if n == 4 { "REFUSE-ONCE" } else { "" }).as_bytes()))
            .collect::<Vec<_>>()
    };
    let response = handler.handle(batch(records())).await;
    assert_eq!(failed_ids(&response), ["sqs-msg_4"], "only the refused entry's record");
    let all: Vec<String> = (0..10).map(|n| format!("msg_{n}")).collect();
    assert_eq!(*batches.lock().unwrap(), std::slice::from_ref(&all), "ten webhooks, one SendMessageBatch");

    let retry = records().into_iter().filter(|r| r["messageId"] == "sqs-msg_4").collect();
    assert!(failed_ids(&handler.handle(batch(retry)).await).is_empty());
    assert_eq!(*batches.lock().unwrap(), [all, vec!["msg_4".to_owned()]], "the retry sends the refused one alone");
}

#[tokio::test]
async fn in_dynamodb_a_wave_is_remembered_in_one_write_and_a_crashed_delivery_is_claimed_again() {
    let sqs = sqs_client();
    let dynamodb = dynamodb_client();
    let table = create_idempotency_table(&dynamodb).await;
    let queue = create_queue(&sqs, "wave").await;
    let store = || DynamoSeen::new(dynamodb.clone(), &table, DEFAULT_TTL, DEFAULT_LEASE);
    let routes = format!("*={queue}");
    let body = |n: usize| format!(r#"{{"eventType":"document.updated.v2","id":"doc-{n}"}}"#);
    let records = || (0..10).map(|n| record(&format!("msg_wave_{n}"), body(n).as_bytes())).collect::<Vec<_>>();

    let container_a = handler_with(&routes, destinations(), store());
    assert!(failed_ids(&container_a.handle(batch(records())).await).is_empty());
    let items = dynamodb.scan().table_name(&table).send().await.unwrap().items.unwrap_or_default();
    let done: Vec<_> = items.iter().filter(|item| item["key"].as_s().unwrap().starts_with("done/")).collect();
    assert_eq!((items.len(), done.len()), (11, 1), "ten claims, and one item for the wave's completions");
    assert_eq!(done[0]["keys"].as_ss().unwrap().len(), 10);

    let container_b = handler_with(&routes, destinations(), store());
    assert!(failed_ids(&container_b.handle(batch(records())).await).is_empty());
    assert_eq!(drain(&sqs, &queue, 10).await.len(), 10, "once each: the copies found the wave's done item");

    // A router claimed msg_crashed and died before delivering it: no done
    // item lists it, so a copy claims it again and delivers it.
    let key = format!("nectar/msg_crashed/{queue}");
    let claim = store().claim(&key).await.unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
    assert_eq!(store().claim(&key).await.unwrap(), Claim::InProgress, "while its lease lasts");
    // Its lease runs out.
    dynamodb
        .update_item()
        .table_name(&table)
        .key("key", aws_sdk_dynamodb::types::AttributeValue::S(key.clone()))
        .update_expression("SET lease_until = :past")
        .expression_attribute_values(":past", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    assert!(failed_ids(&container_b.handle(batch(vec![record("msg_crashed", body(99).as_bytes())])).await).is_empty());
    let arrived = drain(&sqs, &queue, 1).await;
    assert_eq!(arrived.iter().map(|m| attribute(m, ATTR_ID).unwrap()).collect::<Vec<_>>(), ["msg_crashed"]);
}
