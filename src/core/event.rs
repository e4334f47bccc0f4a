//! Nectar's event types, as read from a payload's `eventType` field.

use serde::Deserialize;
use std::borrow::Cow;

/// The type given to payloads whose type cannot be read (no `eventType`
/// field, or a body that is not JSON), so they can still be routed.
pub const UNKNOWN_EVENT_TYPE: &str = "unknown";

/// Every event type Nectar documents, v1 and v2.
pub const NECTAR_EVENT_TYPES: [&str; 12] = [
    "connection.created",
    "connection.updated",
    "connection.validated",
    "document.created",
    "document.updated",
    "document.deleted",
    "connection.created.v2",
    "connection.updated.v2",
    "connection.validated.v2",
    "document.created.v2",
    "document.updated.v2",
    "document.deleted.v2",
];

#[derive(Deserialize)]
struct TypeProbe<'a> {
    #[serde(rename = "eventType", borrow, default)]
    event_type: Option<Cow<'a, str>>,
}

/// Reads the event type of a payload; [`UNKNOWN_EVENT_TYPE`] when there is none.
pub fn event_type_of(body: &[u8]) -> String {
    match serde_json::from_slice::<TypeProbe<'_>>(body) {
        Ok(TypeProbe { event_type: Some(event_type) }) if !event_type.trim().is_empty() => event_type.into_owned(),
        _ => UNKNOWN_EVENT_TYPE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_type_field() {
        assert_eq!(event_type_of(br#"{"id":"x","eventType":"document.created.v2"}"#), "document.created.v2");
    }

    #[test]
    fn payloads_without_a_readable_type_are_unknown() {
        for body in [&b"{}"[..], b"not json", b"[1,2]", br#"{"eventType": 3}"#, br#"{"eventType":""}"#] {
            assert_eq!(event_type_of(body), UNKNOWN_EVENT_TYPE, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn invalid_json_from_the_seeds_is_unknown() {
        assert_eq!(event_type_of(br#"{"accountIds": [0137746423]}"#), UNKNOWN_EVENT_TYPE);
    }
}
