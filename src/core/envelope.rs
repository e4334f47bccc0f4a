//! The queued message's format: a verified webhook as it travels on a queue.
//!
//! The body travels as the message body, untouched, whenever the queue can
//! carry it as text; SQS accepts only certain Unicode characters, so any other
//! body travels base64-encoded and says so in an attribute. The webhook's
//! identity travels in attributes, so consumers can read them without parsing
//! the body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use thiserror::Error;

/// Attribute carrying the webhook id (Svix's `svix-id`).
pub const ATTR_ID: &str = "webhook-id";
/// Attribute carrying the signed timestamp, in Unix seconds.
pub const ATTR_TIMESTAMP: &str = "webhook-timestamp";
/// Attribute naming the source the webhook came from (`nectar`).
pub const ATTR_SOURCE: &str = "webhook-source";
/// Attribute with the event type, where known.
pub const ATTR_EVENT_TYPE: &str = "event-type";
/// Attribute naming the route that matched, on routed copies.
pub const ATTR_ROUTE: &str = "route";
/// Attribute present (value `base64`) when the body had to be encoded.
pub const ATTR_BODY_ENCODING: &str = "body-encoding";
/// Attribute present when the body was too large for the queue: where it is
/// stored instead (`s3://bucket/key`); the message body is then empty.
pub const ATTR_CLAIM_CHECK: &str = "claim-check";
/// Attribute on dead-lettered copies: why the last delivery failed.
pub const ATTR_FAILURE_REASON: &str = "failure-reason";
/// Attribute on dead-lettered copies: how many times delivery was tried.
pub const ATTR_FAILED_RECEIVES: &str = "failed-receives";

/// The attributes this format defines, so copies can carry them over.
const KNOWN_ATTRIBUTES: [&str; 9] = [
    ATTR_ID,
    ATTR_TIMESTAMP,
    ATTR_SOURCE,
    ATTR_EVENT_TYPE,
    ATTR_ROUTE,
    ATTR_BODY_ENCODING,
    ATTR_CLAIM_CHECK,
    ATTR_FAILURE_REASON,
    ATTR_FAILED_RECEIVES,
];

/// The `'static` name of an attribute this format defines.
pub fn known_attribute(name: &str) -> Option<&'static str> {
    KNOWN_ATTRIBUTES.iter().copied().find(|known| *known == name)
}

/// A webhook that passed verification, ready to queue or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub source: String,
    pub id: String,
    pub timestamp: i64,
    pub body: Bytes,
}

/// An envelope as a text message body plus string attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
}

impl QueueMessage {
    /// Size as SQS counts it: body plus attribute names, types and values.
    pub fn size(&self) -> usize {
        let attributes: usize =
            self.attributes.iter().map(|(name, value)| name.len() + "String".len() + value.len()).sum();
        self.body.len() + attributes
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a queued message could not be read back as an envelope.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message has no {0} attribute")]
    MissingAttribute(&'static str),
    #[error("attribute {0} is malformed")]
    MalformedAttribute(&'static str),
    #[error("body is marked base64 but does not decode")]
    BodyNotBase64,
    #[error("claim-checked payload unavailable: {0}")]
    PayloadUnavailable(String),
}

impl Envelope {
    pub fn to_queue_message(&self) -> QueueMessage {
        let mut attributes = vec![
            (ATTR_ID, self.id.clone()),
            (ATTR_TIMESTAMP, self.timestamp.to_string()),
            (ATTR_SOURCE, self.source.clone()),
        ];
        let body = match std::str::from_utf8(&self.body) {
            Ok(text) if text.chars().all(sqs_allows) => text.to_owned(),
            _ => {
                attributes.push((ATTR_BODY_ENCODING, "base64".to_owned()));
                STANDARD.encode(&self.body)
            }
        };
        QueueMessage { body, attributes }
    }

    /// Reads an envelope back from a message body and an attribute lookup.
    pub fn from_queue_message<'a>(
        body: &str,
        attribute: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, DecodeError> {
        let required = |name: &'static str| attribute(name).ok_or(DecodeError::MissingAttribute(name));
        let id = required(ATTR_ID)?.to_owned();
        let timestamp =
            required(ATTR_TIMESTAMP)?.parse().map_err(|_| DecodeError::MalformedAttribute(ATTR_TIMESTAMP))?;
        let source = required(ATTR_SOURCE)?.to_owned();
        let body = match attribute(ATTR_BODY_ENCODING) {
            None => Bytes::copy_from_slice(body.as_bytes()),
            Some("base64") => Bytes::from(STANDARD.decode(body).map_err(|_| DecodeError::BodyNotBase64)?),
            Some(_) => return Err(DecodeError::MalformedAttribute(ATTR_BODY_ENCODING)),
        };
        Ok(Self { source, id, timestamp, body })
    }
}

/// The characters SQS accepts in a message body.
fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(body: &[u8]) -> Envelope {
        Envelope {
            source: "nectar".into(),
            id: "msg_1".into(),
            timestamp: 1_700_000_000,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn round_trip(original: &Envelope) -> Envelope {
        let message = original.to_queue_message();
        Envelope::from_queue_message(&message.body, |name| message.attribute(name)).unwrap()
    }

    #[test]
    fn json_body_travels_as_is() {
        let original = envelope(br#"{"eventType":"document.created.v2"}"#);
        let message = original.to_queue_message();
        assert_eq!(message.body.as_bytes(), &original.body[..]);
        assert_eq!(message.attribute(ATTR_BODY_ENCODING), None);
        assert_eq!(round_trip(&original), original);
    }

    #[test]
    fn bodies_sqs_cannot_carry_are_base64_and_round_trip() {
        for body in [&b"\xff\xfe binary"[..], b"nul \x00 byte", b"bell \x07"] {
            let original = envelope(body);
            assert_eq!(original.to_queue_message().attribute(ATTR_BODY_ENCODING), Some("base64"));
            assert_eq!(round_trip(&original), original);
        }
    }

    #[test]
    fn missing_attributes_are_named() {
        let err = Envelope::from_queue_message("{}", |_| None).unwrap_err();
        assert_eq!(err, DecodeError::MissingAttribute(ATTR_ID));
    }
}
