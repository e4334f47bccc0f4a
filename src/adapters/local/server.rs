//! Local mode's HTTP server: the same ingest logic as the Lambda, on a socket.

use crate::core::ingest::{IncomingRequest, Ingest};
use crate::core::queue::Queue;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves every path with ingest until `shutdown` resolves.
pub async fn serve<Q: Queue + 'static>(
    listener: TcpListener,
    ingest: Arc<Ingest<Q>>,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(move |State(ingest): State<Arc<Ingest<Q>>>, request: Request| handle(ingest, request, max_body_bytes))
        .with_state(ingest);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn handle<Q: Queue>(ingest: Arc<Ingest<Q>>, request: Request, max_body_bytes: usize) -> Response {
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
    let response = ingest.respond(request, tokio::time::sleep(ANSWER_BUDGET)).await;
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
