//! The `nectar-webhooks` command: local mode, and tools to sign and send
//! webhooks the way Svix does.

pub mod drift;
pub mod lambda_events;
pub mod redrive;
pub mod replay;

use crate::adapters::archive::dir::ArchiveDir;
use crate::adapters::aws::{self, ErrorChain};
use crate::adapters::destinations::{Check, Destinations};
use crate::adapters::local::payload_dir::PayloadDir;
use crate::adapters::local::{self, LocalConfig};
use crate::adapters::payloads::S3PayloadStore;
use crate::adapters::sqs;
use crate::config::{self, ConfigError, IngestConfig};
use crate::core::archive::Archive;
use crate::core::claim_check::PayloadStore;
use crate::core::clock::{Clock, SystemClock};
use crate::core::routing::{Destination, RouteTable};
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
    /// Run ingest and router in one process (configured from the environment: see below).
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
        /// Read the route table from this file instead of ROUTES.
        #[arg(long, value_name = "FILE")]
        routes: Option<PathBuf>,
        /// Where the embedded queue keeps its store [env: DATA_DIR; default:
        /// $XDG_DATA_HOME/nectar-webhooks or ~/.local/share/nectar-webhooks].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Archive every verified webhook into this directory, in the deployed
        /// archive's format, for `replay` and `drift` [env: ARCHIVE_DIR].
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
    },
    /// Sign payload files like Svix and POST them to a URL; prints each status.
    Send {
        /// Where to send, e.g. http://127.0.0.1:3000/webhooks/nectar
        #[arg(long)]
        url: String,
        #[command(flatten)]
        secret: SecretArgs,
        /// Webhook id; by default a fresh one per file.
        #[arg(long)]
        id: Option<String>,
        /// Payload files (JSON as Nectar sends it).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a signed webhook as headers or as a Lambda event (for `sam local invoke`).
    Sign {
        #[command(flatten)]
        secret: SecretArgs,
        /// Webhook id; by default derived from the file name.
        #[arg(long)]
        id: Option<String>,
        /// Unix timestamp to sign; by default now.
        #[arg(long)]
        timestamp: Option<i64>,
        /// What to print: the three Svix headers, or a whole event to invoke a
        /// Lambda with (`sam local invoke -e`): API Gateway HTTP (apigw-v2) or
        /// REST (apigw-v1), a function URL's, or the router's SQS batch.
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
    /// Re-deliver a window of the archive to a route or a destination, once per replay id.
    Replay(Box<replay::Args>),
    /// Compare the archive's payloads with the typed models; exit 1 on unknown, missing or retyped fields.
    Drift(drift::Args),
}

/// Every variable `serve` reads, for `serve --help`: a newcomer configures
/// it from the environment alone, so the help must name them all
/// (`tests/cli.rs` checks it against `config.rs`).
const SERVE_ENVIRONMENT: &str = "\
Environment:
  WEBHOOK_SECRET           Required. The endpoint's signing secret (whsec_...) from the Svix
                           portal, or for local use one from `nectar-webhooks secret`; during a
                           rotation several, separated by spaces
  ROUTES                   The route table, e.g. 'document.*=stdout;*=file:/tmp/all.jsonl'
                           (default: everything to stdout); --routes FILE reads it from a file
  QUEUE_URL                An SQS queue to use instead of the embedded in-memory one (needs AWS
                           credentials; checked with GetQueueAttributes before listening)
  CLAIM_CHECK_BUCKET       With QUEUE_URL: the S3 bucket for payloads too large for a message
  LOCAL_PAYLOAD_DIR        Otherwise the directory for them (default: nectar-webhooks-payloads in
                           the system's temporary directory)
  ARCHIVE_DIR              Archive every verified webhook into this directory (as --archive-dir)
  MAX_BODY_BYTES           Largest accepted body (default: what a Lambda event can carry, ~3 MB)
  MAX_QUEUE_MESSAGE_BYTES  Largest queue message (default 1048576, SQS's limit)
  WEBHOOK_TOLERANCE_SECS   Signature timestamp tolerance in seconds (default 300; more only with
                           AWS_SAM_LOCAL=true, to replay old samples)
  NECTOR_WEBHOOK_SECRET    Nector's shared secret; enables /webhooks/nector
  TLS_SYSTEM_ROOTS         true: also trust the system's CA bundle for AWS endpoints
  AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...
                           As the AWS SDKs read them, for SQS, EventBridge and S3
  RUST_LOG                 Log filter (default info,nectar_webhooks=debug: a line per
                           webhook); NO_COLOR=1 turns colour off";

/// Where `send` and `sign` get the signing secret: `--secret-file`, else
/// `--secret`, else `WEBHOOK_SECRET`.
#[derive(Debug, clap::Args)]
struct SecretArgs {
    /// Read the signing secret (whsec_…; several separated by spaces sign
    /// once with each, as Svix does during a rotation) from this file, `-`
    /// for standard input. By default it comes from WEBHOOK_SECRET.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// The signing secret itself. It shows in process listings and shell
    /// history: prefer WEBHOOK_SECRET or --secret-file.
    #[arg(long, value_name = "WHSEC", conflicts_with = "secret_file")]
    secret: Option<String>,
}

impl SecretArgs {
    /// The secret, checked: errors name where it came from.
    fn read(self) -> Result<String, String> {
        let (value, origin) = match (self.secret_file, self.secret) {
            (Some(path), _) => {
                let origin = format!("--secret-file {}", path.display());
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(&path)
                };
                (text.map_err(|e| format!("{origin}: {e}"))?, origin)
            }
            (None, Some(secret)) => {
                eprintln!(
                    "nectar-webhooks: warning: --secret shows the secret in process listings and shell history; set {} or use --secret-file instead",
                    config::WEBHOOK_SECRET
                );
                (secret, "--secret".to_owned())
            }
            (None, None) => {
                let secret = std::env::var(config::WEBHOOK_SECRET).map_err(|_| {
                    format!(
                        "no signing secret: set {} to {}, or pass --secret-file PATH",
                        config::WEBHOOK_SECRET,
                        config::WEBHOOK_SECRET_SOURCE
                    )
                })?;
                (secret, config::WEBHOOK_SECRET.to_owned())
            }
        };
        // Checked before any file is read or sent.
        sign(&value, "msg_check", 0, b"").map_err(|e| format!("{origin}: {e}"))?;
        Ok(value)
    }
}

impl Cli {
    pub async fn run(self) -> ExitCode {
        let outcome = match self.command {
            Command::Drift(args) => return drift::run(args).await,
            Command::Serve { addr, routes, data_dir, archive_dir } => serve(&addr, routes, data_dir, archive_dir).await,
            Command::Send { url, secret, id, files } => match secret.read() {
                Ok(secret) => send(&url, &secret, id.as_deref(), &files).await,
                Err(err) => Err(err),
            },
            Command::Sign { secret, id, timestamp, format, source, base64_body, files } => {
                let options = SignOptions { id, timestamp, format, source, base64_body };
                secret.read().and_then(|secret| print_signed(&secret, &options, &files))
            }
            Command::Secret => new_secret().map(|secret| println!("{secret}")),
            Command::Redrive(args) => redrive::run(args).await,
            Command::Replay(args) => replay::run(*args).await,
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

async fn serve(
    addr: &str,
    routes_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    archive_dir: Option<PathBuf>,
) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    let ingest = IngestConfig::for_local_mode(env).map_err(|err| {
        let fix = match err {
            ConfigError::Missing(name) if name == config::WEBHOOK_SECRET => {
                format!(": set it to {}", config::WEBHOOK_SECRET_SOURCE)
            }
            _ => String::new(),
        };
        format!("{err}{fix} (`nectar-webhooks serve --help` lists every variable serve reads)")
    })?;
    let payload_dir = config::local_payload_dir(env);
    let routes_origin =
        routes_file.as_ref().map_or_else(|| config::ROUTES.to_owned(), |p| format!("--routes {}", p.display()));
    let routes = match routes_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--routes {}: {e}", path.display()))?;
            RouteTable::parse(&text).map_err(|e| format!("--routes {}: {e}", path.display()))?
        }
        None => config::routes_from_env().map_err(|e| e.to_string())?,
    };
    let queue_url = env(config::QUEUE_URL).filter(|u| !u.is_empty());
    let data_dir = data_dir.unwrap_or_else(|| config::local_data_dir(env));
    let archive_dir =
        archive_dir.or_else(|| env(config::ARCHIVE_DIR).filter(|d| !d.trim().is_empty()).map(PathBuf::from));
    let archive = match &archive_dir {
        Some(dir) => Some(Arc::new(ArchiveDir::open(dir).map_err(|e| {
            format!(
                "archive directory {}: {e} (--archive-dir or {} must be a directory you can write)",
                dir.display(),
                config::ARCHIVE_DIR
            )
        })?) as Arc<dyn Archive>),
        None => None,
    };
    let config = LocalConfig { ingest, routes, queue_url, data_dir, archive };
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
    if let (Some(client), Some(url)) = (&sqs_client, &config.queue_url) {
        check_queue(client, url).await?;
    }
    destinations
        .check(&config.routes, Check::Reachable)
        .await
        .map_err(|err| format!("{routes_origin}: a destination cannot be reached, so nothing was started:\n{err}"))?;
    let (payloads, payloads_at) = payload_store(&config, sdk.as_ref(), &payload_dir)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let queue = config.queue_url.clone().unwrap_or_else(|| format!("embedded ({})", config.data_dir.display()));
    let archive = archive_dir.map_or_else(|| "off".to_owned(), |dir| dir.display().to_string());
    tracing::info!(%bound, queue, large_payloads = payloads_at, archive, "listening: POST http://{bound}/webhooks/nectar");
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down: new requests get 503; finishing what is in flight");
    };
    local::run_with_payloads(config, sqs_client, destinations, payloads, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// One `GetQueueAttributes` on [`config::QUEUE_URL`] before listening:
/// without it, missing credentials or a mistyped URL would answer every
/// webhook 503 and leave the poller failing until stopped.
async fn check_queue(client: &aws_sdk_sqs::Client, url: &str) -> Result<(), String> {
    sqs::reach(client, url).await.map_err(|err| {
        let queue = config::QUEUE_URL;
        let cause = aws::short_cause(&err);
        let fix = if cause == aws::NO_CREDENTIALS {
            String::new()
        } else {
            format!("; check {queue}, AWS_REGION and (for moto or LocalStack) AWS_ENDPOINT_URL")
        };
        format!(
            "{queue}={url}: the queue cannot be reached, so nothing was started (GetQueueAttributes failed: {cause}){fix}; or unset {queue} to use the embedded queue"
        )
    })
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

/// Sends every file, going on past failures; every file is read first, so a
/// mistyped name stops the command before anything is sent. Ends with a
/// summary line, and fails if any file was not accepted.
async fn send(url: &str, secret: &str, id: Option<&str>, files: &[PathBuf]) -> Result<(), String> {
    let expected = "expected e.g. http://127.0.0.1:3000/webhooks/nectar";
    let target = reqwest::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}; {expected}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!("--url {url:?}: no http:// or https://; {expected}"));
    }
    let (bodies, unreadable): (Vec<_>, Vec<_>) = files
        .iter()
        .map(|file| std::fs::read(file).map_err(|e| format!("{}: {e}", file.display())))
        .partition(Result::is_ok);
    if !unreadable.is_empty() {
        let unreadable: Vec<String> = unreadable.into_iter().filter_map(Result::err).collect();
        return Err(format!("nothing sent; cannot read {}", unreadable.join(", ")));
    }
    let client =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(15)).build().map_err(|e| e.to_string())?;
    let mut accepted = 0;
    for (index, (file, body)) in files.iter().zip(bodies.into_iter().flatten()).enumerate() {
        let id = id.map_or_else(|| fresh_id(index), str::to_owned);
        let timestamp = SystemClock.now_unix();
        let signature = sign(secret, &id, timestamp, &body).map_err(|e| format!("signing secret: {e}"))?;
        let response = client
            .post(target.clone())
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
                accepted += usize::from(status.is_success());
            }
            Err(err) => println!("ERR {} {id} {}", file.display(), ErrorChain(&err)),
        }
    }
    let failed = files.len() - accepted;
    println!("sent {}, 2xx {accepted}, failed {failed}", files.len());
    if failed == 0 { Ok(()) } else { Err(format!("{failed} of {} not accepted", files.len())) }
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
        let signature = sign(secret, &id, timestamp, &body).map_err(|e| format!("signing secret: {e}"))?;
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

/// What a Lambda bootstrap (`ingest`, `router`) does when run by hand: with
/// `--help` or `-h`, or outside Lambda (no `AWS_LAMBDA_RUNTIME_API`, which
/// the runtime sets), it says in one line what it is and points at local
/// mode, rather than letting `lambda_runtime` panic on a missing variable.
/// `None` inside Lambda: go on.
pub fn outside_lambda(binary: &str, role: &str) -> Option<ExitCode> {
    let help = std::env::args().skip(1).any(|arg| arg == "--help" || arg == "-h");
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty());
    if !help && in_lambda {
        return None;
    }
    let usage = format!(
        "Usage: {binary} (the {role} Lambda's bootstrap; it runs only inside AWS Lambda, which sets AWS_LAMBDA_RUNTIME_API). To run it locally: nectar-webhooks serve (see README.md, Local mode)."
    );
    if help {
        println!("{usage}");
        Some(ExitCode::SUCCESS)
    } else {
        eprintln!("{usage}");
        Some(ExitCode::from(2))
    }
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
