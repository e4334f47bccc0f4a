//! Local mode (`nectar-webhooks serve`) over HTTP: the durable embedded queue, a real
//! SQS queue (moto), large payloads by claim check (a local directory, or
//! S3), and the command-line tool as a user runs it.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::local::payload_dir::PayloadDir;
use nectar_webhooks::adapters::local::{self, LocalConfig};
use nectar_webhooks::adapters::payloads::read_envelope;
use nectar_webhooks::config::{IngestConfig, LAMBDA_BODY_LIMIT};
use nectar_webhooks::core::claim_check::PayloadStore;
use nectar_webhooks::core::envelope::ATTR_CLAIM_CHECK;
use nectar_webhooks::core::routing::RouteTable;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const DOCUMENT: &[u8] = br#"{"eventType":"document.created.v2","id":"b2d4e6f8"}"#;

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique_name(name)).with_extension("jsonl")
}

/// A document event of about `size` bytes, as large bills with many line items are.
fn large_document(size: usize) -> Vec<u8> {
    let item = r#"{"description":"Energy charge","quantity":"1234.5","rate":"0.1234","totalCharge":"152.34"},"#;
    let items = item.repeat(size / item.len());
    format!(r#"{{"eventType":"document.created.v2","id":"doc-large","lineItems":[{}]}}"#, items.trim_end_matches(','))
        .into_bytes()
}

/// A payload directory of this test's own.
fn payload_dir(name: &str) -> Arc<PayloadDir> {
    let path = std::env::temp_dir().join(unique_name(name));
    Arc::new(PayloadDir::open(&path, Duration::from_secs(3600)).unwrap())
}

/// The delivered line with this webhook id.
fn line_for<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines.iter().find(|line| line["id"] == id).unwrap_or_else(|| panic!("{id} was not delivered"))
}

/// The lines of a `file:` destination, waiting until `expected` arrived.
async fn wait_for_lines(path: &Path, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = json_lines(path);
        if lines.len() >= expected || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Local mode as `serve` runs it, configured from `vars`; large payloads in
/// `payloads`, or in the default directory. Returns the webhook URL.
async fn start_with(
    routes: &str,
    queue_url: Option<String>,
    vars: &[(&str, &str)],
    payloads: Option<Arc<dyn PayloadStore>>,
) -> String {
    let ingest = IngestConfig::for_local_mode(|name| {
        if name == "WEBHOOK_SECRET" {
            return Some(SAMPLE_SECRET.to_owned());
        }
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let data_dir = std::env::temp_dir().join(unique_name("local-data"));
    let config = LocalConfig { ingest, routes: RouteTable::parse(routes).unwrap(), queue_url, data_dir, archive: None };
    let client = config.needs_sqs().then(sqs_client);
    let destinations = client.clone().map_or_else(Destinations::default, |c| Destinations::default().with_sqs(c));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/nectar", listener.local_addr().unwrap());
    let shutdown = std::future::pending();
    match payloads {
        Some(payloads) => {
            tokio::spawn(local::run_with_payloads(config, client, destinations, payloads, listener, shutdown))
        }
        None => tokio::spawn(local::run(config, client, destinations, listener, shutdown)),
    };
    url
}

async fn start(routes: &str, queue_url: Option<String>, vars: &[(&str, &str)]) -> String {
    start_with(routes, queue_url, vars, None).await
}

async fn post(url: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    for (name, value) in svix_headers(SAMPLE_SECRET, id, now(), body) {
        request = request.header(name, value);
    }
    read_response(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_signed_webhook_flows_through_the_embedded_queue_once() {
    let out = out_file("embedded");
    let url = start(&format!("*=file:{}", out.display()), None, &[]).await;
    assert_eq!(post(&url, "msg_local_1", DOCUMENT).await.0, 202);
    assert_eq!(post(&url, "msg_local_1", DOCUMENT).await.0, 202, "a Svix retry is acknowledged");
    assert_eq!(post(&url, "msg_sentinel", DOCUMENT).await.0, 202);
    let lines = wait_for_lines(&out, 2).await;
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["msg_local_1", "msg_sentinel"], "the retry was not delivered again");
    assert_eq!(lines[0]["id"], "msg_local_1");
    assert_eq!(lines[0]["eventType"], "document.created.v2");
    assert_eq!(lines[0]["route"], "*");
    assert_eq!(lines[0]["body"].as_str().unwrap().as_bytes(), DOCUMENT);
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers() {
    let out = out_file("refused");
    let url = start(&format!("*=file:{}", out.display()), None, &[("MAX_BODY_BYTES", "1024")]).await;
    let client = reqwest::Client::new();

    let unsigned = client.post(&url).body(DOCUMENT.to_vec()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 400);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["error"], "missing_header");
    assert_eq!(body["message"], "missing header svix-id", "the header Svix sends");

    let mut forged = client.post(&url).body(DOCUMENT.to_vec());
    for (name, value) in svix_headers("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_forged", now(), DOCUMENT) {
        forged = forged.header(name, value);
    }
    assert_eq!(forged.send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.get(&url).send().await.unwrap().status().as_u16(), 405);
    let other = url.replace("/webhooks/nectar", "/webhooks/unknown");
    assert_eq!(post(&other, "msg_x", DOCUMENT).await.0, 404);
    assert_eq!(post(&url, "msg_big", &vec![b' '; 5000]).await.0, 413);
    assert_eq!(post(&url, "msg_sentinel", DOCUMENT).await.0, 202);
    let lines = wait_for_lines(&out, 1).await;
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["msg_sentinel"], "nothing refused was delivered");
}

#[tokio::test]
async fn with_a_queue_url_webhooks_travel_through_sqs() {
    let client = sqs_client();
    let queue = create_queue(&client, "local-ingest").await;
    let out = out_file("via-sqs");
    let url = start(&format!("*=file:{}", out.display()), Some(queue), &[]).await;
    for n in 0..3 {
        assert_eq!(post(&url, &format!("msg_sqs_{n}"), DOCUMENT).await.0, 202);
    }
    let lines = wait_for_lines(&out, 3).await;
    let mut ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["msg_sqs_0", "msg_sqs_1", "msg_sqs_2"]);
}

/// The claim check of the Lambdas, locally: bodies over the queue's message
/// limit are stored in a directory, the embedded queue carries a reference,
/// and the router delivers them whole; up to what a Lambda could be given.
#[tokio::test]
async fn large_payloads_go_by_a_local_directory_and_arrive_whole() {
    let out = out_file("large");
    let store = payload_dir("large-payloads");
    let url = start_with(&format!("*=file:{}", out.display()), None, &[], Some(store.clone())).await;
    let two_mib = large_document(2 * 1024 * 1024);
    let largest = large_document(LAMBDA_BODY_LIMIT - 100);
    assert_eq!(post(&url, "msg_large_2mib", &two_mib).await.0, 202);
    assert_eq!(post(&url, "msg_largest", &largest).await.0, 202);
    let (status, refusal) = post(&url, "msg_too_large", &vec![b' '; LAMBDA_BODY_LIMIT + 1]).await;
    assert_eq!(status, 413);
    assert_eq!(refusal["error"], "body_too_large");
    assert_eq!(refusal["message"], format!("body is over the {LAMBDA_BODY_LIMIT}-byte limit"));

    let lines = wait_for_lines(&out, 2).await;
    assert_eq!(lines.len(), 2, "nothing refused was delivered");
    assert_eq!(line_for(&lines, "msg_large_2mib")["body"].as_str().unwrap().as_bytes(), two_mib);
    assert_eq!(line_for(&lines, "msg_largest")["body"].as_str().unwrap().as_bytes(), largest);
    assert_eq!(line_for(&lines, "msg_largest")["eventType"], "document.created.v2");
    let stored = |id: &str| std::fs::read(store.path().join(format!("payloads/nectar/{id}.payload"))).ok();
    assert_eq!(stored("msg_large_2mib"), Some(two_mib), "the queue carried a reference, not the body");
    assert_eq!(stored("msg_largest"), Some(largest));
    assert_eq!(stored("msg_too_large"), None);
    std::fs::remove_dir_all(store.path()).unwrap();
}

/// With a real queue and no bucket: the local directory, which also holds
/// large copies routed to SQS destinations, as S3 does for the Lambda.
#[tokio::test]
async fn with_a_queue_url_and_no_bucket_large_payloads_go_by_the_directory_to_every_destination() {
    let sqs = sqs_client();
    let queue = create_queue(&sqs, "local-large-dir").await;
    let destination = create_queue(&sqs, "local-large-dest").await;
    let out = out_file("large-dir");
    let store = payload_dir("large-via-sqs");
    let routes = format!("*=file:{},{destination}", out.display());
    let url = start_with(&routes, Some(queue), &[], Some(store.clone())).await;
    let body = large_document(2 * 1024 * 1024);
    assert_eq!(post(&url, "msg_dir_large", &body).await.0, 202);
    let lines = wait_for_lines(&out, 1).await;
    assert_eq!(line_for(&lines, "msg_dir_large")["body"].as_str().unwrap().as_bytes(), body);

    let copies = drain(&sqs, &destination, 1).await;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].body(), Some(""), "the copy carries only the reference");
    let reference = attribute(&copies[0], ATTR_CLAIM_CHECK).unwrap();
    assert_eq!(reference, format!("file://{}/payloads/nectar/msg_dir_large.payload", store.path().display()));
    let copy = read_envelope(Some(store.as_ref()), "", |name| attribute(&copies[0], name)).await.unwrap();
    assert_eq!(copy.body, body);
    std::fs::remove_dir_all(store.path()).unwrap();
}

/// The binaries as a user runs them: `serve` configured by environment
/// variables against moto, then `send` with a sample payload and a large one,
/// which goes by the claim-check bucket as in the Lambdas.
#[tokio::test]
async fn the_command_line_tool_serves_and_sends() {
    let client = sqs_client();
    let queue = create_queue(&client, "cli-ingest").await;
    let s3 = s3_client();
    let bucket = unique_name("cli-claims");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let out = out_file("cli");
    let large = std::env::temp_dir().join(unique_name("cli-s3-large")).with_extension("json");
    std::fs::write(&large, large_document(2 * 1024 * 1024)).unwrap();
    let server = serve_cli(|serve| {
        serve
            .env("ROUTES", format!("document.*=file:{};*=drop", out.display()))
            .env("QUEUE_URL", &queue)
            .env("CLAIM_CHECK_BUCKET", &bucket)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1");
    });
    let payload = project_dir().join("events/payloads/document.updated.v2.json");
    let sent = send_cli(server.port, |send| send.args([&payload, &large]));
    let lines = wait_for_lines(&out, 2).await;
    server.stop();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{stdout}");
    let (statuses, summary) = stdout.trim_end().rsplit_once('\n').unwrap();
    assert!(statuses.lines().all(|line| line.starts_with("202 ")), "{stdout}");
    assert_eq!(summary, "sent 2, 2xx 2, failed 0");
    assert_eq!(lines.len(), 2);
    let sample = lines.iter().find(|line| line["eventType"] == "document.updated.v2").unwrap();
    assert_eq!(sample["body"].as_str().unwrap().as_bytes(), std::fs::read(&payload).unwrap());
    let delivered = lines.iter().find(|line| line["eventType"] == "document.created.v2").unwrap();
    assert_eq!(delivered["body"].as_str().unwrap().as_bytes(), std::fs::read(&large).unwrap());
    let stored = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = stored.contents().iter().filter_map(|object| object.key()).collect();
    let id = delivered["id"].as_str().unwrap();
    assert_eq!(keys, [format!("payloads/nectar/{id}")], "only the large payload went by S3");
    std::fs::remove_file(large).unwrap();
}

/// `serve` with no AWS at all takes a large payload by default: the
/// embedded queue, the payload in `LOCAL_PAYLOAD_DIR`.
#[tokio::test]
async fn the_command_line_tool_takes_large_payloads_without_aws() {
    let out = out_file("cli-large");
    let dir = std::env::temp_dir().join(unique_name("cli-payloads"));
    let payload = std::env::temp_dir().join(unique_name("cli-large")).with_extension("json");
    std::fs::write(&payload, large_document(2 * 1024 * 1024)).unwrap();
    let server = serve_cli(|serve| {
        serve
            .env("ROUTES", format!("*=file:{}", out.display()))
            .env("LOCAL_PAYLOAD_DIR", &dir)
            .env_remove("QUEUE_URL")
            .env_remove("MAX_BODY_BYTES");
    });
    let sent = send_cli(server.port, |send| send.args(["--id", "msg_cli_large"]).arg(&payload));
    let lines = wait_for_lines(&out, 1).await;
    server.stop();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stdout));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["body"].as_str().unwrap().as_bytes(), std::fs::read(&payload).unwrap());
    assert!(dir.join("payloads/nectar/msg_cli_large.payload").exists(), "it went by the directory");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_file(payload).unwrap();
}

/// Runs `nectar-webhooks send` to the server on `port`, signing with the
/// sample secret, with what `configure` adds (the files, options).
fn send_cli(port: u16, configure: impl FnOnce(&mut Command) -> &mut Command) -> std::process::Output {
    let mut send = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
    send.args(["send", "--url", &format!("http://127.0.0.1:{port}/webhooks/nectar")])
        .env("WEBHOOK_SECRET", SAMPLE_SECRET);
    configure(&mut send).output().unwrap()
}

/// Starts `nectar-webhooks serve` on a port of its choosing with the sample secret and
/// what `configure` adds, and waits until it accepts connections.
fn serve_cli(configure: impl FnOnce(&mut Command)) -> Serve {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
    serve
        .arg("serve")
        .env("WEBHOOK_SECRET", SAMPLE_SECRET)
        .env("DATA_DIR", std::env::temp_dir().join(unique_name("cli-data")));
    configure(&mut serve);
    Serve::start(serve.stdout(Stdio::null()), None)
}
