//! The ingest Lambda's handler, driven with API Gateway and function URL
//! events, queueing onto a real SQS-compatible server (moto).

#![cfg(feature = "adapters")]

mod support;

use lambda_http::request::LambdaRequest;
use lambda_runtime::tower::ServiceExt as _;
use lambda_runtime::{Context, LambdaEvent, Service as _};
use nectar_webhooks::adapters::lambda_ingest;
use nectar_webhooks::adapters::sqs::SqsQueue;
use nectar_webhooks::cli::lambda_events::Signed;
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::clock::FixedClock;
use nectar_webhooks::core::envelope::{ATTR_BODY_ENCODING, ATTR_ID, ATTR_SOURCE, ATTR_TIMESTAMP, Envelope};
use nectar_webhooks::core::ingest::{Ingest, Limits};
use serde_json::Value;
use std::sync::Arc;
use support::*;

const NOW: i64 = 1_764_201_600;
const BODY: &[u8] = br#"{"eventType":"document.created.v2","id":"b2d4e6f8-1234-5678-9abc-def012345678"}"#;

fn ingest_for(client: aws_sdk_sqs::Client, queue_url: &str, limits: Limits) -> Arc<Ingest<SqsQueue>> {
    let config =
        IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| SAMPLE_SECRET.to_owned())).unwrap();
    Arc::new(Ingest::new(config.sources(), SqsQueue::new(client, queue_url), limits, Arc::new(FixedClock(NOW))))
}

/// Runs one raw Lambda event through the real handler; returns the status and body.
async fn invoke(ingest: &Arc<Ingest<SqsQueue>>, event: Value) -> (u16, Value) {
    let request: LambdaRequest = serde_json::from_value(event).expect("a valid Lambda HTTP event");
    let mut service = lambda_ingest::service(Arc::clone(ingest));
    let response = service.ready().await.unwrap().call(LambdaEvent::new(request, Context::default())).await.unwrap();
    let response = serde_json::to_value(response).unwrap();
    let status = response["statusCode"].as_u64().unwrap() as u16;
    record_response(response["body"].as_str().unwrap_or_default());
    let body = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (status, body)
}

fn signed<'a>(id: &'a str, signature: &'a str, body: &'a [u8]) -> Signed<'a> {
    Signed { source: "nectar", id, timestamp: NOW, signature, body, base64_body: false }
}

fn signature(id: &str, timestamp: i64, body: &[u8]) -> String {
    svix_headers(SAMPLE_SECRET, id, timestamp, body).remove(2).1
}

async fn fresh_queue() -> (aws_sdk_sqs::Client, String) {
    let client = sqs_client();
    let url = create_queue(&client, "ingest").await;
    (client, url)
}

#[tokio::test]
async fn every_event_shape_is_verified_and_queued_byte_for_byte() {
    let (client, url) = fresh_queue().await;
    let ingest = ingest_for(client.clone(), &url, Limits::default());
    let sig = signature("msg_shapes", NOW, BODY);
    let s = signed("msg_shapes", &sig, BODY);
    for (shape, event) in [("http api", s.http_v2(false)), ("function url", s.http_v2(true)), ("rest api", s.rest_v1())]
    {
        let (status, body) = invoke(&ingest, event).await;
        assert_eq!(status, 202, "{shape}: {body}");
        assert_eq!(body["id"], "msg_shapes");
    }
    let messages = drain(&client, &url, 3).await;
    assert_eq!(messages.len(), 3);
    for message in &messages {
        assert_eq!(message.body().unwrap().as_bytes(), BODY);
        assert_eq!(attribute(message, ATTR_ID), Some("msg_shapes"));
        assert_eq!(attribute(message, ATTR_TIMESTAMP), Some(NOW.to_string().as_str()));
        assert_eq!(attribute(message, ATTR_SOURCE), Some("nectar"));
    }
}

#[tokio::test]
async fn base64_bodies_are_verified_on_the_decoded_bytes() {
    let (client, url) = fresh_queue().await;
    let ingest = ingest_for(client.clone(), &url, Limits::default());
    let binary: &[u8] = b"\x00\xff not UTF-8, still signed \xfe";
    for body in [BODY, binary] {
        let sig = signature("msg_b64", NOW, body);
        let event = Signed { base64_body: true, ..signed("msg_b64", &sig, body) }.http_v2(false);
        assert_eq!(invoke(&ingest, event).await.0, 202);
    }
    let messages = drain(&client, &url, 2).await;
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let envelope = Envelope::from_queue_message(m.body().unwrap(), |name| attribute(m, name)).unwrap();
            envelope.body.to_vec()
        })
        .collect();
    assert!(bodies.contains(&BODY.to_vec()));
    assert!(bodies.contains(&binary.to_vec()));
    assert!(messages.iter().any(|m| attribute(m, ATTR_BODY_ENCODING) == Some("base64")));
}

#[tokio::test]
async fn refusals_get_their_status_and_queue_nothing() {
    let (client, url) = fresh_queue().await;
    let ingest = ingest_for(client.clone(), &url, Limits { max_body_bytes: 1024, max_queue_message_bytes: 4096 });
    let good = signature("msg_bad", NOW, BODY);
    let stale = signature("msg_bad", NOW - 301, BODY);
    let other_secret = svix_headers("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_bad", NOW, BODY).remove(2).1;
    let big = vec![b'a'; 1025];
    let big_sig = signature("msg_bad", NOW, &big);

    let mut cases: Vec<(&str, u16, &str, Value)> = Vec::new();
    cases.push(("wrong secret", 401, "signature_mismatch", signed("msg_bad", &other_secret, BODY).http_v2(false)));
    cases.push(("tampered body", 401, "signature_mismatch", signed("msg_bad", &good, b"{}").http_v2(false)));
    let mut event = signed("msg_bad", &stale, BODY).http_v2(false);
    event["headers"]["svix-timestamp"] = (NOW - 301).to_string().into();
    cases.push(("stale timestamp", 401, "timestamp_too_old", event));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["headers"].as_object_mut().unwrap().remove("svix-signature");
    cases.push(("missing header", 400, "missing_header", event));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["headers"]["svix-timestamp"] = "yesterday".into();
    cases.push(("malformed timestamp", 400, "invalid_timestamp", event));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["isBase64Encoded"] = true.into();
    event["body"] = "this is not base64!".into();
    cases.push(("undecodable base64 body", 400, "body_not_base64", event));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["requestContext"]["http"]["method"] = "GET".into();
    cases.push(("GET", 405, "method_not_allowed", event));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["rawPath"] = "/webhooks/stripe".into();
    cases.push(("unknown source", 404, "unknown_source", event));
    cases.push(("body over the limit", 413, "body_too_large", signed("msg_bad", &big_sig, &big).http_v2(false)));
    let mut event = signed("msg_bad", &good, BODY).http_v2(false);
    event["headers"]["x-nectar-webhooks-undecodable-body"] = "1".into();
    cases.push(("spoofed internal marker is ignored", 202, "", event));

    for (case, status, code, event) in cases {
        let (got, body) = invoke(&ingest, event).await;
        assert_eq!(got, status, "{case}: {body}");
        if status != 202 {
            assert_eq!(body["error"], code, "{case}: {body}");
        }
    }
    assert_eq!(drain(&client, &url, 1).await.len(), 1, "only the accepted request was queued");
}

#[tokio::test]
async fn an_unreachable_queue_is_a_503_so_svix_retries() {
    let started = std::time::Instant::now();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = sqs_client_for(&format!("http://127.0.0.1:{closed_port}"));
    let ingest = ingest_for(client, &format!("http://127.0.0.1:{closed_port}/123456789012/q"), Limits::default());
    let sig = signature("msg_down", NOW, BODY);
    let (status, body) = invoke(&ingest, signed("msg_down", &sig, BODY).http_v2(false)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "queue_unavailable");
    println!("refused connection: answered 503 after {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn the_published_svix_example_is_accepted_at_its_time() {
    let (client, url) = fresh_queue().await;
    let config = IngestConfig::from_lookup(|name| {
        (name == "WEBHOOK_SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())
    })
    .unwrap();
    let ingest = Arc::new(Ingest::new(
        config.sources(),
        SqsQueue::new(client.clone(), &url),
        Limits::default(),
        Arc::new(FixedClock(1614265330)),
    ));
    let body = br#"{"test": 2432232314}"#;
    let event = Signed {
        source: "nectar",
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp: 1614265330,
        signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        body,
        base64_body: false,
    };
    assert_eq!(invoke(&ingest, event.http_v2(false)).await.0, 202);
    let queued = drain(&client, &url, 1).await;
    assert_eq!(queued[0].body().unwrap().as_bytes(), body);
}

#[tokio::test]
async fn nector_webhooks_are_accepted_with_the_shared_secret_digest_only_when_configured() {
    use nectar_webhooks::core::verification::nector::NectorVerifier;
    let (client, url) = fresh_queue().await;
    let vars = |nector: bool| {
        move |name: &str| match name {
            "WEBHOOK_SECRET" => Some(SAMPLE_SECRET.to_owned()),
            "NECTOR_WEBHOOK_SECRET" if nector => Some("loyalty-secret".to_owned()),
            _ => None,
        }
    };
    let body: &[u8] = br#"{"topic":"wallet.coins.rewarded","customer":"c_1"}"#;
    let event = |digest: &str| {
        let mut event = signed("unused", "unused", body).http_v2(false);
        event["rawPath"] = "/webhooks/nector".into();
        event["headers"] = serde_json::json!({"content-type": "application/json", "x-nector-webhook-secret": digest});
        event
    };
    let good = NectorVerifier::header_for("loyalty-secret");
    let with_nector = IngestConfig::from_lookup(vars(true)).unwrap();
    let ingest = Arc::new(Ingest::new(
        with_nector.sources(),
        SqsQueue::new(client.clone(), &url),
        Limits::default(),
        Arc::new(FixedClock(NOW)),
    ));
    assert_eq!(invoke(&ingest, event(&good)).await.0, 202);
    assert_eq!(invoke(&ingest, event(&NectorVerifier::header_for("guess"))).await.0, 401);
    assert_eq!(invoke(&ingest, event("loyalty-secret")).await.0, 400, "the secret itself is not its digest");

    let without = IngestConfig::from_lookup(vars(false)).unwrap();
    let ingest = Arc::new(Ingest::new(
        without.sources(),
        SqsQueue::new(client.clone(), &url),
        Limits::default(),
        Arc::new(FixedClock(NOW)),
    ));
    assert_eq!(invoke(&ingest, event(&good)).await.0, 404);

    let queued = drain(&client, &url, 1).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].body().unwrap().as_bytes(), body);
    assert_eq!(attribute(&queued[0], ATTR_SOURCE), Some("nector"));
    assert!(attribute(&queued[0], ATTR_ID).unwrap().starts_with("nector_"));
}

/// Svix waits 15 s; ingest must answer well before, whatever SQS does.
const INGEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

#[tokio::test]
async fn a_queue_that_accepts_connections_and_never_answers_is_a_503_before_the_deadline() {
    let proxy = FaultyProxy::start(moto_endpoint()).await;
    let client = sqs_client_for(&proxy.url());
    let url = create_queue(&client, "stalled").await;
    proxy.set(Fault::Stall);
    let ingest = ingest_for(client, &url, Limits::default());
    let sig = signature("msg_stall", NOW, BODY);
    let started = std::time::Instant::now();
    let answered =
        tokio::time::timeout(INGEST_DEADLINE, invoke(&ingest, signed("msg_stall", &sig, BODY).http_v2(false)))
            .await
            .expect("ingest answered before its deadline");
    assert_eq!(answered.0, 503, "{}", answered.1);
    println!("stalled SQS: answered 503 after {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_queue_that_drops_connections_is_a_503_within_seconds() {
    let proxy = FaultyProxy::start(moto_endpoint()).await;
    let client = sqs_client_for(&proxy.url());
    let url = create_queue(&client, "dropping").await;
    proxy.set(Fault::Refuse);
    let ingest = ingest_for(client, &url, Limits::default());
    let sig = signature("msg_drop", NOW, BODY);
    let started = std::time::Instant::now();
    let answered =
        tokio::time::timeout(INGEST_DEADLINE, invoke(&ingest, signed("msg_drop", &sig, BODY).http_v2(false)))
            .await
            .expect("ingest answered before its deadline");
    assert_eq!(answered.0, 503, "{}", answered.1);
    println!("dropping SQS: answered 503 after {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn the_signing_secret_is_read_from_secrets_manager_and_errors_never_show_it() {
    use nectar_webhooks::adapters::secrets;
    let client = secretsmanager_client();
    let created = client
        .create_secret()
        .name(unique_name("nectar-webhooks-signing-secret"))
        .secret_string(SAMPLE_SECRET)
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap();
    let fetched = secrets::fetch(&client, arn).await.unwrap();
    let config = IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| fetched.clone())).unwrap();
    let (sqs, url) = fresh_queue().await;
    let ingest =
        Arc::new(Ingest::new(config.sources(), SqsQueue::new(sqs, &url), Limits::default(), Arc::new(FixedClock(NOW))));
    let sig = signature("msg_from_secret", NOW, BODY);
    assert_eq!(invoke(&ingest, signed("msg_from_secret", &sig, BODY).http_v2(false)).await.0, 202);

    let missing =
        secrets::fetch(&client, "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf").await.unwrap_err();
    let message = missing.to_string();
    assert!(message.starts_with("WEBHOOK_SECRET_ARN: cannot read the secret"), "{message}");
    assert!(!message.contains(SAMPLE_SECRET));
}

/// A Lambda context whose invocation ends `left` from now, as the runtime
/// gives one.
fn context_ending_in(left: std::time::Duration) -> Context {
    let mut context = Context::default();
    let deadline = std::time::SystemTime::now() + left;
    context.deadline = deadline.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    context
}

/// S3 stalls while a large payload is claim-checked, on a client with no
/// time limit of its own: ingest still answers 503 before the invocation's
/// deadline (less its margin), which is what keeps it from a Lambda timeout
/// however long the SDK's own budgets are.
#[tokio::test]
async fn a_stalled_payload_store_is_a_503_before_the_invocations_deadline() {
    use nectar_webhooks::adapters::payloads::S3PayloadStore;
    let proxy = FaultyProxy::start(moto_endpoint()).await;
    let s3 = s3_client_for(&proxy.url());
    let bucket = unique_name("stalled-claims");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    proxy.set(Fault::Stall);
    let (client, url) = fresh_queue().await;
    let ingest = Arc::new(
        Ingest::new(
            IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| SAMPLE_SECRET.to_owned()))
                .unwrap()
                .sources(),
            SqsQueue::new(client.clone(), &url),
            Limits { max_body_bytes: 8192, max_queue_message_bytes: 1024 },
            Arc::new(FixedClock(NOW)),
        )
        .with_payload_store(Arc::new(S3PayloadStore::new(s3, &bucket))),
    );
    let body = format!(r#"{{"eventType":"document.created.v2","pad":"{}"}}"#, "x".repeat(4000)).into_bytes();
    let sig = signature("msg_s3_stall", NOW, &body);
    let request: LambdaRequest = serde_json::from_value(signed("msg_s3_stall", &sig, &body).http_v2(true)).unwrap();
    let lambda_timeout = std::time::Duration::from_secs(3);
    let mut service = lambda_ingest::service(Arc::clone(&ingest));
    let invocation = service.ready().await.unwrap().call(LambdaEvent::new(request, context_ending_in(lambda_timeout)));
    let response = tokio::time::timeout(lambda_timeout, invocation)
        .await
        .expect("answered before the Lambda deadline, not timed out")
        .unwrap();
    let response = serde_json::to_value(response).unwrap();
    assert_eq!(response["statusCode"], 503, "{response}");
    record_response(response["body"].as_str().unwrap());
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "payload_store_unavailable");
    assert!(drain(&client, &url, 0).await.is_empty(), "nothing was queued without its payload");
}

/// The default body limit is what the largest event can carry: a body of
/// that many bytes in which every byte needs escaping (a JSON string of
/// backslashes), with API Gateway's largest headers (10 KiB of values), still
/// makes an event within Lambda's 6,291,456 bytes through every entry point;
/// base64 (binary media) grows it less. Past the overhead it would not fit.
#[test]
fn the_default_body_limit_fits_a_lambda_event_through_every_entry_point() {
    use nectar_webhooks::config::{LAMBDA_BODY_LIMIT, LAMBDA_EVENT_LIMIT, LAMBDA_EVENT_OVERHEAD};
    let worst = |size: usize| {
        let mut body = vec![b'\\'; size];
        (body[0], body[size - 1]) = (b'"', b'"');
        body
    };
    let event_size = |body: &[u8], base64_body: bool, shape: &str| {
        let s = Signed { base64_body, ..signed("msg_largest_possible", "v1,c2lnbmF0dXJl", body) };
        let mut event = match shape {
            "http api" => s.http_v2(false),
            "function url" => s.http_v2(true),
            _ => s.rest_v1(),
        };
        for name in ["headers", "multiValueHeaders"] {
            if let Some(headers) = event.get_mut(name).and_then(Value::as_object_mut) {
                let padding = "h".repeat(10 * 1024);
                let value = if name == "headers" { Value::from(padding) } else { Value::from(vec![padding]) };
                headers.insert("x-padding".into(), value);
            }
        }
        serde_json::to_vec(&event).unwrap().len()
    };
    let largest = worst(LAMBDA_BODY_LIMIT);
    let too_large = worst(LAMBDA_BODY_LIMIT + LAMBDA_EVENT_OVERHEAD / 2 + 1);
    for shape in ["http api", "function url", "rest api"] {
        for base64_body in [false, true] {
            let size = event_size(&largest, base64_body, shape);
            assert!(size <= LAMBDA_EVENT_LIMIT, "{shape}, base64 {base64_body}: an event of {size} bytes");
        }
        let size = event_size(&too_large, false, shape);
        assert!(size > LAMBDA_EVENT_LIMIT, "{shape}: the limit could be higher ({size} bytes)");
    }
}

/// A FIFO ingest queue keeps one resource's events in order: each message is
/// grouped by the payload's `id` (the document or connection) and
/// de-duplicated by webhook id, so a Svix retry within SQS's 5 minutes is
/// dropped by the queue itself.
#[tokio::test]
async fn a_fifo_ingest_queue_groups_by_resource_and_deduplicates_by_webhook() {
    use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
    let client = sqs_client();
    let name = format!("{}.fifo", unique_name("ingest"));
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let ingest = ingest_for(client.clone(), &url, Limits::default());
    let sent = [("msg_f1", "doc-a", 1), ("msg_f2", "doc-b", 1), ("msg_f3", "doc-a", 2), ("msg_f1", "doc-a", 1)];
    for (id, document, n) in sent {
        let body = format!(r#"{{"eventType":"document.updated.v2","id":"{document}","n":{n}}}"#);
        let sig = signature(id, NOW, body.as_bytes());
        assert_eq!(invoke(&ingest, signed(id, &sig, body.as_bytes()).http_v2(false)).await.0, 202);
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        let output = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for message in output.messages() {
            let system = message.attributes().unwrap();
            let group = system[&MessageSystemAttributeName::MessageGroupId].clone();
            let dedup = system[&MessageSystemAttributeName::MessageDeduplicationId].clone();
            received.push((attribute(message, ATTR_ID).unwrap().to_owned(), group, dedup));
            client
                .delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if received.len() >= 3 {
            break;
        }
    }
    let of =
        |group: &str| received.iter().filter(|(_, g, _)| g == group).map(|(id, _, _)| id.as_str()).collect::<Vec<_>>();
    assert_eq!(of("doc-a"), ["msg_f1", "msg_f3"], "in order, the retry of msg_f1 dropped: {received:?}");
    assert_eq!(of("doc-b"), ["msg_f2"]);
    assert!(received.iter().all(|(id, _, dedup)| id == dedup));
}

/// A 503's body is stored in the sender's attempt log, which the sender's
/// staff can read: it names our error code and nothing of AWS's answer (here
/// moto's `NonExistentQueue`, with the account id in the queue URL), and it
/// says when to come back.
#[tokio::test]
async fn a_503_says_when_to_retry_and_nothing_of_aws_errors() {
    let client = sqs_client();
    let missing = format!("{}/123456789012/{}", moto_endpoint(), unique_name("never-created"));
    let ingest = ingest_for(client, &missing, Limits::default());
    let sig = signature("msg_missing_queue", NOW, BODY);
    let request: LambdaRequest = serde_json::from_value(signed("msg_missing_queue", &sig, BODY).http_v2(true)).unwrap();
    let mut service = lambda_ingest::service(Arc::clone(&ingest));
    let response = service.ready().await.unwrap().call(LambdaEvent::new(request, Context::default())).await.unwrap();
    let response = serde_json::to_value(response).unwrap();
    assert_eq!(response["statusCode"], 503);
    assert_eq!(response["headers"]["retry-after"], "30");
    let body = response["body"].as_str().unwrap();
    record_response(body);
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["error"], "queue_unavailable");
    for leak in ["NonExistentQueue", "SimpleQueueService", "123456789012", "arn:", "never-created", "service error"] {
        assert!(!body.contains(leak), "{leak:?} in {body}");
    }
}
