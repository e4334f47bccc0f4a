//! Realistic webhook bodies of exact sizes, built from the sample payloads.

use serde_json::Value;

fn sample(name: &str) -> Value {
    let path = format!("{}/events/payloads/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).expect("sample payloads are JSON")
}

/// A Nectar `document.created.v2` payload of exactly `len` bytes (at least
/// about 600): line items as in `document.created.json` repeated as a long
/// bill would list them, then its `notes` padded to the last byte.
pub fn document_payload(len: usize) -> Vec<u8> {
    let mut doc = sample("document.created.v2.json");
    let item = sample("document.created.json")["lineItems"][0].clone();
    doc["lineItems"] = Value::Array(Vec::new());
    doc["notes"] = Value::String(String::new());
    let size = |doc: &Value| serde_json::to_vec(doc).expect("serialisable").len();
    let item_len = size(&item) + 1;
    while size(&doc) + item_len <= len {
        doc["lineItems"].as_array_mut().expect("an array").push(item.clone());
    }
    let short = len.checked_sub(size(&doc)).unwrap_or_else(|| panic!("{len} bytes is too small for a document"));
    doc["notes"] = Value::String("n".repeat(short));
    let body = serde_json::to_vec(&doc).expect("serialisable");
    assert_eq!(body.len(), len);
    body
}
