//! Local mode's durable embedded queue, black-box: `nectar-webhooks serve
//! --data-dir` killed with SIGKILL in the middle of a load and restarted on
//! the same directory, stopped with SIGTERM, and its health endpoints; and
//! the server's graceful shutdown, step by step.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::adapters::local::durable_queue::MAX_IN_FLIGHT;
use nectar_webhooks::adapters::local::server::{self, ReadyCheck};
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::clock::SystemClock;
use nectar_webhooks::core::envelope::QueueMessage;
use nectar_webhooks::core::ingest::{Ingest, Limits};
use nectar_webhooks::core::queue::{Queue, QueueError, Webhook};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::{Notify, watch};

const CONCURRENCY: usize = 32;

/// A `serve` process, killed if the test ends first.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything one test's servers share: the data directory, the `file:`
/// destination, the port (the same across restarts, as a supervisor's).
struct Setup {
    dir: PathBuf,
    out: PathBuf,
    port: u16,
}

impl Setup {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { out: dir.join("out.jsonl"), dir, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts `serve --data-dir` routing everything to `routes` (by default
    /// the `file:` destination), and waits until it answers `/health`.
    fn serve(&self, routes: Option<&str>) -> Served {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("serve.log")).unwrap();
        let routes = routes.map_or_else(|| format!("*=file:{}", self.out.display()), str::to_owned);
        let child = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"))
            .args(["serve", "--addr", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(self.dir.join("data"))
            .env("WEBHOOK_SECRET", SAMPLE_SECRET)
            .env("ROUTES", routes)
            .env("LOCAL_PAYLOAD_DIR", self.dir.join("payloads"))
            .env_remove("QUEUE_URL")
            .env_remove("DATA_DIR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let served = Served(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "serve did not start; see {}", self.dir.join("serve.log").display());
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    /// Delivered lines per webhook id.
    fn deliveries(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for line in json_lines(&self.out) {
            *counts.entry(line["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// Waits until every id in `ids` was delivered at least once.
    async fn wait_for_deliveries(&self, ids: &HashSet<String>) -> HashMap<String, usize> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let counts = self.deliveries();
            if ids.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn body(i: usize) -> Vec<u8> {
    format!(r#"{{"eventType":"document.created.v2","id":"doc-{i}","n":{i}}}"#).into_bytes()
}

/// Sends each of `ids` like Svix, re-sending after any error or non-2xx
/// (the server may be down, restarting or shutting down) until a 2xx, at
/// [`CONCURRENCY`]. Counts 2xx answers in `accepted` and 503s in `refused`.
async fn send_all(url: String, ids: Vec<String>, accepted: Arc<AtomicUsize>, refused: Arc<AtomicUsize>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let queue = Arc::new(Mutex::new(ids));
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, url, queue) = (http.clone(), url.clone(), Arc::clone(&queue));
            let (accepted, refused) = (Arc::clone(&accepted), Arc::clone(&refused));
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else { return };
                    let n: usize = id.rsplit('_').next().unwrap().parse().unwrap();
                    let body = body(n);
                    loop {
                        let mut request = http.post(&url).body(body.clone());
                        for (name, value) in svix_headers(SAMPLE_SECRET, &id, now(), &body) {
                            request = request.header(name, value);
                        }
                        match request.send().await {
                            Ok(response) if response.status().is_success() => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok(response) => {
                                refused.fetch_add(usize::from(response.status() == 503), Ordering::SeqCst);
                                record_response(&response.text().await.unwrap_or_default());
                            }
                            Err(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// Waits until `counter` reaches `target`.
async fn wait_for_count(counter: &AtomicUsize, target: usize) {
    while counter.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the process to end (a hang guard of 60 s, not a time limit).
fn wait_for_exit(served: &mut Served) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = served.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(served: &Served, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &served.0.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Sends `n` webhooks; once half are accepted, stops the server with
/// `signal_name`, restarts it on the same directory and sends the rest.
/// Returns the ids, the deliveries, the stopped process's exit status, and
/// the 503s answered.
async fn load_with_a_stop(
    name: &str,
    n: usize,
    signal_name: &str,
) -> (HashSet<String>, HashMap<String, usize>, std::process::ExitStatus, usize) {
    let setup = Setup::new(name);
    let ids: Vec<String> = (0..n).map(|i| format!("msg_{name}_{i}")).collect();
    let (accepted, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut first = setup.serve(None);
    let load =
        tokio::spawn(send_all(setup.url("/webhooks/nectar"), ids.clone(), Arc::clone(&accepted), Arc::clone(&refused)));
    wait_for_count(&accepted, n / 2).await;
    signal(&first, signal_name);
    let status = wait_for_exit(&mut first);
    let at_stop = accepted.load(Ordering::SeqCst);
    let delivered_at_stop = setup.deliveries().len();
    let _second = setup.serve(None);
    load.await.unwrap();
    let ids: HashSet<String> = ids.into_iter().collect();
    let counts = setup.wait_for_deliveries(&ids).await;
    println!(
        "{name}: {n} sent at concurrency {CONCURRENCY}; SIG{signal_name} after {at_stop} accepted and \
         {delivered_at_stop} delivered; then every one accepted, {} delivered, {} duplicates, {} answered 503",
        counts.len(),
        counts.values().map(|c| c - 1).sum::<usize>(),
        refused.load(Ordering::SeqCst)
    );
    assert!(at_stop < n, "the stop came in the middle of the load");
    (ids, counts, status, refused.load(Ordering::SeqCst))
}

/// `kill -9` in the middle of 5,000 webhooks at concurrency 32, then a
/// restart on the same data directory: every webhook answered 2xx is
/// delivered, and a second time only if its delivery was in flight at the
/// kill (at most the worker's [`MAX_IN_FLIGHT`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_every_accepted_webhook_is_delivered() {
    let (ids, counts, _, _) = load_with_a_stop("kill9", 5_000, "KILL").await;
    let lost: Vec<_> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(lost.is_empty(), "{} accepted webhooks were lost, e.g. {:?}", lost.len(), lost.first());
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert!(duplicates <= MAX_IN_FLIGHT, "{duplicates} duplicates; at most {MAX_IN_FLIGHT} deliveries are in flight");
    assert!(counts.keys().all(|id| ids.contains(id)));
}

/// SIGTERM in the middle of a load: the process exits cleanly, having
/// finished its deliveries in flight (nothing is delivered twice after the
/// restart), and every webhook answered 2xx is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_is_in_flight_and_exits() {
    let (ids, counts, status, _) = load_with_a_stop("sigterm", 1_000, "TERM").await;
    assert!(status.success(), "{status}");
    assert!(ids.iter().all(|id| counts.contains_key(id)), "every accepted webhook is delivered");
    assert_eq!(counts.values().map(|c| c - 1).sum::<usize>(), 0, "nothing was delivered twice");
}

async fn get(url: &str) -> (u16, Value) {
    read_response(reqwest::get(url).await.unwrap()).await
}

/// `/health` says the process is alive; `/ready` that the store takes
/// writes and the destinations can be reached: not when a `file:`
/// destination's directory is missing.
#[tokio::test]
async fn health_and_readiness() {
    let setup = Setup::new("health");
    let served = setup.serve(None);
    assert_eq!(get(&setup.url("/health")).await, (200, serde_json::json!({ "status": "alive" })));
    assert_eq!(get(&setup.url("/ready")).await, (200, serde_json::json!({ "status": "ready" })));
    drop(served);

    // serve refuses to start with a destination it cannot reach; one that
    // goes away while it runs makes it unready, though still alive.
    let vanishing = setup.dir.join("vanishing");
    std::fs::create_dir_all(&vanishing).unwrap();
    let _served = setup.serve(Some(&format!("*=file:{}", vanishing.join("out.jsonl").display())));
    assert_eq!(get(&setup.url("/ready")).await.0, 200);
    std::fs::remove_dir_all(&vanishing).unwrap();
    assert_eq!(get(&setup.url("/health")).await.0, 200);
    let (status, body) = get(&setup.url("/ready")).await;
    assert_eq!((status, &body["reason"]), (503, &Value::from("destination_unreachable")));
}

/// A queue that holds each message until it is let go.
#[derive(Default)]
struct Gate {
    entered: Notify,
    open: Notify,
}

struct Gated(Arc<Gate>);

impl Queue for Gated {
    async fn enqueue(&self, _: QueueMessage, _: Webhook<'_>) -> Result<(), QueueError> {
        self.0.entered.notify_one();
        self.0.open.notified().await;
        Ok(())
    }
}

async fn post(url: &str, id: &str) -> reqwest::Response {
    let body = body(0);
    let mut request = reqwest::Client::new().post(url).body(body.clone());
    for (name, value) in svix_headers(SAMPLE_SECRET, id, now(), &body) {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// Once shutdown begins, new requests get 503 (with `Retry-After`) and
/// `/ready` too, while the server stays up until the request it was
/// handling is answered; then it returns.
#[tokio::test]
async fn shutdown_refuses_new_requests_and_answers_those_in_flight() {
    let ingest = IngestConfig::for_local_mode(|name| (name == "WEBHOOK_SECRET").then(|| SAMPLE_SECRET.to_owned()));
    let gate = Arc::new(Gate::default());
    let ingest =
        Ingest::new(ingest.unwrap().sources(), Gated(Arc::clone(&gate)), Limits::default(), Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let ready: ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
    let (stop, stopping) = watch::channel(false);
    let serving = tokio::spawn(server::serve(listener, Arc::new(ingest), 1 << 20, ready, stopping));

    let url = format!("{base}/webhooks/nectar");
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "msg_in_flight").await.status().as_u16() }
    });
    gate.entered.notified().await;
    stop.send(true).unwrap();

    let refused = post(&url, "msg_after_stop").await;
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "30");
    let body: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "shutting_down");
    assert_eq!(get(&format!("{base}/ready")).await.1["reason"], "shutting_down");
    assert!(!serving.is_finished(), "the server waits for the request in flight");

    gate.open.notify_one();
    assert_eq!(in_flight.await.unwrap(), 202, "the request in flight is answered");
    serving.await.unwrap().unwrap();
}

/// The data directory and its files are private to their owner.
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let setup = Setup::new("private");
    let _served = setup.serve(None);
    assert_eq!(get(&setup.url("/ready")).await.0, 200, "the store is open");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let data = setup.dir.join("data");
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is private", path.display());
    }
}
