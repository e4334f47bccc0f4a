//! The ingest decision: from an HTTP request to "queued" or a refusal.
//!
//! Shared by the ingest Lambda and the local server, which only translate
//! their transport's request into an [`IncomingRequest`] and the answer back.
//! Every refusal and its status code is defined here, in [`IngestError`].

use crate::core::claim_check::{self, ClaimCheckError, PayloadStore};
use crate::core::clock::Clock;
use crate::core::envelope::{ATTR_RECEIVED, Envelope, QueueMessage};
use crate::core::outcome::Outcome;
use crate::core::queue::{Queue, QueueError, Webhook};
use crate::core::sources::{AuthError, Sources};
use crate::core::verification::nector::NectorError;
use crate::core::verification::svix::VerifyError;
use bytes::Bytes;
use futures_util::future::{Either, select};
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use thiserror::Error;
use tracing::{debug, error, warn};

/// The path prefix before the source name: `/webhooks/{source}`.
pub const WEBHOOK_PATH_PREFIX: &str = "webhooks";

/// Size limits for what ingest accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bodies over this many bytes get a 413.
    pub max_body_bytes: usize,
    /// Queue messages (body plus attributes) over this many bytes get a 413.
    pub max_queue_message_bytes: usize,
}

/// SQS's largest message, body and attributes, since 2025 (it was 256 KiB).
///
/// It is also where a claim check starts to pay, so the two are one number:
/// SQS bills a message per 64 KiB chunk, on the send and on the receive, so
/// a 1 MiB message costs 32 requests, $12.80 a million; a claim check costs
/// an S3 PUT and GET ($5.40 a million), two one-chunk requests ($0.80) and
/// the object's storage until it expires (1 MiB for 35 days: about $27 a
/// million). Inline is the cheaper way for every message that fits.
pub const QUEUE_MESSAGE_LIMIT: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: QUEUE_MESSAGE_LIMIT, max_queue_message_bytes: QUEUE_MESSAGE_LIMIT }
    }
}

/// A request as any transport delivers it, body already decoded.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The transport said the body was base64 and it was not.
    pub body_undecodable: bool,
}

/// Every way ingest can refuse a request, each with one status code.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("no webhook source at {0:?}")]
    UnknownSource(String),
    #[error("method {0} is not allowed; webhooks are POSTed")]
    MethodNotAllowed(Method),
    #[error("body is over the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("queue message of {size} bytes is over the {limit}-byte limit")]
    QueueMessageTooLarge { size: usize, limit: usize },
    #[error("body is marked base64 but does not decode")]
    BodyNotBase64,
    #[error(transparent)]
    Authentication(#[from] AuthError),
    #[error("queue did not accept the webhook: {0}")]
    Queue(#[from] QueueError),
    #[error("payload store did not accept the webhook: {0}")]
    PayloadStore(#[from] ClaimCheckError),
}

/// Svix's delivery-control header and the value that stops its retries of
/// one message: sent with answers that no retry can change.
pub const DELIVERY_CONTROL_HEADER: &str = "webhook-delivery";
pub const ABORT_MESSAGE: &str = "abort-message";

/// `Retry-After` on a 503, in seconds, which Standard Webhooks asks senders
/// to honour: long enough for SQS or S3 to recover from a brief fault,
/// short against Svix's own schedule (its next attempts come minutes apart).
pub const RETRY_AFTER_SECS: &str = "30";

impl IngestError {
    /// The one place refusals become status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSource(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } | Self::QueueMessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyNotBase64 => StatusCode::BAD_REQUEST,
            Self::Authentication(auth) => match auth {
                AuthError::MissingHeader(_) | AuthError::DuplicateHeader(_) | AuthError::MalformedHeader(_) => {
                    StatusCode::BAD_REQUEST
                }
                AuthError::Verification(VerifyError::InvalidTimestamp | VerifyError::NoSupportedSignature) => {
                    StatusCode::BAD_REQUEST
                }
                AuthError::Verification(_) => StatusCode::UNAUTHORIZED,
                AuthError::SharedSecret(NectorError::MalformedDigest) => StatusCode::BAD_REQUEST,
                AuthError::SharedSecret(NectorError::Mismatch) => StatusCode::UNAUTHORIZED,
            },
            Self::Queue(_) | Self::PayloadStore(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True when the same request can never succeed, so the sender should
    /// stop retrying it (Svix otherwise retries for about 28 hours). Only
    /// size: a signature or a secret may be fixed by configuration meanwhile.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::BodyTooLarge { .. } | Self::QueueMessageTooLarge { .. })
    }

    /// The response body's message. The sender stores response bodies in its
    /// attempt log, readable by its staff, so a 503 says only what happened;
    /// the cause (an AWS error naming the account, role or queue) goes to
    /// our log line alone.
    pub fn public_message(&self) -> String {
        match self {
            Self::Queue(_) => "the webhook could not be queued in time; retry later".to_owned(),
            Self::PayloadStore(_) => "the webhook's payload could not be stored in time; retry later".to_owned(),
            refusal => refusal.to_string(),
        }
    }

    /// A stable, machine-readable name for logs, metrics and response bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::QueueMessageTooLarge { .. } => "queue_message_too_large",
            Self::BodyNotBase64 => "body_not_base64",
            Self::Authentication(AuthError::MissingHeader(_)) => "missing_header",
            Self::Authentication(AuthError::DuplicateHeader(_)) => "duplicate_header",
            Self::Authentication(AuthError::MalformedHeader(_)) => "malformed_header",
            Self::Authentication(AuthError::Verification(verify)) => match verify {
                VerifyError::InvalidTimestamp => "invalid_timestamp",
                VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
                VerifyError::TimestampInFuture { .. } => "timestamp_in_future",
                VerifyError::NoSupportedSignature => "malformed_signature_header",
                VerifyError::NoMatchingSignature => "signature_mismatch",
            },
            Self::Authentication(AuthError::SharedSecret(NectorError::MalformedDigest)) => "malformed_secret_header",
            Self::Authentication(AuthError::SharedSecret(NectorError::Mismatch)) => "secret_mismatch",
            Self::Queue(_) => "queue_unavailable",
            Self::PayloadStore(_) => "payload_store_unavailable",
        }
    }
}

/// A webhook that was verified and queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub source: String,
    pub id: String,
}

/// Verifies webhooks and queues them; answers 2xx only after the queue accepted.
pub struct Ingest<Q> {
    sources: Sources,
    queue: Q,
    limits: Limits,
    clock: Arc<dyn Clock>,
    payload_store: Option<Arc<dyn PayloadStore>>,
}

impl<Q: Queue> Ingest<Q> {
    pub fn new(sources: Sources, queue: Q, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self { sources, queue, limits, clock, payload_store: None }
    }

    /// Stores payloads too large for a queue message in `store` and queues a
    /// reference instead (a claim check), rather than refusing them.
    pub fn with_payload_store(mut self, store: Arc<dyn PayloadStore>) -> Self {
        self.payload_store = Some(store);
        self
    }

    /// Decides one request. Every call to the payload store and the queue
    /// races `deadline`: when it resolves first, the request is refused with
    /// a 503 (the sender retries) rather than left to outrun the transport's
    /// own time limit, whatever stalls.
    pub async fn handle(
        &self,
        request: IncomingRequest<'_>,
        deadline: impl Future<Output = ()>,
    ) -> Result<Accepted, IngestError> {
        let mut deadline = pin!(deadline);
        let source_name =
            source_from_path(request.path).ok_or_else(|| IngestError::UnknownSource(request.path.into()))?;
        let (source_name, authenticator) =
            self.sources.get(source_name).ok_or_else(|| IngestError::UnknownSource(request.path.into()))?;
        if request.method != Method::POST {
            return Err(IngestError::MethodNotAllowed(request.method.clone()));
        }
        if request.body.len() > self.limits.max_body_bytes {
            return Err(IngestError::BodyTooLarge { limit: self.limits.max_body_bytes });
        }
        if request.body_undecodable {
            return Err(IngestError::BodyNotBase64);
        }
        let identity = authenticator.authenticate(request.headers, request.body, self.clock.now_unix())?;
        let limit = self.limits.max_queue_message_bytes;
        let mut message = QueueMessage::for_webhook(source_name, &identity.id, identity.timestamp, request.body);
        message.attributes.push((ATTR_RECEIVED, self.clock.now_unix_millis().to_string()));
        if message.size() > limit {
            // Only a claim check needs an envelope, the one copy of the body it makes.
            let envelope = Envelope {
                source: source_name.to_owned(),
                id: identity.id.clone(),
                timestamp: identity.timestamp,
                body: Bytes::copy_from_slice(request.body),
            };
            let fitted = claim_check::fit(self.payload_store.as_deref(), &envelope, message, limit);
            message = before(deadline.as_mut(), fitted)
                .await
                .ok_or_else(|| ClaimCheckError(PAST_DEADLINE.into()))??
                .map_err(|too_large| IngestError::QueueMessageTooLarge { size: too_large.size(), limit })?;
        }
        let webhook = Webhook { source: source_name, id: &identity.id, body: request.body };
        before(deadline.as_mut(), self.queue.enqueue(message, webhook))
            .await
            .ok_or_else(|| QueueError(PAST_DEADLINE.into()))??;
        Ok(Accepted { source: source_name.to_owned(), id: identity.id })
    }

    /// Decides one request before `deadline` (see [`Self::handle`]), logs
    /// the outcome in one line, and builds the answer.
    pub async fn respond(
        &self,
        request: IncomingRequest<'_>,
        deadline: impl Future<Output = ()>,
    ) -> http::Response<String> {
        let webhook_id = claimed_id(request.headers);
        match self.handle(request, deadline).await {
            // Queued is `debug`: the router's batch line names every webhook
            // it routed, and a line here too would cost more than the rest
            // of ingest's invocation (BENCHMARKS.md section 6).
            Ok(accepted) => {
                debug!(
                    outcome = Outcome::Queued.as_str(),
                    webhook_id = %accepted.id,
                    source = %accepted.source,
                    bytes = request.body.len(),
                    "webhook queued"
                );
                json_response(StatusCode::ACCEPTED, &Queued { id: &accepted.id, status: "queued" })
            }
            Err(err) => {
                let status = err.status();
                if status.is_server_error() {
                    error!(
                        outcome = Outcome::NotQueued.as_str(),
                        webhook_id,
                        reason = err.code(),
                        detail = %err,
                        "webhook not queued; sender will retry"
                    );
                } else {
                    warn!(
                        outcome = Outcome::Rejected.as_str(),
                        webhook_id,
                        reason = err.code(),
                        detail = %err,
                        status = status.as_u16(),
                        "webhook rejected"
                    );
                }
                let mut response = json_response(status, &Refused { error: err.code(), message: err.public_message() });
                let headers = response.headers_mut();
                if err.is_final() {
                    headers.insert(DELIVERY_CONTROL_HEADER, http::HeaderValue::from_static(ABORT_MESSAGE));
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(RETRY_AFTER_SECS));
                }
                response
            }
        }
    }
}

/// Why a store or queue call was given up.
const PAST_DEADLINE: &str = "no answer before the request's deadline";

/// `work`'s output, or `None` if `deadline` resolved first.
async fn before<T>(deadline: Pin<&mut impl Future<Output = ()>>, work: impl Future<Output = T>) -> Option<T> {
    match select(pin!(work), deadline).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(((), _)) => None,
    }
}

/// The source name in `/…/webhooks/{source}`, tolerating one trailing slash.
fn source_from_path(path: &str) -> Option<&str> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (prefix, source) = path.rsplit_once('/')?;
    let parent = prefix.rsplit('/').next()?;
    (parent == WEBHOOK_PATH_PREFIX && !source.is_empty()).then_some(source)
}

/// The id the request claims, for log lines only; never trusted.
fn claimed_id(headers: &HeaderMap) -> &str {
    ["svix-id", "webhook-id"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|value| value.to_str().ok())
        .map(|id| if id.len() > crate::core::sources::MAX_ID_LEN { "(overlong)" } else { id })
        .unwrap_or("-")
}

/// The body of a 2xx answer. Answer bodies are serialized straight from
/// structs, with no `serde_json::Value` built first; fields in alphabetical
/// order, as such a value printed them.
#[derive(Serialize)]
struct Queued<'a> {
    id: &'a str,
    status: &'static str,
}

/// The body of a refusal.
#[derive(Serialize)]
struct Refused {
    error: &'static str,
    message: String,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_string(body).expect("plain structs serialize"))
        .expect("static status and header are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_the_segment_after_webhooks() {
        assert_eq!(source_from_path("/webhooks/nectar"), Some("nectar"));
        assert_eq!(source_from_path("/webhooks/nectar/"), Some("nectar"));
        assert_eq!(source_from_path("/Prod/webhooks/nectar"), Some("nectar"));
        assert_eq!(source_from_path("/webhooks/"), None);
        assert_eq!(source_from_path("/nectar"), None);
        assert_eq!(source_from_path("/other/nectar"), None);
        assert_eq!(source_from_path("/webhooks/nectar/extra"), None);
    }

    #[test]
    fn answer_bodies_are_compact_json_with_sorted_fields() {
        let queued = json_response(StatusCode::ACCEPTED, &Queued { id: "msg_\"1", status: "queued" });
        assert_eq!(queued.body(), r#"{"id":"msg_\"1","status":"queued"}"#);
        let refused = json_response(StatusCode::NOT_FOUND, &Refused { error: "unknown_source", message: "no".into() });
        assert_eq!(refused.body(), r#"{"error":"unknown_source","message":"no"}"#);
        assert_eq!(refused.headers()[http::header::CONTENT_TYPE], "application/json");
    }
}
