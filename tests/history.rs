//! History: every verified webhook archived, a window of it replayed through
//! the router, once per replay id. Local mode end to end (`serve
//! --archive-dir`, `replay`), and the deployed path on moto (the router's
//! Firehose archive into S3, read back and replayed from `s3://`).

mod support;

use chrono::{DateTime, Utc};
use nectar_webhooks::adapters::archive::firehose::FirehoseArchive;
use nectar_webhooks::adapters::archive::source::{ArchiveSource, Window};
use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::idempotency::DynamoSeen;
use nectar_webhooks::adapters::lambda_router::SqsBatchHandler;
use nectar_webhooks::core::archive::ArchiveRecord;
use nectar_webhooks::core::dedup::{DEFAULT_LEASE, DEFAULT_TTL};
use nectar_webhooks::core::envelope::{ATTR_RECEIVED, QueueMessage};
use nectar_webhooks::core::router::Router;
use nectar_webhooks::core::routing::RouteTable;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const TYPES: [&str; 6] = [
    "connection.created.v2",
    "connection.updated.v2",
    "connection.validated.v2",
    "document.created.v2",
    "document.updated.v2",
    "document.deleted.v2",
];

/// The committed sample of `event_type`, made unique: its `id` is the
/// webhook's number, and its spacing is left as the sample has it.
fn body(event_type: &str, n: usize) -> String {
    let sample = std::fs::read_to_string(project_dir().join(format!("events/payloads/{event_type}.json"))).unwrap();
    let value: serde_json::Value = serde_json::from_str(&sample).unwrap();
    let old_id = value["id"].as_str().unwrap().to_owned();
    sample.replacen(&old_id, &format!("res-{n}"), 1)
}

fn now_utc() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Waits (up to a minute) until `count` says `want`.
fn wait_until(what: &str, want: usize, count: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = count();
        if got >= want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got} of {want} after a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn archived_lines(dir: &Path) -> usize {
    fn walk(dir: &Path, total: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                walk(&entry.path(), total);
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                *total += std::fs::read(entry.path()).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

fn replay(args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"))
        .arg("replay")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("ROUTES")
        .env_remove("IDEMPOTENCY_TABLE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Ids and bodies of a file destination's lines; panics on a second line of one id.
fn delivered(path: &Path) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for line in json_lines(path) {
        let id = line["id"].as_str().unwrap().to_owned();
        let previous = found.insert(id.clone(), line["body"].as_str().unwrap().to_owned());
        assert!(previous.is_none(), "{id} arrived twice in {}", path.display());
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_window_arrives_once_byte_exact_and_a_second_run_adds_nothing() {
    let dir = std::env::temp_dir().join(unique_name("history"));
    let (archive, original, data) = (dir.join("archive"), dir.join("original.jsonl"), dir.join("data"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
    command
        .args(["serve", "--archive-dir"])
        .arg(&archive)
        .env("WEBHOOK_SECRET", SAMPLE_SECRET)
        .env("ROUTES", format!("*=file:{}", original.display()))
        .stdout(Stdio::null());
    let server = Serve::start(&mut command, None);
    let url = format!("http://127.0.0.1:{}/webhooks/nectar", server.port);
    let client = reqwest::Client::new();
    let mut sent: Vec<(String, &str, String)> = Vec::new();
    let mut marks = Vec::new();
    // Three phases; the window is the middle one, its edges taken between them.
    for (phase, count) in [300, 400, 300].into_iter().enumerate() {
        if phase > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            marks.push(now_utc());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..count {
            let n = sent.len();
            let (id, event_type) = (format!("msg_hist_{n}"), TYPES[n % TYPES.len()]);
            let body = body(event_type, n);
            let mut request = client.post(&url).body(body.clone());
            for (name, value) in svix_headers(SAMPLE_SECRET, &id, now(), body.as_bytes()) {
                request = request.header(name, value);
            }
            assert_eq!(request.send().await.unwrap().status(), 202, "{id}");
            sent.push((id, event_type, body));
        }
    }
    wait_until("original deliveries", 1000, || json_lines(&original).len());
    wait_until("archived webhooks", 1000, || archived_lines(&archive));
    server.stop();

    let (since, until) = (marks[0].to_rfc3339(), marks[1].to_rfc3339());
    let expected: HashMap<String, String> = sent[300..700]
        .iter()
        .filter(|(_, event_type, _)| *event_type == "document.created.v2")
        .map(|(id, _, body)| (id.clone(), body.clone()))
        .collect();
    assert_eq!(expected.len(), 67);
    let fresh = dir.join("fresh.jsonl");
    let to = format!("file:{}", fresh.display());
    let from = archive.to_str().unwrap();
    let window = ["--from", from, "--since", &since, "--until", &until, "--type", "document.created.v2"];

    let dry = replay(&[&window[..], &["--to", &to, "--dry-run"]].concat(), &data);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run: 67 webhooks would be replayed"));
    assert!(!fresh.exists(), "a dry run delivers nothing");

    let first = replay(&[&window[..], &["--to", &to, "--replay-id", "rp_test"]].concat(), &data);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(delivered(&fresh), expected, "exactly the window's documents created, once, byte-exact");

    let again = replay(&[&window[..], &["--to", &to, "--replay-id", "rp_test"]].concat(), &data);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(json_lines(&fresh).len(), 67, "the same replay id delivers nothing twice");

    // The original destination had them already: a replay is not taken for a duplicate of that.
    let to_original = format!("file:{}", original.display());
    let back = replay(&[&window[..], &["--to", &to_original]].concat(), &data);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert!(String::from_utf8_lossy(&back.stderr).contains("replay rp_"), "a fresh id is printed");
    assert_eq!(json_lines(&original).len(), 1067);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A replay interrupted with Ctrl-C (SIGINT) stops after the batch under way
/// and says how to resume; run again with its id, it delivers the rest and
/// nothing twice. The twelve committed samples, two batches of ten and two,
/// at 1 a second: the first batch goes at once, the second would wait 10 s,
/// and the interrupt ends that wait.
#[test]
fn an_interrupted_replay_resumes_where_it_stopped() {
    let dir = std::env::temp_dir().join(unique_name("resume"));
    let (fresh, data) = (dir.join("fresh.jsonl"), dir.join("data"));
    std::fs::create_dir_all(&dir).unwrap();
    let samples = project_dir().join("events/archive");
    let to = format!("file:{}", fresh.display());
    let window = ["--from", samples.to_str().unwrap(), "--since", "2025-11-27T00:00:00Z", "--to", &to];
    let replay_command = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
        command.arg("replay").args(window).args(["--replay-id", "rp_resume", "--data-dir"]).arg(&data);
        command.env_remove("ROUTES").env_remove("IDEMPOTENCY_TABLE").stdin(Stdio::null());
        command
    };
    let running = replay_command().arg("--rate").arg("1").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("the first batch", 10, || json_lines(&fresh).len());
    let sent = Command::new("kill").args(["-INT", &running.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let interrupted_at = Instant::now();
    let stopped = running.wait_with_output().unwrap();
    assert!(interrupted_at.elapsed() < Duration::from_secs(9), "Ctrl-C ends the wait for the rate");
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success(), "an interrupted replay does not exit 0: {said}");
    assert!(said.contains("interrupted after 10 of 12"), "{said}");
    assert!(said.contains("--replay-id rp_resume to resume"), "{said}");
    assert_eq!(json_lines(&fresh).len(), 10, "the batch under way finishes, the next does not start");

    let resumed = replay_command().output().unwrap();
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{said}");
    assert!(said.contains("10 already delivered by an earlier run"), "{said}");
    assert_eq!(delivered(&fresh).len(), 12, "every sample once");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A router archiving into `stream`, delivering to `out`, remembering its
/// deliveries in `table` (so handlers made one after another share them).
fn archive_handler(stream: &str, out: &Path, table: &str) -> SqsBatchHandler<Destinations, DynamoSeen> {
    let routes = RouteTable::parse(&format!("*=file:{}", out.display())).unwrap();
    let archive = FirehoseArchive::new(firehose_client(), stream);
    let seen = DynamoSeen::new(dynamodb_client(), table, DEFAULT_TTL, DEFAULT_LEASE);
    let router = Router::new(routes, Destinations::default(), seen).with_archive(Arc::new(archive));
    SqsBatchHandler { router, dead_letters: None }
}

#[tokio::test]
async fn the_router_archives_through_firehose_retries_what_it_could_not_and_replays_from_s3() {
    let (sqs, s3) = (sqs_client(), s3_client());
    let (bucket, stream) = create_archive_stream(&s3).await;
    let queue = create_queue(&sqs, "history").await;
    let table = create_idempotency_table(&dynamodb_client()).await;
    let dir = std::env::temp_dir().join(unique_name("history-moto"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("routed.jsonl");
    let received = 1_764_201_600_000 + 123;
    let mut bodies = HashMap::new();
    // One batch: moto gives failed records back first, so a second batch would wait behind them.
    for n in 0..10 {
        let (id, event_type) = (format!("msg_fh_{n}"), TYPES[n % TYPES.len()]);
        let body = body(event_type, n);
        let mut message = QueueMessage::for_webhook("nectar", &id, now(), body.as_bytes());
        message.attributes.push((ATTR_RECEIVED, (received + n as i64).to_string()));
        nectar_webhooks::adapters::sqs::send(&sqs, &queue, message, None).await.unwrap();
        bodies.insert(id, body);
    }

    // The stream is missing: routing goes on, every record comes back to be archived.
    let broken = archive_handler("no-such-stream", &out, &table);
    let mut rounds = 0;
    while delivered(&out).len() < 10 {
        event_source_round(&sqs, &queue, &broken).await;
        rounds += 1;
        assert!(rounds < 20, "routing stalled");
    }
    assert!(captured_logs().contains("\"outcome\":\"not_archived\""), "the failure is logged with its outcome");
    let working = archive_handler(&stream, &out, &table);
    while event_source_round(&sqs, &queue, &working).await > 0 {}
    assert_eq!(delivered(&out).len(), 10, "the retries reached no destination twice");

    let source = ArchiveSource::S3 { client: s3.clone(), bucket: bucket.clone(), prefix: "archive/".into() };
    let (records, stats) = source.read(Window::all()).await.unwrap();
    assert_eq!(stats.malformed, 0);
    let by_id: HashMap<&str, &ArchiveRecord> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id.len(), 10);
    for (id, body) in &bodies {
        assert_eq!(by_id[id.as_str()].body.bytes().unwrap().unwrap(), body.as_bytes(), "{id} byte-exact");
    }
    assert_eq!(by_id["msg_fh_3"].event_type, "document.created.v2");
    assert_eq!(by_id["msg_fh_3"].resource_id.as_deref(), Some("res-3"));
    assert_eq!(by_id["msg_fh_3"].received.timestamp_millis(), received + 3);

    let fresh = dir.join("fresh.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"))
        .args(["replay", "--from", &format!("s3://{bucket}/archive/"), "--since", "2025-11-27T00:00:00Z"])
        .args(["--type", "connection.*", "--to", &format!("file:{}", fresh.display()), "--data-dir"])
        .arg(dir.join("data"))
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("IDEMPOTENCY_TABLE")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let replayed = delivered(&fresh);
    assert_eq!(replayed.len(), 6, "the connection events of the window");
    assert!(replayed.iter().all(|(id, body)| bodies[id] == *body));

    let drift = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"))
        .args(["drift", "--from", &format!("s3://{bucket}/archive/"), "--json"])
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(drift.status.code(), Some(0), "{}", String::from_utf8_lossy(&drift.stderr));
    assert_eq!(String::from_utf8_lossy(&drift.stdout).trim(), "[]", "the samples fit the model");
    assert!(String::from_utf8_lossy(&drift.stderr).contains("10 webhooks compared"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn drift(from: &Path, json: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
    command.arg("drift").arg("--from").arg(from);
    if json {
        command.arg("--json");
    }
    command.stdin(Stdio::null()).output().unwrap()
}

/// Nectar's samples fit the model; the same samples with an added nested
/// field, a changed type and a removed field are reported as exactly those
/// three, and `drift` exits 1; an archive it cannot read exits 2.
#[test]
fn drift_names_exactly_the_added_changed_and_removed_fields() {
    let samples = project_dir().join("events/archive");
    let fits = drift(&samples, false);
    assert_eq!(fits.status.code(), Some(0), "{}", String::from_utf8_lossy(&fits.stderr));
    assert!(String::from_utf8_lossy(&fits.stdout).contains("No drift"));
    assert!(String::from_utf8_lossy(&fits.stderr).contains("12 webhooks compared"));

    let dir = std::env::temp_dir().join(unique_name("drift"));
    let hour = dir.join("dt=2025-11-27/hour=00");
    std::fs::create_dir_all(&hour).unwrap();
    let original = std::fs::read_to_string(samples.join("dt=2025-11-27/hour=00/samples.jsonl")).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mutate = |event_type: &str, id: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let line = original.lines().find(|l| l.contains(&format!("\"eventType\":\"{event_type}\""))).unwrap();
        let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut body: serde_json::Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        change(&mut body);
        record["body"] = body.to_string().into();
        record["id"] = id.into();
        record.to_string()
    };
    lines.push(mutate("document.created.v2", "msg_added", &|b| b["site"]["region"] = "eu".into()));
    lines.push(mutate("connection.updated.v2", "msg_retyped", &|b| b["status"] = 3.into()));
    lines.push(mutate("connection.created", "msg_removed", &|b| {
        b["company"].as_object_mut().unwrap().remove("externalId");
    }));
    // The original of connection.created has the field: replace it, so no payload of the type does.
    lines.retain(|l| !l.contains("\"id\":\"msg_sample_connection.created\""));
    std::fs::write(hour.join("mutated.jsonl"), lines.join("\n") + "\n").unwrap();

    let drifted = drift(&dir, true);
    assert_eq!(drifted.status.code(), Some(1), "{}", String::from_utf8_lossy(&drifted.stderr));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&drifted.stdout).unwrap();
    let named: Vec<(&str, &str, &str, &str)> = findings
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap();
            (text("eventType"), text("path"), text("kind"), f["samples"][0].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        named,
        [
            ("connection.created", "company.externalId", "missing", "msg_removed"),
            ("connection.updated.v2", "status", "type_changed", "msg_retyped"),
            ("document.created.v2", "site.region", "unknown", "msg_added"),
        ]
    );
    assert!(!String::from_utf8_lossy(&drifted.stdout).contains("\"eu\""), "never a payload value");
    let text = drift(&dir, false);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("site.region"));

    let unreadable = drift(&dir.join("no-such-archive"), false);
    assert_eq!(unreadable.status.code(), Some(2), "{}", String::from_utf8_lossy(&unreadable.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
