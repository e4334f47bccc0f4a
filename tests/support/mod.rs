//! Shared set-up for the black-box tests: a real SQS-compatible server
//! (moto's, from the project's Python venv) started once per test binary.

#![allow(dead_code)]

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use nectar_webhooks::core::verification::svix::sign;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Every log line the code under test writes in this test binary, as JSON:
/// kept in memory for tests that check their own logs ([`captured_logs`]),
/// and, when `TEST_CAPTURE_DIR` is set (`make test` sets it), in a file
/// there too, which `tests/leak_scan.py` then reads with every recorded
/// response body ([`record_response`]) for secrets and payload values.
#[ctor::ctor(unsafe)]
fn capture_logs() {
    let file = capture_file("logs");
    let writer = move || CaptureWriter(file.clone());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(writer)
        .try_init();
}

static CAPTURED_LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// What the code under test has logged in this test binary so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED_LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
}

type CaptureFile = Option<std::sync::Arc<std::sync::Mutex<std::fs::File>>>;

/// This binary's file of `kind` in `TEST_CAPTURE_DIR`, if set.
fn capture_file(kind: &str) -> CaptureFile {
    let dir = PathBuf::from(std::env::var_os("TEST_CAPTURE_DIR")?);
    std::fs::create_dir_all(&dir).ok()?;
    let binary = std::env::current_exe().ok()?.file_stem()?.to_string_lossy().into_owned();
    let path = dir.join(format!("{kind}-{binary}-{}.jsonl", std::process::id()));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).ok()?;
    Some(std::sync::Arc::new(std::sync::Mutex::new(file)))
}

struct CaptureWriter(CaptureFile);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURED_LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        if let Some(file) = &self.0 {
            file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HTTP response's status and body as JSON (`null` if it is not), the
/// body kept for `tests/leak_scan.py`.
pub async fn read_response(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    record_response(&body);
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Keeps a response body the tests received, for `tests/leak_scan.py`.
pub fn record_response(body: &str) {
    static RESPONSES: OnceLock<CaptureFile> = OnceLock::new();
    if let Some(file) = RESPONSES.get_or_init(|| capture_file("responses")) {
        let line = format!("{}\n", serde_json::json!({ "body": body }));
        let _ = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write_all(line.as_bytes());
    }
}

/// A running `nectar-webhooks serve`, on the port it reported.
pub struct Serve {
    pub port: u16,
    child: std::process::Child,
    copier: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Starts `command` (a `nectar-webhooks serve` with its settings) on a
    /// port the system picks, and returns once it listens. Picking a free
    /// port first and passing it in would race any other process that binds
    /// one meanwhile (other test binaries, builds): the tests would then talk
    /// to the wrong server. Standard error is read for the `listening:` line
    /// and copied on to `log`, if given.
    pub fn start(command: &mut Command, log: Option<PathBuf>) -> Self {
        use std::io::BufRead as _;
        const LISTENING: &str = "listening: POST http://127.0.0.1:";
        if !command.get_envs().any(|(name, _)| name == "DATA_DIR") {
            // A store of its own: the default directory is the user's, shared by every serve.
            command.env("DATA_DIR", std::env::temp_dir().join(unique_name("serve-data")));
        }
        let mut child = command.args(["--addr", "127.0.0.1:0"]).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (bound, port) = std::sync::mpsc::channel();
        let copier = std::thread::spawn(move || {
            let mut copy = log.map(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap());
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find(LISTENING) {
                    let digits: String =
                        line[at + LISTENING.len()..].chars().take_while(char::is_ascii_digit).collect();
                    let _ = bound.send(digits.parse::<u16>().unwrap());
                }
                if let Some(file) = copy.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        let port = port.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("serve did not say where it listens within 30 s")
        });
        Self { port, child, copier: Some(copier) }
    }

    /// Kills the server, and returns once everything it logged is copied.
    pub fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        if let Some(copier) = self.copier.take() {
            copier.join().unwrap();
        }
    }
}

/// The sample secret that `events/` and `env.json` are signed with.
pub const SAMPLE_SECRET: &str = "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=";

/// The endpoint of this test binary's moto server, started on first use.
pub fn moto_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(start_moto)
}

fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() { venv } else { PathBuf::from("moto_server") }
}

/// Starts moto on a loopback port it picks, read from its own output (a
/// port picked free first and released would race anything that binds one
/// meanwhile, an outgoing connection included). A shell watchdog ends it
/// when this test process ends, however it ends.
fn start_moto() -> String {
    use std::io::BufRead as _;
    let server = moto_server_path();
    let script = format!(
        "\"$0\" -H 127.0.0.1 -p 0 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill $m",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {} (run `make test`, which installs it): {err}", server.display()));
    let output = watchdog.stdout.take().unwrap();
    let (found, port) = std::sync::mpsc::channel();
    // Reads moto's output for as long as it runs, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(port) = line.split("Running on http://127.0.0.1:").nth(1) {
                let _ = found.send(port.trim().to_owned());
            }
        }
        let _ = watchdog.wait();
    });
    let port = port
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("moto_server ({}) did not start within 60 s", server.display()));
    format!("http://127.0.0.1:{port}")
}

/// An SQS client for `endpoint` with test credentials and the production
/// time limits and retries.
pub fn sqs_client_for(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(test_credentials())
        .timeout_config(nectar_webhooks::adapters::aws::timeouts())
        .retry_config(nectar_webhooks::adapters::aws::retries())
        .build();
    Client::from_conf(config)
}

/// An SQS client for the moto server.
pub fn sqs_client() -> Client {
    sqs_client_for(moto_endpoint())
}

fn test_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "tests")
}

/// A DynamoDB client for the moto server.
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An EventBridge client for the moto server.
pub fn eventbridge_client() -> aws_sdk_eventbridge::Client {
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_eventbridge::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_eventbridge::Client::from_conf(config)
}

/// A fresh idempotency table as the template defines it; returns its name.
pub async fn create_idempotency_table(client: &aws_sdk_dynamodb::Client) -> String {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let name = unique_name("idempotency");
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("key")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("key").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

/// The ARN of a queue.
pub async fn queue_arn(client: &Client, queue_url: &str) -> String {
    client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

/// A fresh, uniquely named queue; returns its URL.
pub async fn create_queue(client: &Client, prefix: &str) -> String {
    create_queue_with(client, prefix, &[]).await
}

pub async fn create_queue_with(client: &Client, prefix: &str, attributes: &[(QueueAttributeName, String)]) -> String {
    let fifo = attributes.iter().any(|(key, value)| *key == QueueAttributeName::FifoQueue && value == "true");
    let name = if fifo { format!("{}.fifo", unique_name(prefix)) } else { unique_name(prefix) };
    let mut request = client.create_queue().queue_name(name);
    for (key, value) in attributes {
        request = request.attributes(key.clone(), value);
    }
    request.send().await.unwrap().queue_url.unwrap()
}

/// A queue with a dead-letter queue after `max_receives`; returns (queue, dlq).
pub async fn create_queue_with_dlq(client: &Client, prefix: &str, max_receives: u32) -> (String, String) {
    let dlq = create_queue(client, &format!("{prefix}-dlq")).await;
    let dlq_arn = queue_arn(client, &dlq).await;
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
    let queue = create_queue_with(
        client,
        prefix,
        &[(QueueAttributeName::RedrivePolicy, policy), (QueueAttributeName::VisibilityTimeout, "0".into())],
    )
    .await;
    (queue, dlq)
}

pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Every message now on a queue (received, then deleted), polling until
/// `expected` arrived or a few seconds passed.
pub async fn drain(client: &Client, queue_url: &str, expected: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let output = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .wait_time_seconds(if messages.len() >= expected { 0 } else { 1 })
            .send()
            .await
            .unwrap();
        let batch = output.messages.unwrap_or_default();
        if batch.is_empty() && messages.len() >= expected {
            break;
        }
        for message in &batch {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        messages.extend(batch);
    }
    messages
}

/// The complete JSON lines of a `file:` destination (none if it does not
/// exist yet). The router may be half-way through appending a line, large
/// ones in several writes, so a last line without its newline is not read:
/// it is still being written.
pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(path).unwrap_or_default();
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(&[][..], |end| &text[..=end]);
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .unwrap_or_else(|err| panic!("{}: a complete line is not JSON: {err}", path.display()))
        })
        .collect()
}

/// The string value of a message attribute.
pub fn attribute<'m>(message: &'m aws_sdk_sqs::types::Message, name: &str) -> Option<&'m str> {
    message.message_attributes()?.get(name)?.string_value()
}

/// Svix's three headers for `body`, signed with `secret` at `timestamp`.
pub fn svix_headers(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("svix-id", id.to_owned()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", sign(secret, id, timestamp, body).unwrap()),
    ]
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The project's top folder.
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How [`FaultyProxy`] treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream.
    None,
    /// Accept, then close at once: the service is down.
    Refuse,
    /// Accept and never answer: the service hangs.
    Stall,
}

/// A loopback TCP proxy in front of a real server that can be told to fail.
/// Switching to a fault also cuts the connections already open, so pooled
/// connections fail too.
pub struct FaultyProxy {
    pub addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<Fault>,
}

impl FaultyProxy {
    /// Proxies to `upstream` (`http://host:port`); runs on the current tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let upstream: std::net::SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = tokio::sync::watch::channel(Fault::None);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watcher = watcher.clone();
                tokio::spawn(async move {
                    let fault = *watcher.borrow_and_update();
                    match fault {
                        Fault::Refuse => drop(inbound),
                        Fault::Stall => {
                            let _ = tokio::time::timeout(Duration::from_secs(60), watcher.changed()).await;
                        }
                        Fault::None => {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watcher.wait_for(|fault| *fault != Fault::None) => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, mode }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }
}

/// A Secrets Manager client for the moto server.
pub fn secretsmanager_client() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// An S3 client for the moto server (path-style addressing, as moto needs).
pub fn s3_client() -> aws_sdk_s3::Client {
    s3_client_for(moto_endpoint())
}

/// An S3 client for an S3-compatible server at `endpoint`.
pub fn s3_client_for(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// What Lambda's SQS event source does: receive a batch, invoke, delete
/// what the function did not report as failed.
pub async fn event_source_round<S: nectar_webhooks::core::dedup::SeenStore>(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    handler: &nectar_webhooks::adapters::lambda_router::SqsBatchHandler<
        nectar_webhooks::adapters::destinations::Destinations,
        S,
    >,
) -> usize {
    let received = client
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let records: Vec<serde_json::Value> = received
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), serde_json::json!({"stringValue": v.string_value(), "dataType": "String"})))
                .collect();
            let system: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), serde_json::json!(v)))
                .collect();
            serde_json::json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                   "attributes": system, "messageAttributes": attributes})
        })
        .collect();
    let event = serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    let response = handler.handle(event).await;
    let failed: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    for message in &received {
        let receipt = message.receipt_handle().unwrap();
        if failed.iter().any(|f| Some(f.as_str()) == message.message_id()) {
            // The visibility timeout runs out at once: the record is back for the next round.
            client
                .change_message_visibility()
                .queue_url(queue)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            client.delete_message().queue_url(queue).receipt_handle(receipt).send().await.unwrap();
        }
    }
    received.len()
}

/// A Firehose client for the moto server.
pub fn firehose_client() -> aws_sdk_firehose::Client {
    let config = aws_sdk_firehose::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_firehose::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_firehose::Client::from_conf(config)
}

/// A bucket and a Firehose stream writing into it under `archive/`, with
/// `template.yaml`'s prefix (moto writes at once, unexpanded); returns both.
pub async fn create_archive_stream(s3: &aws_sdk_s3::Client) -> (String, String) {
    use aws_sdk_firehose::types::{CompressionFormat, ExtendedS3DestinationConfiguration};
    let bucket = unique_name("archive").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let stream = unique_name("archive-stream");
    let destination = ExtendedS3DestinationConfiguration::builder()
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .role_arn("arn:aws:iam::123456789012:role/firehose")
        .prefix("archive/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/")
        .compression_format(CompressionFormat::Gzip)
        .build()
        .unwrap();
    firehose_client()
        .create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(destination)
        .send()
        .await
        .unwrap();
    (bucket, stream)
}
