//! Event types and resource ids, read from a payload without building a model.
//!
//! Nectar's payloads carry `eventType`; Nector's (the second source) carry
//! `eventType`, `event` or `topic`, and are prefixed `nector.` so routes can
//! tell the sources apart.

use serde::Deserialize;
use std::borrow::Cow;

/// The type given to payloads whose type cannot be read (no `eventType`
/// field, or a body that is not JSON), so they can still be routed.
pub const UNKNOWN_EVENT_TYPE: &str = "unknown";

/// The source whose payloads are typed by `event` or `topic` as well.
pub const NECTOR_SOURCE: &str = "nector";

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

/// The fields read; everything else is skipped unparsed. A field that is
/// not a string reads as absent rather than spoiling the others.
#[derive(Deserialize, Default)]
struct Fields<'a> {
    #[serde(rename = "eventType", borrow, default, deserialize_with = "string_or_none")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_none")]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_none")]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_none")]
    id: Option<Cow<'a, str>>,
}

fn string_or_none<'de: 'a, 'a, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct StringOrNone;
    impl<'de> serde::de::Visitor<'de> for StringOrNone {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    deserializer.deserialize_any(StringOrNone)
}

/// What routing needs to know about a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The event type, or [`UNKNOWN_EVENT_TYPE`].
    pub event_type: String,
    /// The connection's or document's id (the payload's `id`), if any: what
    /// keeps one resource's events in order on FIFO queues.
    pub resource_id: Option<String>,
}

/// Reads the event type and resource id of a payload from `source`.
pub fn probe(source: &str, body: &[u8]) -> Probe {
    let fields = serde_json::from_slice::<Fields<'_>>(body).unwrap_or_default();
    let usable = |t: &Option<Cow<'_, str>>| t.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
    let event_type = if source == NECTOR_SOURCE {
        let found = usable(&fields.event_type).or_else(|| usable(&fields.event)).or_else(|| usable(&fields.topic));
        format!("{NECTOR_SOURCE}.{}", found.as_deref().unwrap_or(UNKNOWN_EVENT_TYPE))
    } else {
        usable(&fields.event_type).unwrap_or_else(|| UNKNOWN_EVENT_TYPE.to_owned())
    };
    Probe { event_type, resource_id: usable(&fields.id) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_type_of(source: &str, body: &[u8]) -> String {
        probe(source, body).event_type
    }

    #[test]
    fn reads_the_event_type_and_id() {
        let probe = probe("nectar", br#"{"id":"b2d4","eventType":"document.created.v2","topic":"t"}"#);
        assert_eq!(probe, Probe { event_type: "document.created.v2".into(), resource_id: Some("b2d4".into()) });
    }

    #[test]
    fn payloads_without_a_readable_type_are_unknown() {
        for body in [
            &b"{}"[..],
            b"not json",
            b"[1,2]",
            br#"{"eventType": 3}"#,
            br#"{"eventType":""}"#,
            br#"{"eventType":null}"#,
        ] {
            assert_eq!(event_type_of("nectar", body), UNKNOWN_EVENT_TYPE, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_field_of_another_type_does_not_spoil_the_others() {
        let probe = probe("nectar", br#"{"id": 42, "eventType": "connection.created", "event": {"a": [1]}}"#);
        assert_eq!(probe, Probe { event_type: "connection.created".into(), resource_id: None });
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
