//! Verification proven beyond our own vectors: every case the official Svix
//! library signs must verify, and every single-byte change to what it signed
//! must not; property tests do the same with arbitrary inputs.

#![cfg(feature = "adapters")]

use nectar_webhooks::core::verification::svix::{SignedHeaders, SigningSecrets, SvixVerifier, sign};
use proptest::prelude::*;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;

/// How many random cases the official library signs (`CROSSCHECK_CASES` to change).
const DEFAULT_CASES: usize = 2000;

#[derive(Deserialize)]
struct Case {
    secrets: Vec<String>,
    id: String,
    timestamp: i64,
    payload: String,
    signature: String,
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() { venv } else { "python3".into() }
}

fn official_cases() -> Vec<Case> {
    let count = std::env::var("CROSSCHECK_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/crosscheck/svix_cases.py");
    let output =
        Command::new(python()).arg(&script).args([count.to_string(), "20261127".into()]).output().unwrap_or_else(
            |err| panic!("cannot run {} (run `make test`, which installs svix): {err}", python().display()),
        );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let cases: Vec<Case> =
        String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(cases.len(), count);
    cases
}

fn verifies(verifier: &SvixVerifier, id: &str, timestamp: &str, signature: &str, body: &[u8], now: i64) -> bool {
    verifier.verify(&SignedHeaders { id, timestamp, signature }, body, now).is_ok()
}

/// Every position of `text` with its byte replaced by another printable one.
fn single_byte_mutations(text: &str) -> impl Iterator<Item = String> + '_ {
    (0..text.len()).map(move |i| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' {
            b'B'
        } else if bytes[i].is_ascii_digit() {
            b'0' + (bytes[i] - b'0' + 1) % 10
        } else {
            b'A'
        };
        String::from_utf8(bytes).unwrap()
    })
}

#[test]
fn every_case_signed_by_the_official_library_verifies_and_no_mutation_does() {
    use base64::Engine as _;
    let cases = official_cases();
    let (mut accepted, mut mutations) = (0, 0);
    for case in &cases {
        let verifier = SvixVerifier::new(SigningSecrets::parse(&case.secrets.join(" ")).unwrap(), 300);
        let body = base64::engine::general_purpose::STANDARD.decode(&case.payload).unwrap();
        let ts = case.timestamp.to_string();
        let now = case.timestamp;
        assert!(verifies(&verifier, &case.id, &ts, &case.signature, &body, now), "official case {} refused", case.id);
        accepted += 1;

        let step = (body.len() / 256).max(1);
        for position in (0..body.len()).step_by(step) {
            let mut mutated = body.clone();
            mutated[position] ^= 0x01;
            assert!(!verifies(&verifier, &case.id, &ts, &case.signature, &mutated, now), "body byte {position}");
            mutations += 1;
        }
        for id in single_byte_mutations(&case.id) {
            assert!(!verifies(&verifier, &id, &ts, &case.signature, &body, now), "id {id}");
            mutations += 1;
        }
        for mutated_ts in single_byte_mutations(&ts) {
            assert!(!verifies(&verifier, &case.id, &mutated_ts, &case.signature, &body, now), "timestamp {mutated_ts}");
            mutations += 1;
        }
        if !case.signature.contains(' ') {
            for signature in single_byte_mutations(&case.signature) {
                assert!(!verifies(&verifier, &case.id, &ts, &signature, &body, now), "signature {signature}");
                mutations += 1;
            }
        }
    }
    println!("cross-check: {accepted} official signatures accepted, {mutations} single-byte mutations refused");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn what_we_sign_verifies_and_any_changed_byte_does_not(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        id in "[a-zA-Z0-9_]{1,40}",
        timestamp in 0i64..4_000_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        flip in any::<prop::sample::Index>(),
    ) {
        use base64::Engine as _;
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let verifier = SvixVerifier::new(SigningSecrets::parse(&secret).unwrap(), 300);
        let signature = sign(&secret, &id, timestamp, &body).unwrap();
        let ts = timestamp.to_string();
        prop_assert!(verifies(&verifier, &id, &ts, &signature, &body, timestamp));
        if !body.is_empty() {
            let mut mutated = body.clone();
            mutated[flip.index(body.len())] ^= 0x80;
            prop_assert!(!verifies(&verifier, &id, &ts, &signature, &mutated, timestamp));
        }
    }

    #[test]
    fn arbitrary_headers_never_panic(
        id in ".{0,64}",
        timestamp in ".{0,24}",
        signature in ".{0,512}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let verifier = SvixVerifier::new(SigningSecrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(), 300);
        let _ = verifier.verify(&SignedHeaders { id: &id, timestamp: &timestamp, signature: &signature }, &body, 1_700_000_000);
    }
}
