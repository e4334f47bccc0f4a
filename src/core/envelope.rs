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
/// Attribute carrying when ingest received the webhook, in Unix
/// milliseconds: what the archive records and replay windows compare with.
pub const ATTR_RECEIVED: &str = "received-at";
/// Attribute on dead-lettered copies: why the last delivery failed.
pub const ATTR_FAILURE_REASON: &str = "failure-reason";
/// Attribute on dead-lettered copies: how many times delivery was tried.
pub const ATTR_FAILED_RECEIVES: &str = "failed-receives";

/// The attributes this format defines, so copies can carry them over.
const KNOWN_ATTRIBUTES: [&str; 10] = [
    ATTR_ID,
    ATTR_TIMESTAMP,
    ATTR_SOURCE,
    ATTR_RECEIVED,
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

impl QueueMessage {
    /// The message for a verified webhook, made straight from the bytes
    /// received: ingest builds no [`Envelope`] first, so the body is copied
    /// once, into the message.
    pub fn for_webhook(source: &str, id: &str, timestamp: i64, body: &[u8]) -> Self {
        let mut attributes =
            vec![(ATTR_ID, id.to_owned()), (ATTR_TIMESTAMP, timestamp.to_string()), (ATTR_SOURCE, source.to_owned())];
        let body = match std::str::from_utf8(body) {
            Ok(text) if sqs_allows(text) => text.to_owned(),
            _ => {
                attributes.push((ATTR_BODY_ENCODING, "base64".to_owned()));
                STANDARD.encode(body)
            }
        };
        Self { body, attributes }
    }
}

impl Envelope {
    pub fn to_queue_message(&self) -> QueueMessage {
        QueueMessage::for_webhook(&self.source, &self.id, self.timestamp, &self.body)
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

/// When ingest received a queued webhook ([`ATTR_RECEIVED`]), if its
/// message says.
pub fn received_at<'a>(attribute: impl Fn(&str) -> Option<&'a str>) -> Option<chrono::DateTime<chrono::Utc>> {
    attribute(ATTR_RECEIVED).and_then(|millis| millis.parse().ok()).and_then(chrono::DateTime::from_timestamp_millis)
}

/// Whether SQS accepts every character of `text` in a message body: `\t`,
/// `\n`, `\r`, U+0020–U+D7FF, U+E000–U+FFFD and U+10000–U+10FFFF. In valid
/// UTF-8 (which has no surrogates) that means no control byte but those
/// three, and no U+FFFE or U+FFFF (`EF BF BE`, `EF BF BF`). Every webhook body
/// is scanned whole, so it is read eight bytes at a time, looking at single
/// bytes only in words holding a byte under 0x20; a scan by `char` costs more
/// than verifying the body, and a byte loop left to the vectoriser is as slow
/// at the release profile's `opt-level = "s"`.
fn sqs_allows(text: &str) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let allowed = |b: u8| b >= 0x20 || b == b'\t' || b == b'\n' || b == b'\r';
    let bytes = text.as_bytes();
    let (words, rest) = bytes.as_chunks::<8>();
    let word_allowed = |word: &[u8; 8]| {
        let x = u64::from_le_bytes(*word);
        // Non-zero exactly when some byte is under 0x20 ("hasless", Bit Twiddling Hacks).
        let has_control = x.wrapping_sub(ONES * 0x20) & !x & HIGH_BITS != 0;
        !has_control || word.iter().all(|&b| allowed(b))
    };
    let no_controls = words.iter().all(word_allowed) && rest.iter().all(|&b| allowed(b));
    let no_fffe_ffff =
        || !bytes.contains(&0xEF) || !bytes.windows(3).any(|w| w[0] == 0xEF && w[1] == 0xBF && w[2] >= 0xBE);
    no_controls && no_fffe_ffff()
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

    /// The definition SQS documents, one `char` at a time.
    fn sqs_allows_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    }

    proptest::proptest! {
        #[test]
        fn bytewise_check_agrees_with_the_documented_characters(
            chars in proptest::collection::vec(proptest::prop_oneof![
                10 => proptest::char::any(),
                10 => proptest::char::range(' ', '~'),
                1 => proptest::sample::select(vec![
                    '\0', '\t', '\n', '\r', '\u{b}', '\u{1f}', ' ', '\u{7f}', '\u{80}', '\u{9f}', '\u{d7ff}',
                    '\u{e000}', '\u{fffc}', '\u{fffd}', '\u{fffe}', '\u{ffff}', '\u{10000}', '\u{10ffff}',
                ]),
            ], 0..150)
        ) {
            let text: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(sqs_allows(&text), text.chars().all(sqs_allows_char));
        }
    }

    #[test]
    fn missing_attributes_are_named() {
        let err = Envelope::from_queue_message("{}", |_| None).unwrap_err();
        assert_eq!(err, DecodeError::MissingAttribute(ATTR_ID));
    }
}
