//! Event types, as read from a payload: Nectar's `eventType` field, or for
//! Nector (the second source) its `eventType`, `event` or `topic`, prefixed
//! `nector.` so routes can tell the sources apart.

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

/// The fields a type may be read from; everything else is skipped unparsed.
#[derive(Deserialize, Default)]
struct TypeProbe<'a> {
    #[serde(rename = "eventType", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
}

/// The source whose payloads are typed by `event` or `topic` as well.
pub const NECTOR_SOURCE: &str = "nector";

/// Reads the event type of a payload from `source`; [`UNKNOWN_EVENT_TYPE`]
/// (after the `nector.` prefix for Nector) when there is none.
pub fn event_type_of(source: &str, body: &[u8]) -> String {
    let probe = serde_json::from_slice::<TypeProbe<'_>>(body).unwrap_or_default();
    let usable = |t: &Option<Cow<'_, str>>| t.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
    if source == NECTOR_SOURCE {
        let found = usable(&probe.event_type).or_else(|| usable(&probe.event)).or_else(|| usable(&probe.topic));
        return format!("{NECTOR_SOURCE}.{}", found.as_deref().unwrap_or(UNKNOWN_EVENT_TYPE));
    }
    usable(&probe.event_type).unwrap_or_else(|| UNKNOWN_EVENT_TYPE.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_type_field() {
        assert_eq!(
            event_type_of("nectar", br#"{"id":"x","eventType":"document.created.v2","topic":"t"}"#),
            "document.created.v2"
        );
    }

    #[test]
    fn payloads_without_a_readable_type_are_unknown() {
        for body in [&b"{}"[..], b"not json", b"[1,2]", br#"{"eventType": 3}"#, br#"{"eventType":""}"#] {
            assert_eq!(event_type_of("nectar", body), UNKNOWN_EVENT_TYPE, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn invalid_json_from_the_seeds_is_unknown() {
        assert_eq!(event_type_of("nectar", br#"{"accountIds": [0137746423]}"#), UNKNOWN_EVENT_TYPE);
    }

    #[test]
    fn nector_types_are_prefixed_and_read_from_several_fields() {
        assert_eq!(event_type_of("nector", br#"{"topic":"wallet.coins.rewarded"}"#), "nector.wallet.coins.rewarded");
        assert_eq!(event_type_of("nector", br#"{"event":"coupon.created","topic":"x"}"#), "nector.coupon.created");
        assert_eq!(event_type_of("nector", b"[]"), "nector.unknown");
        assert_eq!(event_type_of("nectar", br#"{"topic":"wallet.coins.rewarded"}"#), UNKNOWN_EVENT_TYPE);
    }
}
