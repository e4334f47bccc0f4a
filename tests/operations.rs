//! Operating it: the `redrive` command against moto's SQS (copy mode) and a
//! scripted SQS (message-move task), and the Lambda binaries' telemetry (JSON
//! log lines with the request id, EMF metrics) through a scripted Lambda
//! Runtime API.

#![cfg(feature = "adapters")]

mod support;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use nectar_webhooks::cli::lambda_events::Signed;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const CLI: &str = env!("CARGO_BIN_EXE_nectar-webhooks");

/// The CLI with the environment pointing at `endpoint`.
fn cli(endpoint: &str) -> Command {
    let mut command = Command::new(CLI);
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn visible(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    output.attributes.unwrap()[&QueueAttributeName::ApproximateNumberOfMessages].parse().unwrap()
}

fn string(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap()
}

/// A message as queued by ingest, with a Number and a Binary attribute too,
/// and, for those the router dead-lettered itself, its reason.
fn attributes(n: usize, router_dead_lettered: bool) -> HashMap<String, MessageAttributeValue> {
    let mut attributes = HashMap::from([
        ("webhook-id".to_owned(), string(&format!("msg_redrive_{n}"))),
        ("webhook-timestamp".to_owned(), string("1764201600")),
        ("webhook-source".to_owned(), string("nectar")),
        (
            "sequence".to_owned(),
            MessageAttributeValue::builder().data_type("Number").string_value(n.to_string()).build().unwrap(),
        ),
        (
            "raw".to_owned(),
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(vec![0, 159, 255, n as u8]))
                .build()
                .unwrap(),
        ),
    ]);
    if router_dead_lettered {
        attributes.insert("failure-reason".to_owned(), string("no route matches event type \"x\""));
        attributes.insert("failed-receives".to_owned(), string("5"));
    }
    attributes
}

fn body(n: usize) -> String {
    format!(
        "{{\"eventType\":\"document.created.v2\",\"id\":\"{n}\",\"name\":\"Facture d’électricité ☃ {n}\",\"note\":\"  tab\\t and spaces  \"}}\r\n"
    )
}

/// Dead letters of both kinds in the DLQ of `queue`: `redriven` moved there
/// by SQS's redrive policy, `direct` sent there (as the router does).
async fn dead_letters(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    dlq: &str,
    redriven: usize,
    direct: usize,
) -> HashMap<String, HashMap<String, MessageAttributeValue>> {
    let mut expected = HashMap::new();
    for n in 0..redriven + direct {
        let (url, router) = if n < redriven { (queue, false) } else { (dlq, true) };
        let attributes = attributes(n, router);
        client
            .send_message()
            .queue_url(url)
            .message_body(body(n))
            .set_message_attributes(Some(attributes.clone()))
            .send()
            .await
            .unwrap();
        expected.insert(body(n), attributes);
    }
    // maxReceiveCount 1 and no visibility timeout: the second receive moves them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while visible(client, dlq).await < redriven + direct {
        assert!(Instant::now() < deadline, "messages did not reach the DLQ");
        client.receive_message().queue_url(queue).max_number_of_messages(10).send().await.unwrap();
    }
    assert_eq!(visible(client, queue).await, 0);
    expected
}

fn assert_same_messages(
    messages: &[aws_sdk_sqs::types::Message],
    expected: &HashMap<String, HashMap<String, MessageAttributeValue>>,
) {
    assert_eq!(messages.len(), expected.len());
    for message in messages {
        let body = message.body().unwrap();
        let attributes = expected.get(body).unwrap_or_else(|| panic!("unexpected body {body:?}"));
        assert_eq!(message.message_attributes().unwrap(), attributes, "attributes of {body:?}");
    }
}

#[tokio::test]
async fn copy_mode_returns_dead_letters_to_their_source_byte_for_byte() {
    let client = sqs_client();
    let (queue, dlq) = create_queue_with_dlq(&client, "redrive", 1).await;
    let expected = dead_letters(&client, &queue, &dlq, 14, 9).await;

    let output = cli(moto_endpoint()).args(["redrive", "--dlq", &dlq, "--copy"]).output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), format!("moved 23 of 23 messages from {dlq} to {queue} (copy)"));
    assert!(stderr.contains(&format!("redriving 23 messages from {dlq} to {queue}")), "{stderr}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("moved ")).collect();
    assert_eq!(progress.first(), Some(&"moved 10 of 23"), "{stderr}");
    assert_eq!(progress.last(), Some(&"moved 23 of 23"), "{stderr}");

    assert_eq!(visible(&client, &dlq).await, 0);
    assert!(drain(&client, &dlq, 0).await.is_empty());
    assert_same_messages(&drain(&client, &queue, expected.len()).await, &expected);
}

#[tokio::test]
async fn copy_mode_goes_where_told_and_needs_a_destination() {
    let client = sqs_client();
    let orphan_dlq = create_queue(&client, "orphan-dlq").await;
    let elsewhere = create_queue(&client, "elsewhere").await;
    let expected: HashMap<_, _> = (0..3).map(|n| (body(n), attributes(n, true))).collect();
    for (body, attributes) in &expected {
        client
            .send_message()
            .queue_url(&orphan_dlq)
            .message_body(body)
            .set_message_attributes(Some(attributes.clone()))
            .send()
            .await
            .unwrap();
    }

    let refused = cli(moto_endpoint()).args(["redrive", "--dlq", &orphan_dlq, "--copy"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("no queue uses"), "{}", text(&refused.stderr));
    assert_eq!(visible(&client, &orphan_dlq).await, 3);

    let output =
        cli(moto_endpoint()).args(["redrive", "--dlq", &orphan_dlq, "--to", &elsewhere, "--copy"]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("moved 3 of 3 messages"), "{}", text(&output.stdout));
    assert_same_messages(&drain(&client, &elsewhere, 3).await, &expected);
    assert_eq!(visible(&client, &orphan_dlq).await, 0);
}

#[tokio::test]
async fn without_copy_a_server_lacking_message_move_tasks_is_explained() {
    let client = sqs_client();
    let (_queue, dlq) = create_queue_with_dlq(&client, "no-move-task", 1).await;
    let output = cli(moto_endpoint()).args(["redrive", "--dlq", &dlq]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("StartMessageMoveTask"), "{stderr}");
    assert!(stderr.contains(&format!("nectar-webhooks redrive --dlq {dlq} --copy")), "{stderr}");
    for tell in ["panicked", "ServiceError {", "raw: Response"] {
        assert!(!stderr.contains(tell), "{tell:?} in: {stderr}");
    }
}

/// A scripted SQS (JSON protocol) that has message-move tasks: the task
/// reports 0, then 120, then 300 of 300 moved.
async fn scripted_sqs(requests: Arc<Mutex<Vec<(String, Value)>>>) -> String {
    use axum::http::HeaderMap;
    let polls = Arc::new(Mutex::new(0));
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (requests, polls) = (Arc::clone(&requests), Arc::clone(&polls));
            async move {
                let target = headers["x-amz-target"].to_str().unwrap().trim_start_matches("AmazonSQS.").to_owned();
                let input: Value = serde_json::from_str(&body).unwrap();
                requests.lock().unwrap().push((target.clone(), input.clone()));
                let output = match target.as_str() {
                    "GetQueueAttributes" => {
                        let name = input["QueueUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
                        json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}"), "ApproximateNumberOfMessages": "300"}})
                    }
                    "ListDeadLetterSourceQueues" => json!({"queueUrls": ["http://sqs.test/123456789012/ingest"]}),
                    "StartMessageMoveTask" => json!({"TaskHandle": "handle-1"}),
                    "ListMessageMoveTasks" => {
                        let mut polls = polls.lock().unwrap();
                        *polls += 1;
                        let (moved, status) = match *polls { 1 => (0, "RUNNING"), 2 => (120, "RUNNING"), _ => (300, "COMPLETED") };
                        json!({"Results": [{"Status": status, "ApproximateNumberOfMessagesMoved": moved, "ApproximateNumberOfMessagesToMove": 300, "SourceArn": "arn:aws:sqs:us-east-1:123456789012:ingest-dlq"}]})
                    }
                    other => panic!("unexpected {other}"),
                };
                ([("content-type", "application/x-amz-json-1.0")], output.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_message_move_task_is_started_towards_the_source_and_followed_to_the_end() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let endpoint = scripted_sqs(Arc::clone(&requests)).await;
    let output = tokio::task::spawn_blocking(move || {
        cli(&endpoint)
            .args([
                "redrive",
                "--dlq",
                "http://sqs.test/123456789012/ingest-dlq",
                "--max-per-second",
                "50",
                "--poll-seconds",
                "0.05",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout.trim(),
        "moved 300 of 300 messages from http://sqs.test/123456789012/ingest-dlq to http://sqs.test/123456789012/ingest"
    );
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("moved ")).collect();
    assert_eq!(progress, ["moved 0 of 300", "moved 120 of 300", "moved 300 of 300"], "{stderr}");
    assert!(stderr.contains("cancel-message-move-task --task-handle handle-1"), "{stderr}");
    let requests = requests.lock().unwrap();
    let (_, start) = requests.iter().find(|(target, _)| target == "StartMessageMoveTask").unwrap();
    // Named explicitly: messages the router dead-lettered itself have no
    // source queue of their own for SQS to return them to.
    assert_eq!(
        *start,
        json!({
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:ingest-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:ingest",
            "MaxNumberOfMessagesPerSecond": 50
        })
    );
}

/// A scripted Lambda Runtime API serving one invocation; returns its address
/// and a receiver of what the function answered.
async fn runtime_api(request_id: &'static str, event: Value) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use axum::extract::Path;
    let (answers, answered) = tokio::sync::mpsc::unbounded_channel();
    let served = Arc::new(Mutex::new(false));
    let next = move || {
        let (served, event) = (Arc::clone(&served), event.clone());
        async move {
            if std::mem::replace(&mut *served.lock().unwrap(), true) {
                std::future::pending::<()>().await;
            }
            let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            (
                [
                    ("lambda-runtime-aws-request-id", request_id.to_owned()),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned(),
                    ),
                    ("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned()),
                ],
                event.to_string(),
            )
        }
    };
    let reply = move |Path((_id, kind)): Path<(String, String)>, body: String| {
        let answers = answers.clone();
        async move {
            answers.send(format!("{kind} {body}")).unwrap();
            axum::http::StatusCode::ACCEPTED
        }
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", axum::routing::get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", axum::routing::post(reply));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address.to_string(), answered)
}

/// Runs a Lambda binary for one invocation; returns its answer and its
/// stdout as JSON lines.
async fn invoke_binary(
    binary: &str,
    function: &str,
    env: &[(&str, &str)],
    request_id: &'static str,
    event: Value,
) -> (String, Vec<Value>) {
    let (api, mut answered) = runtime_api(request_id, event).await;
    let mut command = Command::new(binary);
    command
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), answered.recv()).await;
    // Lines are written before the answer is sent; stop it and collect them.
    child.kill().unwrap();
    let Output { stdout, .. } = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let answer = answer.unwrap_or_else(|_| panic!("no answer; stdout: {}", text(&stdout))).unwrap();
    let lines = text(&stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (answer, lines)
}

fn emf<'a>(lines: &'a [Value], metric: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l.get("_aws").is_some() && l.get(metric).is_some()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_lambda_logs_a_queued_webhook_only_at_debug_with_the_request_id() {
    let client = sqs_client();
    let queue = create_queue(&client, "telemetry-ingest").await;
    let body = std::fs::read(project_dir().join("events/payloads/document.created.v2.json")).unwrap();
    let signed_event = |id: &str| {
        let signature = svix_headers(SAMPLE_SECRET, id, now(), &body).remove(2).1;
        Signed { source: "nectar", id, timestamp: now(), signature: &signature, body: &body, base64_body: false }
            .http_v2(false)
    };
    let request_id = "0f6d1a4e-telemetry-ingest";
    // The template's LogLevel debug.
    let each =
        [("WEBHOOK_SECRET", SAMPLE_SECRET), ("QUEUE_URL", queue.as_str()), ("RUST_LOG", "info,nectar_webhooks=debug")];
    let (answer, lines) = invoke_binary(
        env!("CARGO_BIN_EXE_ingest"),
        "nectar-ingest",
        &each,
        request_id,
        signed_event("msg_telemetry_1"),
    )
    .await;
    assert!(answer.starts_with("response ") && answer.contains("202"), "{answer}");
    assert_eq!(lines.len(), 1, "one line for the webhook, nothing else: {lines:#?}");
    let queued = &lines[0];
    assert_eq!(queued["message"], "webhook queued");
    assert_eq!(queued["requestId"], request_id);
    assert_eq!(queued["xrayTraceId"], "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
    assert_eq!(queued["webhook_id"], "msg_telemetry_1");
    assert_eq!(queued["level"], "DEBUG");
    assert!(queued.get("_aws").is_none(), "Lambda and SQS count accepted webhooks for free: {queued}");

    // RUST_LOG unset: info, the template's default; and warn.
    for (level, env) in [
        ("info", vec![("WEBHOOK_SECRET", SAMPLE_SECRET), ("QUEUE_URL", queue.as_str())]),
        ("warn", vec![("WEBHOOK_SECRET", SAMPLE_SECRET), ("QUEUE_URL", queue.as_str()), ("RUST_LOG", "warn")]),
    ] {
        let id = format!("msg_telemetry_{level}");
        let (answer, lines) =
            invoke_binary(env!("CARGO_BIN_EXE_ingest"), "nectar-ingest", &env, request_id, signed_event(&id)).await;
        assert!(answer.contains("202"), "{answer}");
        assert!(
            lines.is_empty(),
            "at {level}, a webhook queued writes nothing (the router's line names it): {lines:#?}"
        );
    }
    assert_eq!(drain(&client, &queue, 3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_router_lambda_logs_one_line_per_batch_naming_what_it_routed_and_counts_failures() {
    let good = std::fs::read(project_dir().join("events/payloads/connection.updated.v2.json")).unwrap();
    let record = |id: &str, body: &[u8]| {
        Signed { source: "nectar", id, timestamp: now() - 3, signature: "v1,unused", body, base64_body: false }
            .sqs_record()
    };
    let event = json!({"Records": [
        record("msg_routed", &good),
        record("msg_unrouted", br#"{"eventType":"other"}"#),
        record("msg_routed_too", &good),
    ]});
    let env = [("ROUTES", "connection.*=drop")];
    let request_id = "7c1e9b2a-telemetry-router";
    let (answer, lines) =
        invoke_binary(env!("CARGO_BIN_EXE_router"), "nectar-router", &env, request_id, event.clone()).await;
    assert!(answer.starts_with("response ") && answer.contains("batchItemFailures"), "{answer}");

    assert!(lines.iter().all(|l| l["requestId"] == request_id), "{lines:#?}");
    let batch: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "batch_routed").collect();
    assert_eq!(batch.len(), 1, "one line for the batch: {lines:#?}");
    assert_eq!(
        batch[0]["webhook_ids"], "msg_routed msg_routed_too",
        "every id routed, in one field Logs Insights reads"
    );
    assert_eq!((batch[0]["routed"].clone(), batch[0]["level"].clone()), (json!(2), json!("INFO")));
    assert!(batch[0]["oldest_age_secs"].as_i64().unwrap() >= 3);
    assert!(batch[0].get("_aws").is_none(), "no custom metric for what went right: {}", batch[0]);
    assert!(lines.iter().all(|l| l["outcome"] != "routed"), "no line per webhook at info: {lines:#?}");
    let failures = emf(&lines, "DeliveryFailures");
    assert_eq!(failures.len(), 1, "{lines:#?}");
    assert_eq!(
        (failures[0]["outcome"].clone(), failures[0]["Function"].clone(), failures[0]["webhook_id"].clone()),
        (json!("not_routed"), json!("nectar-router"), json!("msg_unrouted"))
    );
    assert_eq!(failures[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "NectarWebhooks");

    // LogLevel debug: a line per webhook, with the detail by type and route.
    let env = [("ROUTES", "connection.*=drop"), ("RUST_LOG", "info,nectar_webhooks=debug")];
    let (_, lines) = invoke_binary(env!("CARGO_BIN_EXE_router"), "nectar-router", &env, request_id, event).await;
    let routed: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "routed").collect();
    assert_eq!(routed.len(), 2, "{lines:#?}");
    assert_eq!(
        (routed[0]["webhook_id"].clone(), routed[0]["event_type"].clone(), routed[0]["route"].clone()),
        (json!("msg_routed"), json!("connection.updated.v2"), json!("connection.*")),
        "the detail Logs Insights reads"
    );
    assert!(routed[0]["age_secs"].as_i64().unwrap() >= 3);
    assert!(routed[0].get("_aws").is_none(), "{}", routed[0]);
}
