//! Local mode (`nectar-webhooks serve`) over HTTP: the embedded queue, a real
//! SQS queue (moto), and the command-line tool as a user runs it.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::local::{self, LocalConfig};
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::routing::RouteTable;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const DOCUMENT: &[u8] = br#"{"eventType":"document.created.v2","id":"b2d4e6f8"}"#;

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique_name(name)).with_extension("jsonl")
}

/// The lines of a `file:` destination, waiting until `expected` arrived.
async fn wait_for_lines(path: &Path, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if lines.len() >= expected || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(routes: &str, queue_url: Option<String>, vars: &[(&str, &str)]) -> String {
    let ingest = IngestConfig::from_lookup(|name| {
        if name == "WEBHOOK_SECRET" {
            return Some(SAMPLE_SECRET.to_owned());
        }
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let config = LocalConfig { ingest, routes: RouteTable::parse(routes).unwrap(), queue_url };
    let client = config.needs_sqs().then(sqs_client);
    let destinations = client.clone().map_or_else(Destinations::default, |c| Destinations::default().with_sqs(c));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/nectar", listener.local_addr().unwrap());
    tokio::spawn(local::run(config, client, destinations, listener, std::future::pending()));
    url
}

async fn post(url: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    for (name, value) in svix_headers(SAMPLE_SECRET, id, now(), body) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
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

/// The binaries as a user runs them: `serve` configured by environment
/// variables against moto, then `send` with a sample payload.
#[tokio::test]
async fn the_command_line_tool_serves_and_sends() {
    let client = sqs_client();
    let queue = create_queue(&client, "cli-ingest").await;
    let out = out_file("cli");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cli = env!("CARGO_BIN_EXE_nectar-webhooks");
    let mut server = Command::new(cli)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .env("WEBHOOK_SECRET", SAMPLE_SECRET)
        .env("ROUTES", format!("document.*=file:{};*=drop", out.display()))
        .env("QUEUE_URL", &queue)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let payload = project_dir().join("events/payloads/document.updated.v2.json");
    let sent = Command::new(cli)
        .args(["send", "--url", &format!("http://127.0.0.1:{port}/webhooks/nectar"), "--secret", SAMPLE_SECRET])
        .arg(&payload)
        .output()
        .unwrap();
    let lines = wait_for_lines(&out, 1).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stdout));
    assert!(String::from_utf8_lossy(&sent.stdout).starts_with("202 "));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["eventType"], "document.updated.v2");
    assert_eq!(lines[0]["body"].as_str().unwrap().as_bytes(), std::fs::read(&payload).unwrap());
}
