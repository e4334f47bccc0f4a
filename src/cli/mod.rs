//! The `nectar-webhooks` command: local mode, and tools to sign and send
//! webhooks the way Svix does.

pub mod lambda_events;
pub mod redrive;

use crate::adapters::aws;
use crate::adapters::destinations::Destinations;
use crate::adapters::local::payload_dir::PayloadDir;
use crate::adapters::local::{self, LocalConfig};
use crate::adapters::payloads::S3PayloadStore;
use crate::config::{self, IngestConfig};
use crate::core::claim_check::PayloadStore;
use crate::core::clock::{Clock, SystemClock};
use crate::core::routing::Destination;
use crate::core::verification::svix::sign;
use clap::{Parser, Subcommand};
use lambda_events::{Format, Signed};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "nectar-webhooks", version, about = "Receive Nectar's Svix webhooks: verify, queue, route.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run ingest and router in one process (WEBHOOK_SECRET, ROUTES, QUEUE_URL from the environment).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
        /// Read the route table from this file instead of ROUTES.
        #[arg(long)]
        routes: Option<PathBuf>,
        /// Where the embedded queue keeps its store [env: DATA_DIR; default:
        /// $XDG_DATA_HOME/nectar-webhooks or ~/.local/share/nectar-webhooks].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Sign payload files like Svix and POST them to a URL; prints each status.
    Send {
        /// Where to send, e.g. http://127.0.0.1:3000/webhooks/nectar
        #[arg(long)]
        url: String,
        /// The endpoint's signing secret (whsec_…).
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Webhook id; by default a fresh one per file.
        #[arg(long)]
        id: Option<String>,
        /// Payload files (JSON as Nectar sends it).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a signed webhook as headers or as a Lambda event (for `sam local invoke`).
    Sign {
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Webhook id; by default derived from the file name.
        #[arg(long)]
        id: Option<String>,
        /// Unix timestamp to sign; by default now.
        #[arg(long)]
        timestamp: Option<i64>,
        #[arg(long, value_enum, default_value = "headers")]
        format: Format,
        /// Source name in the path (/webhooks/SOURCE).
        #[arg(long, default_value = "nectar")]
        source: String,
        /// Encode the body as base64, as API Gateway does for binary media types.
        #[arg(long)]
        base64_body: bool,
        /// Payload files; several only with --format sqs (one batch).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a new random signing secret, for local use.
    Secret,
    /// Move a dead-letter queue's messages back to their source queue (SQS message-move task, or --copy).
    Redrive(redrive::Args),
}

impl Cli {
    pub async fn run(self) -> ExitCode {
        let outcome = match self.command {
            Command::Serve { addr, routes, data_dir } => serve(&addr, routes, data_dir).await,
            Command::Send { url, secret, id, files } => send(&url, &secret, id.as_deref(), &files).await,
            Command::Sign { secret, id, timestamp, format, source, base64_body, files } => {
                let options = SignOptions { id, timestamp, format, source, base64_body };
                print_signed(&secret, &options, &files)
            }
            Command::Secret => new_secret().map(|secret| println!("{secret}")),
            Command::Redrive(args) => redrive::run(args).await,
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("nectar-webhooks: {message}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(addr: &str, routes_file: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    let ingest = IngestConfig::for_local_mode(env).map_err(|e| e.to_string())?;
    let payload_dir = config::local_payload_dir(env);
    let routes = match routes_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--routes {}: {e}", path.display()))?;
            config::routes_from_text("--routes", &text)
        }
        None => config::routes_from_env(),
    }
    .map_err(|e| e.to_string())?;
    let queue_url = env(config::QUEUE_URL).filter(|u| !u.is_empty());
    let data_dir = data_dir.unwrap_or_else(|| config::local_data_dir(env));
    let config = LocalConfig { ingest, routes, queue_url, data_dir };
    let needs_eventbridge = config.routes.destinations().any(|d| matches!(d, Destination::EventBridge(_)));
    let sdk = if config.needs_sqs() || needs_eventbridge {
        Some(aws::sdk_config().await.map_err(|err| err.to_string())?)
    } else {
        None
    };
    let sqs_client = sdk.as_ref().filter(|_| config.needs_sqs()).map(aws_sdk_sqs::Client::new);
    let mut destinations = Destinations::default();
    if let Some(client) = &sqs_client {
        destinations = destinations.with_sqs(client.clone());
    }
    if let Some(sdk) = sdk.as_ref().filter(|_| needs_eventbridge) {
        destinations = destinations.with_eventbridge(aws_sdk_eventbridge::Client::new(sdk));
    }
    let (payloads, payloads_at) = payload_store(&config, sdk.as_ref(), &payload_dir)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let queue = config.queue_url.clone().unwrap_or_else(|| format!("embedded ({})", config.data_dir.display()));
    tracing::info!(%bound, queue, large_payloads = payloads_at, "listening: POST http://{bound}/webhooks/nectar");
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down: new requests get 503; finishing what is in flight");
    };
    local::run_with_payloads(config, sqs_client, destinations, payloads, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Ctrl-C or SIGTERM (what a service manager or `docker stop` sends).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Where large payloads go, and where that is for the log: S3 as the Lambdas
/// use it with a real queue and a bucket, else a local directory.
fn payload_store(
    config: &LocalConfig,
    sdk: Option<&aws_config::SdkConfig>,
    dir: &std::path::Path,
) -> Result<(Arc<dyn PayloadStore>, String), String> {
    // A bucket comes with a queue URL, so with an SDK configuration.
    if let (Some(bucket), Some(sdk)) = (config.claim_check_bucket(), sdk) {
        let store = S3PayloadStore::new(aws_sdk_s3::Client::new(sdk), bucket);
        return Ok((Arc::new(store), format!("s3://{bucket}")));
    }
    if config.ingest.claim_check_bucket.is_some() {
        tracing::warn!(
            "{} applies with {} only; the embedded queue keeps large payloads in a local directory",
            config::CLAIM_CHECK_BUCKET,
            config::QUEUE_URL
        );
    }
    let store = PayloadDir::open(dir, local::PAYLOAD_TTL).map_err(|e| e.to_string())?;
    let at = store.path().display().to_string();
    Ok((Arc::new(store), at))
}

async fn send(url: &str, secret: &str, id: Option<&str>, files: &[PathBuf]) -> Result<(), String> {
    let client =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(15)).build().map_err(|e| e.to_string())?;
    let mut failures = 0;
    for (index, file) in files.iter().enumerate() {
        let body = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let id = id.map_or_else(|| fresh_id(index), str::to_owned);
        let timestamp = SystemClock.now_unix();
        let signature = sign(secret, &id, timestamp, &body).map_err(|e| format!("--secret: {e}"))?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("svix-id", &id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                println!("{} {} {id} {}", status.as_u16(), file.display(), text.trim());
                failures += usize::from(!status.is_success());
            }
            Err(err) => {
                println!("ERR {} {id} {err}", file.display());
                failures += 1;
            }
        }
    }
    if failures == 0 { Ok(()) } else { Err(format!("{failures} of {} not accepted", files.len())) }
}

struct SignOptions {
    id: Option<String>,
    timestamp: Option<i64>,
    format: Format,
    source: String,
    base64_body: bool,
}

fn print_signed(secret: &str, options: &SignOptions, files: &[PathBuf]) -> Result<(), String> {
    if files.len() > 1 && options.format != Format::Sqs {
        return Err("several files only with --format sqs".into());
    }
    let timestamp = options.timestamp.unwrap_or_else(|| SystemClock.now_unix());
    let mut records = Vec::new();
    for file in files {
        let body = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().replace('.', "_")).unwrap_or_default();
        let id = options.id.clone().unwrap_or_else(|| format!("msg_sample_{stem}"));
        let signature = sign(secret, &id, timestamp, &body).map_err(|e| format!("--secret: {e}"))?;
        let signed = Signed {
            source: &options.source,
            id: &id,
            timestamp,
            signature: &signature,
            body: &body,
            base64_body: options.base64_body,
        };
        let event = match options.format {
            Format::Headers => {
                println!("svix-id: {id}\nsvix-timestamp: {timestamp}\nsvix-signature: {signature}");
                return Ok(());
            }
            Format::ApigwV2 => signed.http_v2(false),
            Format::FunctionUrl => signed.http_v2(true),
            Format::ApigwV1 => signed.rest_v1(),
            Format::Sqs => {
                records.push(signed.sqs_record());
                continue;
            }
        };
        println!("{}", serde_json::to_string_pretty(&event).expect("JSON values serialise"));
    }
    if options.format == Format::Sqs {
        let batch = serde_json::json!({ "Records": records });
        println!("{}", serde_json::to_string_pretty(&batch).expect("JSON values serialise"));
    }
    Ok(())
}

/// A webhook id unlikely to repeat: time in nanoseconds, process id, index.
fn fresh_id(index: usize) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("msg_local_{nanos:x}_{:x}_{index}", std::process::id())
}

/// 24 random bytes from the OS, as Svix's secrets have.
fn new_secret() -> Result<String, String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut key = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)))
}
