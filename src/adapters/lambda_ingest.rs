//! The ingest Lambda: API Gateway (HTTP API v2, REST API v1) and function URL
//! events in, [`Ingest`] decisions out.

use crate::core::ingest::{IncomingRequest, Ingest};
use crate::core::queue::Queue;
use base64::Engine as _;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Request, Service};
use lambda_runtime::LambdaEvent;
use lambda_runtime::tower::ServiceExt as _;
use serde::{Deserialize, Deserializer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Set by [`Base64Guard`] on requests whose base64 body did not decode.
/// Any copy sent by a client is removed first.
const UNDECODABLE_BODY_MARKER: &str = "x-nectar-webhooks-undecodable-body";

/// Answers one HTTP request with the shared ingest logic.
pub async fn respond<Q: Queue>(ingest: &Ingest<Q>, request: Request) -> http::Response<String> {
    let body: &[u8] = request.body().as_ref();
    ingest
        .respond(IncomingRequest {
            method: request.method(),
            path: request.uri().path(),
            headers: request.headers(),
            body,
            body_undecodable: request.headers().contains_key(UNDECODABLE_BODY_MARKER),
        })
        .await
}

/// The whole Lambda handler as a service over raw Lambda events, so tests
/// can drive exactly what the runtime drives.
pub fn service<Q: Queue + 'static>(
    ingest: Arc<Ingest<Q>>,
) -> impl Service<LambdaEvent<LambdaRequest>, Response = impl serde::Serialize + Send, Error = Infallible, Future: Send>
{
    let handler = lambda_http::service_fn(move |request: Request| {
        let ingest = Arc::clone(&ingest);
        async move { Ok::<_, Infallible>(respond(&ingest, request).await) }
    });
    Base64Guard(Adapter::from(handler))
}

/// Runs the ingest Lambda until the runtime stops it.
pub async fn run<Q: Queue + 'static>(ingest: Ingest<Q>) -> Result<(), lambda_runtime::Error> {
    let handler = service(Arc::new(ingest)).map_request(HttpEvent::into_lambda_request);
    lambda_runtime::run(handler).await
}

/// An HTTP event as the runtime hands it over, read in one pass.
///
/// lambda_http's own reading of [`LambdaRequest`] tries each event shape in
/// turn on the raw text, parsing (and unescaping) the whole body once per
/// attempt: three passes over a webhook from an HTTP API, where this makes
/// one into a [`serde_json::Value`] and moves its strings into the event. The
/// shape chosen is the same: REST API (v1) when the event reads as one, which
/// needs `httpMethod`; otherwise HTTP API or function URL (payload 2.0).
pub struct HttpEvent(pub LambdaRequest);

impl HttpEvent {
    pub fn into_lambda_request(event: LambdaEvent<Self>) -> LambdaEvent<LambdaRequest> {
        LambdaEvent::new(event.payload.0, event.context)
    }
}

impl<'de> Deserialize<'de> for HttpEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.get("httpMethod").is_some()
            && let Ok(rest) = ApiGatewayProxyRequest::deserialize(&value)
        {
            return Ok(Self(LambdaRequest::ApiGatewayV1(rest)));
        }
        let http = ApiGatewayV2httpRequest::deserialize(value).map_err(serde::de::Error::custom)?;
        Ok(Self(LambdaRequest::ApiGatewayV2(http)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::lambda_events::Signed;
    use serde_json::{Value, json};

    /// The request lambda_http would make of `event`, read its way and ours.
    fn both(event: &Value) -> (Request, Request) {
        let ours: HttpEvent = serde_json::from_value(event.clone()).expect("ours reads it");
        let theirs: LambdaRequest = serde_json::from_value(event.clone()).expect("lambda_http reads it");
        assert_eq!(std::mem::discriminant(&ours.0), std::mem::discriminant(&theirs), "same event shape for {event}");
        (ours.0.into(), theirs.into())
    }

    #[test]
    fn every_event_shape_reads_as_lambda_http_reads_it() {
        let body = br#"{"eventType":"document.created.v2","note":"quotes \" and \\ and \u00e9"}"#;
        let signed = |base64_body| Signed {
            source: "nectar",
            id: "msg_1",
            timestamp: 1_764_201_600,
            signature: "v1,abc",
            body,
            base64_body,
        };
        let mut repeated = signed(false).rest_v1();
        repeated["multiValueHeaders"]["svix-signature"] = json!(["v1,abc", "v1,def"]);
        let events = [
            signed(false).http_v2(false),
            signed(false).http_v2(true),
            signed(true).http_v2(false),
            signed(false).rest_v1(),
            signed(true).rest_v1(),
            repeated,
        ];
        for event in &events {
            let (ours, theirs) = both(event);
            assert_eq!(ours.method(), theirs.method(), "{event}");
            assert_eq!(ours.uri(), theirs.uri(), "{event}");
            assert_eq!(ours.headers(), theirs.headers(), "{event}");
            assert_eq!(ours.body().as_ref(), theirs.body().as_ref(), "{event}");
        }
    }

    #[test]
    fn other_events_are_accepted_or_refused_as_lambda_http_does() {
        let mut bad_method =
            Signed { source: "nectar", id: "1", timestamp: 1, signature: "", body: b"", base64_body: false }
                .http_v2(false);
        bad_method["httpMethod"] = json!(["not", "a", "method"]);
        for event in [json!({"Records": []}), json!({"httpMethod": "POST"}), json!("text"), json!(null), bad_method] {
            let ours = serde_json::from_value::<HttpEvent>(event.clone()).is_ok();
            assert_eq!(ours, serde_json::from_value::<LambdaRequest>(event.clone()).is_ok(), "{event}");
        }
    }
}
