//! Local mode's HTTP server: the same ingest logic as the Lambda, on a
//! socket, with `GET /health` and `GET /ready` for a supervisor, and a
//! graceful shutdown.

use crate::core::ingest::{IncomingRequest, Ingest, RETRY_AFTER_SECS};
use crate::core::queue::Queue;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// What `GET /ready` checks besides the server not shutting down: `Err`
/// names what is not ready, for the response (no detail: that goes to the
/// log).
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>> + Send + Sync>;

/// Serves ingest on every path but `/health` and `/ready` until `stopping`
/// turns true; then answers new requests 503 (with `Retry-After`), and
/// returns once the requests already being handled are answered.
pub async fn serve<Q: Queue + 'static>(
    listener: TcpListener,
    ingest: Arc<Ingest<Q>>,
    max_body_bytes: usize,
    ready: ReadyCheck,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let in_flight = Arc::new(InFlight::default());
    let state = Served { ingest, stopping: stopping.clone(), in_flight: Arc::clone(&in_flight) };
    let draining = stopping.clone();
    let app = axum::Router::new()
        .route("/health", get(|| async { (http::StatusCode::OK, r#"{"status":"alive"}"#) }))
        .route("/ready", get(move |State(served): State<Served<Q>>| is_ready(served.stopping, ready)))
        .fallback(move |State(served): State<Served<Q>>, request: Request| handle(served, request, max_body_bytes))
        .with_state(state);
    let drained = async move {
        let mut stopping = draining;
        let _ = stopping.wait_for(|stop| *stop).await;
        in_flight.wait_idle().await;
    };
    axum::serve(listener, app).with_graceful_shutdown(drained).await
}

struct Served<Q> {
    ingest: Arc<Ingest<Q>>,
    stopping: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
}

impl<Q> Clone for Served<Q> {
    fn clone(&self) -> Self {
        Self {
            ingest: Arc::clone(&self.ingest),
            stopping: self.stopping.clone(),
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

/// Ingest requests being handled, so shutdown waits for their answers.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One request counted in [`InFlight`] until dropped.
struct Counted<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> Counted<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Counted(self)
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn is_ready(stopping: watch::Receiver<bool>, ready: ReadyCheck) -> Response {
    let outcome = if *stopping.borrow() { Err("shutting_down") } else { ready().await };
    match outcome {
        Ok(()) => (http::StatusCode::OK, r#"{"status":"ready"}"#.to_owned()).into_response(),
        Err(reason) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not_ready", "reason": reason }).to_string(),
        )
            .into_response(),
    }
}

/// A request that came once shutdown began.
fn shutting_down() -> Response {
    let body = serde_json::json!({
        "error": "shutting_down",
        "message": "the receiver is shutting down; retry later",
    });
    let mut response = (http::StatusCode::SERVICE_UNAVAILABLE, body.to_string()).into_response();
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

async fn handle<Q: Queue>(served: Served<Q>, request: Request, max_body_bytes: usize) -> Response {
    if *served.stopping.borrow() {
        return shutting_down();
    }
    // Admitted: the server stays up (answering others 503) until this is
    // answered. One admitted just as shutdown began is still answered:
    // the HTTP server's own graceful shutdown finishes every request.
    let _counted = served.in_flight.enter();
    let (parts, body) = request.into_parts();
    // Reads at most one byte past the limit: enough for ingest to refuse it.
    let body = read_capped(body, max_body_bytes.saturating_add(1)).await;
    let Ok(body) = body else {
        return (http::StatusCode::BAD_REQUEST, "could not read the request body").into_response();
    };
    let request = IncomingRequest {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        body: &body,
        body_undecodable: false,
    };
    let response = served.ingest.respond(request, tokio::time::sleep(ANSWER_BUDGET)).await;
    response.into_response()
}

/// How long a request may take to be queued before it is answered 503: what
/// the deployed ingest has (its 12 s timeout less a second's margin), inside
/// the 15 s Svix waits.
pub const ANSWER_BUDGET: std::time::Duration = std::time::Duration::from_secs(11);

/// Bodies are read (and past `cap`, discarded) up to this many bytes, or
/// `cap` if larger, so an oversize request still gets its 413 rather than a
/// reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Keeps at most `cap` bytes of the body.
async fn read_capped(mut body: Body, cap: usize) -> Result<Vec<u8>, axum::Error> {
    use http_body_util::BodyExt as _;
    let (mut collected, mut seen) = (Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = cap.saturating_sub(collected.len());
            collected.extend_from_slice(&data[..data.len().min(room)]);
            seen = seen.saturating_add(data.len());
            if seen >= DRAIN_LIMIT.max(cap) {
                break;
            }
        }
    }
    Ok(collected)
}
