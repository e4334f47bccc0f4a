//! Sample Lambda events, signed like Svix would sign them: what
//! `nectar-webhooks sign --format …` prints and `events/` is made of.

use crate::core::envelope::Envelope;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// The shapes a signed webhook can be printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The three Svix headers, one per line.
    Headers,
    /// An API Gateway HTTP API (payload v2.0) event.
    ApigwV2,
    /// An API Gateway REST API (v1) proxy event.
    ApigwV1,
    /// A Lambda function URL event.
    FunctionUrl,
    /// An SQS event for the router, as ingest would have queued the webhook.
    Sqs,
}

/// One signed request.
pub struct Signed<'a> {
    pub source: &'a str,
    pub id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    pub body: &'a [u8],
    /// Send the body base64-encoded, as API Gateway does for binary media.
    pub base64_body: bool,
}

impl Signed<'_> {
    fn headers(&self) -> Map<String, Value> {
        let mut headers = Map::new();
        headers.insert("content-type".into(), "application/json".into());
        headers.insert(
            "user-agent".into(),
            "Svix-Webhooks/1.76.1 (sender-AbCdE; +https://www.svix.com/http-sender/)".into(),
        );
        headers.insert("svix-id".into(), self.id.into());
        headers.insert("svix-timestamp".into(), self.timestamp.to_string().into());
        headers.insert("svix-signature".into(), self.signature.into());
        headers
    }

    fn body(&self) -> Value {
        if self.base64_body {
            STANDARD.encode(self.body).into()
        } else {
            String::from_utf8_lossy(self.body).into_owned().into()
        }
    }

    fn path(&self) -> String {
        format!("/webhooks/{}", self.source)
    }

    /// An HTTP API or function URL event (both use payload format 2.0).
    pub fn http_v2(&self, function_url: bool) -> Value {
        let (route_key, domain) = if function_url {
            ("$default", "abcdefghijklmnopqrstuvwxyz0123456.lambda-url.eu-west-1.on.aws")
        } else {
            ("POST /webhooks/{source}", "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com")
        };
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": self.path(),
            "rawQueryString": "",
            "headers": self.headers(),
            "requestContext": {
                "accountId": "123456789012",
                "apiId": domain.split('.').next(),
                "domainName": domain,
                "domainPrefix": domain.split('.').next(),
                "http": {
                    "method": "POST",
                    "path": self.path(),
                    "protocol": "HTTP/1.1",
                    "sourceIp": "52.215.16.239",
                    "userAgent": "Svix-Webhooks/1.76.1",
                },
                "requestId": format!("req-{}", self.id),
                "routeKey": route_key,
                "stage": "$default",
                "time": "27/Nov/2025:00:00:00 +0000",
                "timeEpoch": self.timestamp * 1000,
            },
            "body": self.body(),
            "isBase64Encoded": self.base64_body,
        });
        if !function_url {
            event["pathParameters"] = json!({ "source": self.source });
        }
        event
    }

    /// A REST API proxy event.
    pub fn rest_v1(&self) -> Value {
        let headers = self.headers();
        let multi: Map<String, Value> = headers.iter().map(|(k, v)| (k.clone(), json!([v]))).collect();
        json!({
            "resource": "/webhooks/{source}",
            "path": self.path(),
            "httpMethod": "POST",
            "headers": headers,
            "multiValueHeaders": multi,
            "queryStringParameters": null,
            "multiValueQueryStringParameters": null,
            "pathParameters": { "source": self.source },
            "stageVariables": null,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "a1b2c3d4e5",
                "httpMethod": "POST",
                "path": format!("/Prod{}", self.path()),
                "protocol": "HTTP/1.1",
                "requestId": format!("req-{}", self.id),
                "requestTimeEpoch": self.timestamp * 1000,
                "resourceId": "abc123",
                "resourcePath": "/webhooks/{source}",
                "stage": "Prod",
                "identity": { "sourceIp": "52.215.16.239", "userAgent": "Svix-Webhooks/1.76.1" },
            },
            "body": self.body(),
            "isBase64Encoded": self.base64_body,
        })
    }

    /// One SQS record carrying this webhook as ingest queues it.
    pub fn sqs_record(&self) -> Value {
        let envelope = Envelope {
            source: self.source.to_owned(),
            id: self.id.to_owned(),
            timestamp: self.timestamp,
            body: bytes::Bytes::copy_from_slice(self.body),
        };
        let message = envelope.to_queue_message();
        let attributes: Map<String, Value> = message
            .attributes
            .iter()
            .map(|(name, value)| {
                let attribute =
                    json!({"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"});
                ((*name).to_owned(), attribute)
            })
            .collect();
        json!({
            "messageId": format!("sqs-{}", self.id),
            "receiptHandle": format!("receipt-{}", self.id),
            "body": message.body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": (self.timestamp * 1000).to_string(),
                "SenderId": "AROAEXAMPLE:nectar-webhooks-ingest",
                "ApproximateFirstReceiveTimestamp": (self.timestamp * 1000).to_string(),
            },
            "messageAttributes": attributes,
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:nectar-webhooks-ingest",
            "awsRegion": "eu-west-1",
        })
    }
}
