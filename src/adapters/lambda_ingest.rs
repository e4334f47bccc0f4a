//! The ingest Lambda: API Gateway (HTTP API v2, REST API v1) and function URL
//! events in, [`Ingest`] decisions out.

mod http_event;

use crate::core::ingest::{IncomingRequest, Ingest};
use crate::core::queue::Queue;
use base64::Engine as _;
pub use http_event::HttpEvent;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Body, IntoResponse, Request, RequestExt as _, Service};
use lambda_runtime::LambdaEvent;
use lambda_runtime::tower::ServiceExt as _;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Set by [`Base64Guard`] on requests whose base64 body did not decode.
/// Any copy sent by a client is removed first.
const UNDECODABLE_BODY_MARKER: &str = "x-nectar-webhooks-undecodable-body";

/// How long before the invocation's deadline ingest gives up on AWS and
/// answers 503 itself: time to log, answer and return to the runtime, so the
/// sender gets our answer (and retries) rather than a Lambda timeout.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// Answers one HTTP request with the shared ingest logic, before the Lambda
/// invocation's deadline less [`ANSWER_MARGIN`].
pub async fn respond<Q: Queue>(ingest: &Ingest<Q>, request: Request) -> http::Response<String> {
    let body: &[u8] = request.body().as_ref();
    let deadline = answer_deadline(request.lambda_context_ref().map(|context| context.deadline));
    ingest
        .respond(
            IncomingRequest {
                method: request.method(),
                path: request.uri().path(),
                headers: request.headers(),
                body,
                body_undecodable: request.headers().contains_key(UNDECODABLE_BODY_MARKER),
            },
            deadline,
        )
        .await
}

/// Resolves [`ANSWER_MARGIN`] before `deadline_ms` (the runtime's deadline,
/// Unix milliseconds); never, without one (0 is what an event built by hand
/// carries).
async fn answer_deadline(deadline_ms: Option<u64>) {
    match deadline_ms.filter(|&ms| ms > 0) {
        Some(ms) => {
            let deadline = UNIX_EPOCH + Duration::from_millis(ms);
            let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left.saturating_sub(ANSWER_MARGIN)).await;
        }
        None => std::future::pending().await,
    }
}

/// The whole Lambda handler as a service over raw Lambda events, so tests
/// can drive exactly what the runtime drives.
pub fn service<Q: Queue + 'static>(
    ingest: Arc<Ingest<Q>>,
) -> impl Service<LambdaEvent<LambdaRequest>, Response = impl serde::Serialize + Send, Error = Infallible, Future: Send>
{
    let handler = lambda_http::service_fn(move |request: Request| {
        let ingest = Arc::clone(&ingest);
        async move { Ok::<_, Infallible>(TextResponse(respond(&ingest, request).await)) }
    });
    Base64Guard(Adapter::from(handler))
}

/// A response whose body is already the text to send.
///
/// lambda_http turns a handler's `Response<String>` into its own by copying
/// the headers, parsing the content type for a charset and decoding the body
/// into a new string; ingest's bodies are UTF-8 JSON, so that ends with the
/// same string, which this hands over as it is.
struct TextResponse(http::Response<String>);

impl IntoResponse for TextResponse {
    fn into_response(self) -> Pin<Box<dyn Future<Output = http::Response<Body>> + Send>> {
        Box::pin(std::future::ready(self.0.map(Body::from)))
    }
}

/// Runs the ingest Lambda until the runtime stops it.
pub async fn run<Q: Queue + 'static>(ingest: Ingest<Q>) -> Result<(), lambda_runtime::Error> {
    let handler = service(Arc::new(ingest)).map_request(HttpEvent::into_lambda_request);
    lambda_runtime::run(handler).await
}

/// lambda_http panics on a body that claims base64 and is not; this layer
/// empties such bodies and marks the request, so it gets a 400 instead.
#[derive(Clone)]
pub struct Base64Guard<S>(S);

impl<S> Service<LambdaEvent<LambdaRequest>> for Base64Guard<S>
where
    S: Service<LambdaEvent<LambdaRequest>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut event: LambdaEvent<LambdaRequest>) -> Self::Future {
        guard_base64_body(&mut event.payload);
        Box::pin(self.0.call(event))
    }
}

fn guard_base64_body(request: &mut LambdaRequest) {
    let (headers, body, is_base64_encoded) = match request {
        LambdaRequest::ApiGatewayV1(r) => (&mut r.headers, &mut r.body, &mut r.is_base64_encoded),
        LambdaRequest::ApiGatewayV2(r) => (&mut r.headers, &mut r.body, &mut r.is_base64_encoded),
        #[allow(unreachable_patterns)]
        _ => return,
    };
    headers.remove(UNDECODABLE_BODY_MARKER);
    let decodes = |text: &String| base64::engine::general_purpose::STANDARD.decode(text).is_ok();
    if *is_base64_encoded && !body.as_ref().is_none_or(decodes) {
        *body = None;
        *is_base64_encoded = false;
        headers.insert(UNDECODABLE_BODY_MARKER, http::HeaderValue::from_static("1"));
    }
}
