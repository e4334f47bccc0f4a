//! Item 1 of BENCHMARKS.md: one Svix signature check on payloads of 1 KiB to
//! 1 MiB, ours beside the official crates and beside a bare HMAC-SHA256 over
//! the same signed content, the floor no verifier can go under.

#[path = "support/interleaved.rs"]
mod interleaved;
#[path = "support/payload.rs"]
mod payload;

use http::{HeaderMap, HeaderValue};
use interleaved::Closure;
use nectar_webhooks::core::sources::{Authenticator, SvixSource};
use nectar_webhooks::core::verification::svix::{
    DEFAULT_TOLERANCE_SECS, SignedHeaders, SigningSecrets, SvixVerifier, sign,
};
use serde_json::{Map, Value};
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SIZES: [(&str, usize); 4] = [("1KiB", 1024), ("16KiB", 16 * 1024), ("256KiB", 256 * 1024), ("1MiB", 1024 * 1024)];

/// The official crates check against the system clock, so each size is
/// signed just before it is measured.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

fn headers(prefix: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in [("id", ID), ("timestamp", timestamp), ("signature", signature)] {
        let name = http::HeaderName::from_bytes(format!("{prefix}-{name}").as_bytes()).expect("valid name");
        map.insert(name, HeaderValue::from_str(value).expect("visible ASCII"));
    }
    map
}

fn main() {
    use base64::Engine as _;
    let ours = SvixVerifier::new(SigningSecrets::parse(SECRET).unwrap(), DEFAULT_TOLERANCE_SECS);
    let ours_from_headers = SvixSource::new(ours.clone());
    let official = svix::webhooks::Webhook::new(SECRET).unwrap();
    let standard = standardwebhooks::Webhook::new(KEY).unwrap();
    let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
    let aws_lc_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let rounds = interleaved::rounds(200);

    let mut figures = Map::new();
    for (label, size) in SIZES {
        println!("verify, {label}:");
        let body = payload::document_payload(size);
        let now = now();
        let timestamp = now.to_string();
        let signature = sign(SECRET, ID, now, &body).unwrap();
        let signed = SignedHeaders { id: ID, timestamp: &timestamp, signature: &signature };
        let svix_headers = headers("svix", &timestamp, &signature);
        let standard_headers = headers("webhook", &timestamp, &signature);
        let body = body.as_slice();
        let closures: Vec<(String, Closure<'_>)> = vec![
            ("ours".into(), Box::new(|| assert!(ours.verify(black_box(&signed), black_box(body), now).is_ok()))),
            (
                "ours_from_headers".into(),
                Box::new(|| {
                    assert!(ours_from_headers.authenticate(black_box(&svix_headers), black_box(body), now).is_ok())
                }),
            ),
            ("svix".into(), Box::new(|| assert!(official.verify(black_box(body), black_box(&svix_headers)).is_ok()))),
            (
                "standardwebhooks".into(),
                Box::new(|| assert!(standard.verify(black_box(body), black_box(&standard_headers)).is_ok())),
            ),
            (
                "bare_hmac_aws_lc".into(),
                Box::new(|| {
                    let mut mac = aws_lc_rs::hmac::Context::with_key(&aws_lc_key);
                    mac.update(ID.as_bytes());
                    mac.update(b".");
                    mac.update(timestamp.as_bytes());
                    mac.update(b".");
                    mac.update(black_box(body));
                    black_box(mac.sign());
                }),
            ),
            (
                "bare_hmac_sha256_crate".into(),
                Box::new(|| {
                    let mut mac = hmac_sha256::HMAC::new(&key);
                    mac.update(ID.as_bytes());
                    mac.update(b".");
                    mac.update(timestamp.as_bytes());
                    mac.update(b".");
                    mac.update(black_box(body));
                    black_box(mac.finalize());
                }),
            ),
        ];
        let samples = interleaved::measure(closures, rounds, Duration::from_millis(1));
        figures.insert(label.into(), interleaved::to_json(&samples));
    }
    interleaved::write("verify", &Value::Object(figures));
}
