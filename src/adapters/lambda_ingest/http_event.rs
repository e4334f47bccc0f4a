//! Reading an HTTP event with its body unescaped once.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use lambda_http::request::LambdaRequest;
use lambda_runtime::LambdaEvent;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// An HTTP event as the runtime hands it over, its body read once.
///
/// API Gateway sends the webhook as a JSON string inside the event, every
/// quote escaped: nearly all of the event's bytes, and nearly all the time it
/// takes to read. lambda_http's own reading of [`LambdaRequest`] keeps the
/// event as raw text and tries each event shape on it in turn: for a webhook
/// from an HTTP API, the body is scanned three times and unescaped twice.
/// This unescapes it once, in the same pass that keeps every other field as
/// raw JSON (under a kilobyte), which aws_lambda_events then reads exactly as
/// lambda_http would: every field but the body is read by the same code. The
/// shape chosen is the same too: REST API (v1) when the event reads as one,
/// which needs `httpMethod`; otherwise HTTP API or function URL (payload 2.0).
pub struct HttpEvent(pub LambdaRequest);

impl HttpEvent {
    /// The event as lambda_http's adapter takes it.
    pub fn into_lambda_request(event: LambdaEvent<Self>) -> LambdaEvent<LambdaRequest> {
        LambdaEvent::new(event.payload.0, event.context)
    }
}

impl<'de> Deserialize<'de> for HttpEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = HttpEvent;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an API Gateway or Lambda function URL event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HttpEvent, A::Error> {
        let mut fields = Fields { body: None, others: Vec::with_capacity(2048), http_method: false };
        fields.others.push(b'{');
        while let Some(key) = map.next_key::<String>()? {
            if key == "body" {
                if fields.body.is_some() {
                    return Err(de::Error::duplicate_field("body"));
                }
                fields.body = Some(map.next_value()?);
                continue;
            }
            fields.http_method |= key == "httpMethod";
            let value: Box<RawValue> = map.next_value()?;
            if fields.others.len() > 1 {
                fields.others.push(b',');
            }
            serde_json::to_writer(&mut fields.others, &key).map_err(de::Error::custom)?;
            fields.others.push(b':');
            fields.others.extend_from_slice(value.get().as_bytes());
        }
        fields.others.push(b'}');
        fields.into_request().map(HttpEvent).map_err(de::Error::custom)
    }

    /// Serde reads a struct from an array of its fields in order too; no
    /// service sends one, so it is left to lambda_http, whole.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HttpEvent, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Box<RawValue>>()? {
            elements.push(element);
        }
        let array = serde_json::to_vec(&elements).map_err(de::Error::custom)?;
        serde_json::from_slice(&array).map(HttpEvent).map_err(de::Error::custom)
    }
}

/// An event's fields as read: the body unescaped, every other one still JSON.
struct Fields {
    /// `None` when absent; `Some(None)` when `null`.
    body: Option<Option<String>>,
    /// A JSON object of the other fields, as they were sent.
    others: Vec<u8>,
    http_method: bool,
}

impl Fields {
    /// The request lambda_http would read: REST API when the fields read as
    /// one, HTTP API or function URL otherwise.
    fn into_request(self) -> serde_json::Result<LambdaRequest> {
        let body = self.body.flatten();
        if self.http_method
            && let Ok(mut rest_api) = serde_json::from_slice::<ApiGatewayProxyRequest>(&self.others)
        {
            rest_api.body = body;
            return Ok(LambdaRequest::ApiGatewayV1(rest_api));
        }
        let mut http_api: ApiGatewayV2httpRequest = serde_json::from_slice(&self.others)?;
        http_api.body = body;
        Ok(LambdaRequest::ApiGatewayV2(http_api))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::lambda_events::Signed;
    use serde_json::{Value, json};

    /// Reads `event` as `lambda_runtime` does.
    fn read<T: de::DeserializeOwned>(event: &[u8]) -> Result<T, String> {
        let mut deserializer = serde_json::Deserializer::from_slice(event);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| err.to_string())
    }

    /// Whether `event` reads as `HttpEvent` into exactly what lambda_http
    /// makes of it, or is refused by both; and which.
    fn read_alike(event: &[u8]) -> bool {
        let text = String::from_utf8_lossy(event);
        match (read::<HttpEvent>(event).map(|ours| ours.0), read::<LambdaRequest>(event)) {
            (Ok(LambdaRequest::ApiGatewayV1(ours)), Ok(LambdaRequest::ApiGatewayV1(theirs))) => {
                assert_eq!(ours, theirs, "{text}");
                true
            }
            (Ok(LambdaRequest::ApiGatewayV2(ours)), Ok(LambdaRequest::ApiGatewayV2(theirs))) => {
                assert_eq!(ours, theirs, "{text}");
                true
            }
            (Err(_), Err(_)) => false,
            (ours, theirs) => panic!("{text}\nours: {ours:?}\nlambda_http: {theirs:?}"),
        }
    }

    fn signed(base64_body: bool) -> Signed<'static> {
        let body = br#"{"eventType":"document.created.v2","note":"quotes \" and \\ and \u00e9"}"#;
        Signed { source: "nectar", id: "msg_1", timestamp: 1_764_201_600, signature: "v1,abc", body, base64_body }
    }

    /// `event` with `field` set to `value`, or removed when `value` is `None`.
    fn with(mut event: Value, field: &str, value: Option<Value>) -> Value {
        let fields = event.as_object_mut().expect("an object");
        match value {
            Some(value) => fields.insert(field.to_owned(), value),
            None => fields.remove(field),
        };
        event
    }

    /// Events written out by hand, for what a `Value` would not keep: escapes
    /// in the body and in keys, and the order of the fields.
    const HAND_WRITTEN: [&str; 4] = [
        r#"{"version":"2.0","rawPath":"/webhooks/nectar","rawQueryString":"a=1&b=%20c","cookies":["a=1","b=2"],
            "headers":{"content-type":"application/json","svix-id":"msg_1"},"requestContext":{"accountId":"1",
            "apiId":"x","domainName":"x.lambda-url.eu-west-1.on.aws","http":{"method":"POST","path":"/webhooks/nectar",
            "protocol":"HTTP/1.1","sourceIp":"1.2.3.4","userAgent":"u"},"requestId":"r","routeKey":"$default",
            "stage":"$default","time":"t","timeEpoch":1},"isBase64Encoded":false,"unknown":{"nested":[1,{"x":null}]},
            "body":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n\t\u0000 end"}"#,
        r#"{"bo\u0064y":"{\"a\":1}","raw\u0050ath":"/webhooks/nectar","requestContext":{"http":{"method":"POST"}}}"#,
        r#"{"body":"x","path":"/webhooks/nectar","requestContext":{"http":{"method":"PUT"}},"headers":null}"#,
        r#"{"httpMethod":"POST","path":"/Prod/webhooks/nectar","headers":{"a":"1"},"multiValueHeaders":{"a":["1","2"],
            "b":["3"]},"queryStringParameters":{"q":"1"},"multiValueQueryStringParameters":{"q":["1","2"]},
            "requestContext":{"stage":"Prod","httpMethod":"POST"},"isBase64Encoded":null,"body":"\u00e9"}"#,
    ];

    #[test]
    fn every_event_shape_reads_as_lambda_http_reads_it() {
        let (v2, v1) = (signed(false).http_v2(false), signed(false).rest_v1());
        let mut repeated = v1.clone();
        repeated["multiValueHeaders"]["svix-signature"] = json!(["v1,abc", "v1,def"]);
        let events = [
            v2.clone(),
            signed(false).http_v2(true),
            signed(true).http_v2(false),
            v1.clone(),
            signed(true).rest_v1(),
            repeated,
            with(v2.clone(), "body", None),
            with(v2.clone(), "body", Some(Value::Null)),
            with(v2.clone(), "headers", Some(Value::Null)),
            with(v2.clone(), "headers", None),
            with(v2.clone(), "cookies", Some(json!(["session=1", "theme=dark"]))),
            with(v2.clone(), "rawQueryString", Some(json!("a=1&a=2&b"))),
            with(v2.clone(), "queryStringParameters", Some(json!({"a": "1,2"}))),
            with(v2.clone(), "pathParameters", Some(Value::Null)),
            with(v2.clone(), "unknownField", Some(json!({"nested": [1, "two", null]}))),
            with(v1.clone(), "body", None),
            with(v1.clone(), "headers", Some(Value::Null)),
            with(v1.clone(), "multiValueHeaders", Some(Value::Null)),
            with(v1.clone(), "multiValueHeaders", None),
            with(v1.clone(), "isBase64Encoded", Some(Value::Null)),
            with(v1.clone(), "queryStringParameters", Some(json!({"q": "1"}))),
            with(v1.clone(), "multiValueQueryStringParameters", Some(json!({"q": ["1", "2"]}))),
            with(v1.clone(), "unknownField", Some(json!([{"deep": {"deeper": true}}]))),
            with(v2.clone(), "httpMethod", Some(json!("PUT"))),
            json!([null, null, "POST", null, null, null, "2.0", null, "/webhooks/nectar", null, null, {"a": "1"}, {}, {},
                {"http": {"method": "POST"}}, {}, "body \" in an array", false]),
        ];
        let mut bytes: Vec<Vec<u8>> = events.iter().map(|event| serde_json::to_vec(event).unwrap()).collect();
        bytes.extend(HAND_WRITTEN.iter().map(|event| event.as_bytes().to_vec()));
        for event in &bytes {
            assert!(read_alike(event), "both read {}", String::from_utf8_lossy(event));
        }
    }

    #[test]
    fn every_sample_event_reads_as_lambda_http_reads_it() {
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/ingest")];
        let mut read = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    assert!(read_alike(&std::fs::read(&path).unwrap()), "both read {}", path.display());
                    read += 1;
                }
            }
        }
        assert!(read >= 30, "every sample event");
    }

    #[test]
    fn other_events_are_refused_as_lambda_http_refuses_them() {
        let v2 = signed(false).http_v2(false);
        let refused = [
            json!({"Records": []}),
            json!({"httpMethod": "POST"}),
            json!("text"),
            json!(null),
            json!(1),
            json!([]),
            json!([1, 2]),
            with(v2.clone(), "httpMethod", Some(json!(["not", "a", "method"]))),
            with(v2.clone(), "body", Some(json!(12))),
            with(v2.clone(), "isBase64Encoded", Some(Value::Null)),
            with(v2.clone(), "headers", Some(json!({"bad header": "x"}))),
            with(v2.clone(), "requestContext", None),
        ];
        for event in &refused {
            assert!(!read_alike(&serde_json::to_vec(event).unwrap()), "both refuse {event}");
        }
        let duplicate_body = br#"{"body":"a","body":"b","rawPath":"/","requestContext":{"http":{"method":"POST"}}}"#;
        assert!(!read_alike(duplicate_body));
        assert!(!read_alike(br#"{"body":"unterminated"#));
    }
}
