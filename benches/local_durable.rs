//! Local mode on its durable embedded queue: the release `nectar-webhooks
//! serve` (from `$BENCH_BINARIES`, else `target/release`) taking 10,000
//! signed webhooks at concurrency 32, routed to a `file:` destination, in
//! three rounds on the same data directory. Per round: webhooks accepted per
//! second, p50 and p99 time to 202, the server's peak RSS, and the data
//! directory's size once they are delivered and once their dedup entries
//! have expired and been cleaned up. Expiry is made by setting the entries'
//! expiry to the past (35 days cannot pass in a bench); the clean-up is the
//! store's own, as `serve` runs it every minute.
//!
//! Writes `$BENCH_DIR/local_durable.json` (default `target/bench`).

use nectar_webhooks::adapters::local::durable_queue::{DB_FILE, DurableStore, LOCK_FILE};
use nectar_webhooks::core::dedup::DEFAULT_TTL;
use nectar_webhooks::core::verification::svix::sign;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const N: usize = 10_000;
const CONCURRENCY: usize = 32;
const ROUNDS: usize = 3;
const SECRET: &str = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";
/// What the in-memory embedded queue accepted before (2,000 webhooks at
/// concurrency 32 in 1.1 s, debug build, measured when the issue was filed).
const IN_MEMORY_PER_SEC: f64 = 1_800.0;

#[derive(serde::Serialize)]
struct Round {
    accepted_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_kib: u64,
    bytes_after_delivery: u64,
    bytes_after_cleanup: u64,
}

#[tokio::main]
async fn main() {
    let binaries = std::env::var("BENCH_BINARIES").map_or_else(|_| PathBuf::from("target/release"), PathBuf::from);
    let binary = binaries.join("nectar-webhooks");
    assert!(binary.exists(), "{} missing: cargo build --release --bin nectar-webhooks", binary.display());
    let work = std::env::temp_dir().join(format!("bench-local-durable-{}", std::process::id()));
    let data = work.join("data");
    std::fs::create_dir_all(&work).unwrap();
    let body =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("events/payloads/document.created.v2.json")).unwrap();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Command::new(&binary)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .env("WEBHOOK_SECRET", SECRET)
            .env("ROUTES", format!("*=file:{}", work.join("out.jsonl").display()))
            .env("LOCAL_PAYLOAD_DIR", work.join("payloads"))
            .env_remove("QUEUE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_until_ready(&base).await;
        let started = Instant::now();
        let mut latencies = send_all(&format!("{base}/webhooks/nectar"), round, &body).await;
        let elapsed = started.elapsed();
        wait_until_delivered(&data).await;
        let peak_rss_kib = peak_rss_kib(&server);
        stop(&mut server);
        let bytes_after_delivery = dir_bytes(&data);
        expire_and_clean_up(&data).await;
        let bytes_after_cleanup = dir_bytes(&data);
        latencies.sort();
        let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let result = Round {
            accepted_per_sec: N as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile(0.50).as_secs_f64() * 1000.0,
            p99_ms: percentile(0.99).as_secs_f64() * 1000.0,
            peak_rss_kib,
            bytes_after_delivery,
            bytes_after_cleanup,
        };
        eprintln!(
            "round {}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, peak RSS {} KiB, {} bytes delivered, {} cleaned up",
            round + 1,
            result.accepted_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.peak_rss_kib,
            result.bytes_after_delivery,
            result.bytes_after_cleanup
        );
        rounds.push(result);
    }
    std::fs::remove_dir_all(&work).unwrap();
    let report = serde_json::json!({
        "n": N,
        "concurrency": CONCURRENCY,
        "in_memory_per_sec": IN_MEMORY_PER_SEC,
        "rounds": rounds,
    });
    let out = std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into());
    std::fs::create_dir_all(&out).unwrap();
    let path = Path::new(&out).join("local_durable.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("serialisable")).expect("written");
    eprintln!("wrote {}", path.display());
}

async fn wait_until_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/ready")).await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends [`N`] webhooks at [`CONCURRENCY`]; returns each one's time to 202.
async fn send_all(url: &str, round: usize, body: &[u8]) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let next = Arc::new(Mutex::new(0..N));
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, url, next, body) = (http.clone(), url.to_owned(), Arc::clone(&next), body.to_vec());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let Some(i) = next.lock().unwrap().next() else { break };
                    let id = format!("msg_bench_{round}_{i}");
                    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                    let signature = sign(SECRET, &id, timestamp, &body).unwrap();
                    let sent = Instant::now();
                    let response = http
                        .post(&url)
                        .header("svix-id", &id)
                        .header("svix-timestamp", timestamp.to_string())
                        .header("svix-signature", signature)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 202);
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(N);
    for sender in senders {
        latencies.extend(sender.await.unwrap());
    }
    latencies
}

/// Waits until the queue is empty: every webhook delivered.
async fn wait_until_delivered(data: &Path) {
    let db = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    loop {
        let waiting: i64 = db.query_row("SELECT count(*) FROM messages", [], |row| row.get(0)).unwrap();
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn peak_rss_kib(server: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// SIGTERM, then waits for the graceful exit.
fn stop(server: &mut Child) {
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}

/// The data directory's files, in bytes (database, write-ahead log, index).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().metadata().unwrap().len()).sum()
}

/// Makes every dedup entry expired, then runs the store's clean-up.
async fn expire_and_clean_up(data: &Path) {
    let db = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    db.execute("UPDATE seen SET until = 0", []).unwrap();
    drop(db);
    let (store, _) = DurableStore::open(data, DEFAULT_TTL).unwrap();
    store.clean_up().await.unwrap();
    drop(store);
    // The writer thread closes the database (checkpointing its log), then
    // lets go of the directory's lock, once the store is dropped.
    let lock = std::fs::File::open(data.join(LOCK_FILE)).unwrap();
    while lock.try_lock().is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock.unlock().unwrap();
}
