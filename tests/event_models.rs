//! Every JSON example in Nectar's docs (`events/payloads/`) parses into the
//! typed model of its event type; the one that is not JSON does not.

use nectar_webhooks::core::events::{NECTAR_EVENT_TYPES, NectarEvent, UNKNOWN_EVENT_TYPE, Version, probe};
use std::path::PathBuf;

fn payloads() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events/payloads");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_documented_event_type_has_a_fixture_that_parses_into_its_variant() {
    let payloads = payloads();
    for event_type in NECTAR_EVENT_TYPES {
        let (_, body) = payloads.iter().find(|(name, _)| name == event_type).expect("a fixture per type");
        assert_eq!(probe("nectar", body).event_type, event_type);
        let event = NectarEvent::parse(event_type, body).unwrap_or_else(|err| panic!("{event_type}: {err}"));
        let expected_version = if event_type.ends_with(".v2") { Version::V2 } else { Version::V1 };
        assert_eq!(event.version(), expected_version, "{event_type}");
        let variant = format!("{event:?}");
        let name: String = event_type.trim_end_matches(".v2").split('.').map(capitalised).collect();
        assert!(variant.starts_with(&name), "{event_type} parsed as {}", &variant[..40]);
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[test]
fn the_guide_examples_keep_their_details() {
    let body =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events/payloads/connection.updated.v2.json"))
            .unwrap();
    let NectarEvent::ConnectionUpdated { connection, .. } = NectarEvent::parse("connection.updated.v2", &body).unwrap()
    else {
        panic!("not a connection update")
    };
    assert_eq!(connection.protected_changes, ["status"]);
    assert_eq!(connection.old.unwrap()["status"], "PENDING");
    assert_eq!(connection.company.unwrap().id(), Some("91c21c6b-5f3f-4d5f-9fb9-02530ef4b13c"));
    assert_eq!(connection.sites_relations[0].account_ids, ["0137746423"]);
    assert!(connection.updated.unwrap().value().is_some());

    let body =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events/payloads/document.created.v2.json"))
            .unwrap();
    let NectarEvent::DocumentCreated { document, .. } = NectarEvent::parse("document.created.v2", &body).unwrap()
    else {
        panic!("not a document")
    };
    assert_eq!(document.site.unwrap().name.as_deref(), Some("California Facility 1"));
}

#[test]
fn the_example_without_an_event_type_is_unknown_but_typable_when_named() {
    let (_, body) = payloads().into_iter().find(|(name, _)| name == "connection.created.v2.no-event-type").unwrap();
    assert_eq!(probe("nectar", &body).event_type, UNKNOWN_EVENT_TYPE);
    assert!(matches!(NectarEvent::parse("connection.created.v2", &body), Ok(NectarEvent::ConnectionCreated { .. })));
}

#[test]
fn the_sample_that_is_not_json_is_unknown_and_untypable() {
    let (_, body) = payloads().into_iter().find(|(name, _)| name == "connection.created.invalid-json").unwrap();
    assert_eq!(probe("nectar", &body).event_type, UNKNOWN_EVENT_TYPE);
    assert!(NectarEvent::parse("connection.created", &body).is_err());
}
