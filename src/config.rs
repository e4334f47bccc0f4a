//! Configuration, read once from the environment at start-up and validated
//! with messages that name the variable at fault (never its secret value).

use crate::core::dedup::DEFAULT_TTL;
use crate::core::ingest::Limits;
use crate::core::routing::{RouteError, RouteTable};
use crate::core::sources::{NectorSource, Sources, SvixSource};
use crate::core::verification::nector::NectorVerifier;
use crate::core::verification::svix::{DEFAULT_TOLERANCE_SECS, SecretError, SigningSecrets, SvixVerifier};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The signing secrets: one or more `whsec_…`, separated by spaces.
pub const WEBHOOK_SECRET: &str = "WEBHOOK_SECRET";
/// Where [`WEBHOOK_SECRET`]'s value comes from, for messages about it.
pub const WEBHOOK_SECRET_SOURCE: &str =
    "the endpoint's signing secret (whsec_…) from the Svix portal, or for local use one from `nectar-webhooks secret`";
/// The ARN of a Secrets Manager secret holding `WEBHOOK_SECRET`'s value:
/// how the deployed ingest gets it (read once at cold start).
pub const WEBHOOK_SECRET_ARN: &str = "WEBHOOK_SECRET_ARN";
/// Nector's shared webhook secret; enables `/webhooks/nector` when set.
pub const NECTOR_WEBHOOK_SECRET: &str = "NECTOR_WEBHOOK_SECRET";
/// The ingest queue's URL.
pub const QUEUE_URL: &str = "QUEUE_URL";
/// The route table (see [`crate::core::routing`]).
pub const ROUTES: &str = "ROUTES";
/// Largest accepted body, in bytes.
pub const MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
/// Largest queue message, in bytes (SQS's limit, 1048576, by default).
pub const MAX_QUEUE_MESSAGE_BYTES: &str = "MAX_QUEUE_MESSAGE_BYTES";
/// Timestamp tolerance in seconds; above 300 only for local invocation.
pub const WEBHOOK_TOLERANCE_SECS: &str = "WEBHOOK_TOLERANCE_SECS";
/// The DynamoDB table that makes delivery once-per-destination durable.
pub const IDEMPOTENCY_TABLE: &str = "IDEMPOTENCY_TABLE";
/// How long deliveries are remembered, in whole days (default 35): also the
/// age past which the router refuses a webhook rather than risk delivering
/// it twice. At least 29: a message can spend 14 days in the ingest queue and
/// 14 more in the dead-letter queue before it is re-sent.
pub const IDEMPOTENCY_TTL_DAYS: &str = "IDEMPOTENCY_TTL_DAYS";
/// The router's dead-letter queue: records that failed `MAX_RECEIVE_COUNT`
/// times are moved there with the reason attached.
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
/// Receives after which a failing record is dead-lettered (the queue's `maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: &str = "MAX_RECEIVE_COUNT";
/// The S3 bucket for payloads too large for a queue message (claim checks).
pub const CLAIM_CHECK_BUCKET: &str = "CLAIM_CHECK_BUCKET";
/// The router's archive: the Amazon Data Firehose stream every verified
/// webhook is written to (unset: no archive).
pub const ARCHIVE_STREAM: &str = "ARCHIVE_STREAM";
/// Local mode's archive: the directory every verified webhook is written to
/// (`serve --archive-dir`; unset: no archive).
pub const ARCHIVE_DIR: &str = "ARCHIVE_DIR";
/// What a synchronous Lambda invocation carries at most: the whole event,
/// in which the body is JSON-escaped (or base64-encoded), not the body alone.
pub const LAMBDA_EVENT_LIMIT: usize = 6_291_456;
/// Room in the event for everything but the body: the headers (twice in a
/// REST API event, as `headers` and `multiValueHeaders`) and the request
/// context.
pub const LAMBDA_EVENT_OVERHEAD: usize = 64 * 1024;
/// The default largest body with somewhere to put large payloads: the
/// largest any JSON body can be and still reach ingest through every entry
/// point. API Gateway and function URLs put a JSON body into the event as a
/// JSON string, which escapes each `"` and `\` as two bytes, so a body can
/// double in size (a binary body, base64-encoded, grows by 4/3). Bodies
/// above this get ingest's 413; those whose event is over
/// [`LAMBDA_EVENT_LIMIT`] never reach it and get AWS's own error.
pub const LAMBDA_BODY_LIMIT: usize = (LAMBDA_EVENT_LIMIT - LAMBDA_EVENT_OVERHEAD) / 2;
/// Local mode: the directory for payloads too large for a queue message when
/// they do not go to S3 (see `adapters::local::payload_dir`).
pub const LOCAL_PAYLOAD_DIR: &str = "LOCAL_PAYLOAD_DIR";
/// [`LOCAL_PAYLOAD_DIR`]'s default, in the system's temporary directory.
pub const DEFAULT_LOCAL_PAYLOAD_DIR: &str = "nectar-webhooks-payloads";
/// Local mode: the directory of the embedded queue's store (its queue, dead
/// letters and dedup memory), created private to its owner.
pub const DATA_DIR: &str = "DATA_DIR";
/// [`DATA_DIR`]'s default, in the user's data directory (`$XDG_DATA_HOME`,
/// else `~/.local/share`), or in the working directory without a home.
pub const DEFAULT_DATA_DIR: &str = "nectar-webhooks";
/// Set to `true` by `sam local`; allows a wider timestamp tolerance so
/// committed sample events keep verifying.
pub const AWS_SAM_LOCAL: &str = "AWS_SAM_LOCAL";

/// A variable that is missing or unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{variable}: {reason}")]
    Invalid { variable: &'static str, reason: String },
}

/// Everything ingest needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub secrets: SigningSecrets,
    pub tolerance_secs: u64,
    pub limits: Limits,
    /// The second source, when configured.
    pub nector: Option<NectorVerifier>,
    /// Where payloads too large for a queue message go, if anywhere.
    pub claim_check_bucket: Option<String>,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from any lookup, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(lookup, false)
    }

    /// Local mode's ingest: as [`Self::from_lookup`], but bodies up to
    /// [`LAMBDA_BODY_LIMIT`] by default, bucket or not. Local mode always
    /// has somewhere to put large payloads (S3, or a local directory), so by
    /// default it accepts what the deployed stack accepts.
    pub fn for_local_mode(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(lookup, true)
    }

    /// `payload_store_always`: large payloads have a store even without a bucket.
    fn read(lookup: impl Fn(&str) -> Option<String>, payload_store_always: bool) -> Result<Self, ConfigError> {
        let secret = lookup(WEBHOOK_SECRET).ok_or(ConfigError::Missing(WEBHOOK_SECRET))?;
        let secrets = SigningSecrets::parse(&secret)
            .map_err(|err: SecretError| ConfigError::Invalid { variable: WEBHOOK_SECRET, reason: err.to_string() })?;
        let tolerance_secs = number(&lookup, WEBHOOK_TOLERANCE_SECS, DEFAULT_TOLERANCE_SECS)?;
        let local = lookup(AWS_SAM_LOCAL).as_deref() == Some("true");
        if tolerance_secs > DEFAULT_TOLERANCE_SECS && !local {
            return Err(ConfigError::Invalid {
                variable: WEBHOOK_TOLERANCE_SECS,
                reason: format!(
                    "above {DEFAULT_TOLERANCE_SECS} s only for local invocation ({AWS_SAM_LOCAL}=true); it would let replays in"
                ),
            });
        }
        let claim_check_bucket = lookup(CLAIM_CHECK_BUCKET).filter(|b| !b.trim().is_empty());
        let defaults = Limits::default();
        let default_body = if payload_store_always || claim_check_bucket.is_some() {
            LAMBDA_BODY_LIMIT
        } else {
            defaults.max_body_bytes
        };
        let limits = Limits {
            max_body_bytes: number(&lookup, MAX_BODY_BYTES, default_body)?,
            max_queue_message_bytes: number(&lookup, MAX_QUEUE_MESSAGE_BYTES, defaults.max_queue_message_bytes)?,
        };
        let nector = lookup(NECTOR_WEBHOOK_SECRET).filter(|s| !s.is_empty()).map(|s| NectorVerifier::new(&s));
        Ok(Self { secrets, tolerance_secs, limits, nector, claim_check_bucket })
    }

    /// The webhook sources this configuration enables, by path name.
    pub fn sources(&self) -> Sources {
        let sources = Sources::default()
            .with("nectar", SvixSource::new(SvixVerifier::new(self.secrets.clone(), self.tolerance_secs)));
        match &self.nector {
            Some(verifier) => sources.with("nector", NectorSource::new(verifier.clone())),
            None => sources,
        }
    }
}

/// Everything the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub routes: RouteTable,
    pub idempotency_table: Option<String>,
    pub idempotency_ttl: Duration,
    pub dead_letter_queue_url: Option<String>,
    pub max_receive_count: u32,
    pub claim_check_bucket: Option<String>,
    /// Where every webhook read is archived ([`ARCHIVE_STREAM`]).
    pub archive_stream: Option<String>,
    /// Copies to SQS destinations over this size are claim-checked too.
    pub max_queue_message_bytes: usize,
    /// Invoked locally (`AWS_SAM_LOCAL=true`, set by `sam local` and in
    /// `events/local.env`): the committed samples route whatever their age.
    pub local_invocation: bool,
}

impl RouterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let present = |name| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            routes: routes_from_text(ROUTES, &lookup(ROUTES).unwrap_or_default())?,
            idempotency_table: present(IDEMPOTENCY_TABLE),
            idempotency_ttl: idempotency_ttl(&lookup)?,
            dead_letter_queue_url: present(DEAD_LETTER_QUEUE_URL),
            max_receive_count: number(&lookup, MAX_RECEIVE_COUNT, 5)?,
            claim_check_bucket: present(CLAIM_CHECK_BUCKET),
            archive_stream: present(ARCHIVE_STREAM),
            max_queue_message_bytes: number(
                &lookup,
                MAX_QUEUE_MESSAGE_BYTES,
                Limits::default().max_queue_message_bytes,
            )?,
            local_invocation: lookup(AWS_SAM_LOCAL).as_deref() == Some("true"),
        })
    }
}

/// [`IDEMPOTENCY_TTL_DAYS`] as a duration; zero days would refuse every webhook.
fn idempotency_ttl(lookup: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    const DAY_SECS: u64 = 24 * 3600;
    match number(lookup, IDEMPOTENCY_TTL_DAYS, DEFAULT_TTL.as_secs() / DAY_SECS)? {
        0 => Err(ConfigError::Invalid { variable: IDEMPOTENCY_TTL_DAYS, reason: "must be at least 1 day".into() }),
        days => days
            .checked_mul(DAY_SECS)
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError::Invalid { variable: IDEMPOTENCY_TTL_DAYS, reason: "too large".into() }),
    }
}

/// Local mode's payload directory: [`LOCAL_PAYLOAD_DIR`], else
/// [`DEFAULT_LOCAL_PAYLOAD_DIR`] in the system's temporary directory.
pub fn local_payload_dir(lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
    lookup(LOCAL_PAYLOAD_DIR)
        .filter(|dir| !dir.trim().is_empty())
        .map_or_else(|| std::env::temp_dir().join(DEFAULT_LOCAL_PAYLOAD_DIR), PathBuf::from)
}

/// Local mode's data directory: [`DATA_DIR`], else [`DEFAULT_DATA_DIR`] in
/// `$XDG_DATA_HOME`, else in `$HOME/.local/share`, else `./.nectar-webhooks`.
/// It outlives reboots, unlike the temporary directory.
pub fn local_data_dir(lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty()).map(PathBuf::from);
    set(DATA_DIR)
        .or_else(|| set("XDG_DATA_HOME").map(|data| data.join(DEFAULT_DATA_DIR)))
        .or_else(|| set("HOME").map(|home| home.join(".local/share").join(DEFAULT_DATA_DIR)))
        .unwrap_or_else(|| PathBuf::from(format!(".{DEFAULT_DATA_DIR}")))
}

/// The route table from `ROUTES`; everything to stdout when unset.
pub fn routes_from_env() -> Result<RouteTable, ConfigError> {
    routes_from_text(ROUTES, &std::env::var(ROUTES).unwrap_or_default())
}

/// Parses a route table, naming where it came from in errors.
pub fn routes_from_text(origin: &'static str, text: &str) -> Result<RouteTable, ConfigError> {
    RouteTable::parse(text)
        .map_err(|err: RouteError| ConfigError::Invalid { variable: origin, reason: err.to_string() })
}

/// A variable that must be set.
pub fn required(variable: &'static str) -> Result<String, ConfigError> {
    std::env::var(variable).ok().filter(|v| !v.trim().is_empty()).ok_or(ConfigError::Missing(variable))
}

fn number<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(variable) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid { variable, reason: format!("{text:?} is not a whole number") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        IngestConfig::from_lookup(|name| vars.get(name).cloned())
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn defaults_apply() {
        let config = config(&[(WEBHOOK_SECRET, SECRET)]).unwrap();
        assert_eq!(config.tolerance_secs, 300);
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        assert_eq!(config(&[]).unwrap_err(), ConfigError::Missing(WEBHOOK_SECRET));
        let err = config(&[(WEBHOOK_SECRET, "whsec_not*base64")]).unwrap_err().to_string();
        assert!(err.starts_with("WEBHOOK_SECRET: entry 1"), "{err}");
        assert!(!err.contains("not*base64"), "{err}");
        let err = config(&[(WEBHOOK_SECRET, SECRET), (MAX_BODY_BYTES, "lots")]).unwrap_err();
        assert!(err.to_string().starts_with("MAX_BODY_BYTES"), "{err}");
    }

    #[test]
    fn router_defaults_and_errors() {
        let config = RouterConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.routes, RouteTable::everything_to_stdout());
        assert_eq!((config.idempotency_ttl, config.max_receive_count), (DEFAULT_TTL, 5));
        assert!(config.idempotency_table.is_none() && config.dead_letter_queue_url.is_none());
        assert_eq!(DEFAULT_TTL, Duration::from_secs(35 * 24 * 3600));
        let days = |value: &'static str| {
            RouterConfig::from_lookup(move |name| (name == IDEMPOTENCY_TTL_DAYS).then(|| value.to_owned()))
        };
        assert_eq!(days("29").unwrap().idempotency_ttl, Duration::from_secs(29 * 24 * 3600));
        assert!(days("0").unwrap_err().to_string().starts_with("IDEMPOTENCY_TTL_DAYS: must be at least 1 day"));
        assert!(days("604800s").unwrap_err().to_string().starts_with("IDEMPOTENCY_TTL_DAYS"));
        let err = RouterConfig::from_lookup(|name| (name == ROUTES).then(|| "*=nowhere".to_owned())).unwrap_err();
        assert!(err.to_string().starts_with("ROUTES: line 1: rule \"*=nowhere\": unknown destination"), "{err}");
    }

    #[test]
    fn local_mode_takes_what_a_lambda_can_carry_and_keeps_large_payloads_in_a_directory() {
        let vars: HashMap<&str, &str> = [(WEBHOOK_SECRET, SECRET)].into();
        let local = IngestConfig::for_local_mode(|name| vars.get(name).map(|v| v.to_string())).unwrap();
        assert_eq!(local.limits.max_body_bytes, LAMBDA_BODY_LIMIT);
        assert_eq!(local.limits.max_queue_message_bytes, Limits::default().max_queue_message_bytes);
        let lookup = |name: &str| {
            (name == MAX_BODY_BYTES).then(|| "1024".to_owned()).or_else(|| vars.get(name).map(|v| v.to_string()))
        };
        assert_eq!(IngestConfig::for_local_mode(lookup).unwrap().limits.max_body_bytes, 1024);

        assert_eq!(local_payload_dir(|_| None), std::env::temp_dir().join("nectar-webhooks-payloads"));
        assert_eq!(local_payload_dir(|_| Some(" ".into())), std::env::temp_dir().join("nectar-webhooks-payloads"));
        assert_eq!(local_payload_dir(|_| Some("/srv/payloads".into())), PathBuf::from("/srv/payloads"));
    }

    #[test]
    fn the_data_dir_is_set_or_in_the_users_data_directory() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            local_data_dir(|name| vars.get(name).cloned())
        };
        assert_eq!(dir(&[(DATA_DIR, "/srv/nw"), ("HOME", "/home/a")]), PathBuf::from("/srv/nw"));
        assert_eq!(dir(&[("XDG_DATA_HOME", "/d"), ("HOME", "/home/a")]), PathBuf::from("/d/nectar-webhooks"));
        assert_eq!(dir(&[("HOME", "/home/a")]), PathBuf::from("/home/a/.local/share/nectar-webhooks"));
        assert_eq!(dir(&[(DATA_DIR, " ")]), PathBuf::from(".nectar-webhooks"));
    }

    #[test]
    fn wide_tolerance_only_for_local_invocation() {
        let wide = [(WEBHOOK_SECRET, SECRET), (WEBHOOK_TOLERANCE_SECS, "315360000")];
        assert!(config(&wide).is_err());
        let local = [wide[0], wide[1], (AWS_SAM_LOCAL, "true")];
        assert_eq!(config(&local).unwrap().tolerance_secs, 315360000);
    }
}
