//! Svix / Standard Webhooks signature verification.
//!
//! The signed content is `{id}.{timestamp}.{body}`, MACed with HMAC-SHA256 under
//! each configured secret; the signature header carries one or more
//! space-separated `v1,<base64>` entries and any match passes. Everything here
//! works on borrowed bytes: the body is never copied, and each configured key's
//! HMAC state is prepared once at start-up so a request costs one MAC pass.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// How far a timestamp may be from the receiver's clock, as Svix's libraries allow.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Only this many signature entries are examined, so a hostile header cannot
/// make one request cost unbounded CPU. Svix sends one per active secret.
pub const MAX_SIGNATURE_ENTRIES: usize = 20;

const SIGNATURE_LEN: usize = 32;
const SECRET_PREFIX: &str = "whsec_";

/// Base64 that accepts secrets with or without their `=` padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a secret from configuration could not be used; names the entry, never its value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no secret given")]
    Empty,
    #[error("entry {position} is not base64 (expected whsec_ followed by base64)")]
    NotBase64 { position: usize },
    #[error("entry {position} decodes to an empty key")]
    EmptyKey { position: usize },
}

/// Why a signed request was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("timestamp header is not a whole number of seconds")]
    InvalidTimestamp,
    #[error("timestamp is {age_secs} s old, over the {tolerance_secs} s tolerance")]
    TimestampTooOld { age_secs: u64, tolerance_secs: u64 },
    #[error("timestamp is {ahead_secs} s in the future, over the {tolerance_secs} s tolerance")]
    TimestampInFuture { ahead_secs: u64, tolerance_secs: u64 },
    #[error("signature header has no v1 entry")]
    NoSupportedSignature,
    #[error("no signature matched any configured secret")]
    NoMatchingSignature,
}

/// The three header values that Svix signs over, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// The signing secrets of one endpoint; several at once during rotation.
#[derive(Clone)]
pub struct SigningSecrets {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningSecrets({} keys, redacted)", self.keys.len())
    }
}

impl SigningSecrets {
    /// Parses whitespace-separated secrets: `whsec_<base64>` or bare base64.
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        let keys = list
            .split_whitespace()
            .enumerate()
            .map(|(index, entry)| {
                let position = index + 1;
                let key = decode_secret(entry).ok_or(SecretError::NotBase64 { position })?;
                if key.is_empty() {
                    return Err(SecretError::EmptyKey { position });
                }
                Ok(HmacSha256::new_from_slice(&key).expect("HMAC accepts keys of any length"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn decode_secret(entry: &str) -> Option<Vec<u8>> {
    let encoded = entry.strip_prefix(SECRET_PREFIX).unwrap_or(entry);
    LENIENT_BASE64.decode(encoded).ok()
}

/// Checks Svix signatures against a set of secrets within a timestamp tolerance.
#[derive(Debug, Clone)]
pub struct SvixVerifier {
    secrets: SigningSecrets,
    tolerance_secs: u64,
}

impl SvixVerifier {
    pub fn new(secrets: SigningSecrets, tolerance_secs: u64) -> Self {
        Self { secrets, tolerance_secs }
    }

    /// Verifies `body` exactly as received; returns the signed timestamp.
    pub fn verify(&self, headers: &SignedHeaders<'_>, body: &[u8], now_unix: i64) -> Result<i64, VerifyError> {
        let timestamp = parse_timestamp(headers.timestamp)?;
        self.check_freshness(timestamp, now_unix)?;

        let (saw_v1, candidates) = v1_candidates(headers.signature);
        if !saw_v1 {
            return Err(VerifyError::NoSupportedSignature);
        }
        for key in &self.secrets.keys {
            let expected = mac(key.clone(), headers.id, headers.timestamp, body);
            let matched =
                candidates.iter().fold(subtle::Choice::from(0), |any, candidate| any | candidate.ct_eq(&expected));
            if bool::from(matched) {
                return Ok(timestamp);
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }

    fn check_freshness(&self, timestamp: i64, now_unix: i64) -> Result<(), VerifyError> {
        let tolerance_secs = self.tolerance_secs;
        let delta = i128::from(now_unix) - i128::from(timestamp);
        let distance = u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX);
        if distance <= tolerance_secs {
            Ok(())
        } else if delta > 0 {
            Err(VerifyError::TimestampTooOld { age_secs: distance, tolerance_secs })
        } else {
            Err(VerifyError::TimestampInFuture { ahead_secs: distance, tolerance_secs })
        }
    }
}

fn parse_timestamp(value: &str) -> Result<i64, VerifyError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    value.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

/// Whether the header has any `v1` entry, and those that decode to exactly a
/// MAC's length (empty, truncated or overlong ones can never match).
fn v1_candidates(header: &str) -> (bool, Vec<[u8; SIGNATURE_LEN]>) {
    let mut saw_v1 = false;
    let candidates = header
        .split(' ')
        .filter(|entry| !entry.is_empty())
        .take(MAX_SIGNATURE_ENTRIES)
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| {
            saw_v1 = true;
            let mut decoded = [0u8; SIGNATURE_LEN];
            match general_purpose::STANDARD.decode_slice(encoded, &mut decoded) {
                Ok(SIGNATURE_LEN) => Some(decoded),
                _ => None,
            }
        })
        .collect();
    (saw_v1, candidates)
}

fn mac(mut key: HmacSha256, id: &str, timestamp: &str, body: &[u8]) -> [u8; SIGNATURE_LEN] {
    key.update(id.as_bytes());
    key.update(b".");
    key.update(timestamp.as_bytes());
    key.update(b".");
    key.update(body);
    key.finalize().into_bytes().into()
}

/// Produces the `v1,<base64>` signature Svix would send, for the CLI's `sign`
/// and `send` commands and for tests. Uses the first secret of the set.
pub fn sign(secrets: &SigningSecrets, id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secrets.keys[0].clone(), id, &timestamp.to_string(), body);
    format!("v1,{}", general_purpose::STANDARD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verifier(secrets: &str) -> SvixVerifier {
        SvixVerifier::new(SigningSecrets::parse(secrets).unwrap(), DEFAULT_TOLERANCE_SECS)
    }

    fn headers<'a>(timestamp: &'a str, signature: &'a str) -> SignedHeaders<'a> {
        SignedHeaders { id: ID, timestamp, signature }
    }

    #[test]
    fn published_svix_vector_verifies() {
        assert_eq!(verifier(SECRET).verify(&headers("1614265330", SIG), BODY, TS), Ok(TS));
    }

    #[test]
    fn second_published_vector_verifies() {
        let v = verifier("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let h = SignedHeaders {
            id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            timestamp: "1649367553",
            signature: "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        };
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(v.verify(&h, body, 1649367553), Ok(1649367553));
    }

    #[test]
    fn sign_reproduces_the_published_signature() {
        assert_eq!(sign(&SigningSecrets::parse(SECRET).unwrap(), ID, TS, BODY), SIG);
    }

    #[test]
    fn any_matching_entry_passes_and_other_versions_are_skipped() {
        let header = format!("v0,bm9wZQ== v1,AAAA v1a,xyz {SIG}");
        assert_eq!(verifier(SECRET).verify(&headers("1614265330", &header), BODY, TS), Ok(TS));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let v = verifier(&format!("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD {SECRET}"));
        assert_eq!(v.verify(&headers("1614265330", SIG), BODY, TS), Ok(TS));
    }

    #[test]
    fn secret_without_prefix_or_padding_is_accepted() {
        let v = verifier("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(v.verify(&headers("1614265330", SIG), BODY, TS), Ok(TS));
    }

    #[test]
    fn tampered_body_is_refused() {
        let body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verifier(SECRET).verify(&headers("1614265330", SIG), body, TS),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn empty_truncated_and_overlong_signatures_never_pass() {
        for sig in ["v1,", "v1,g0hM9SsE+OTPJTGt", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=AAAA"] {
            assert_eq!(
                verifier(SECRET).verify(&headers("1614265330", sig), BODY, TS),
                Err(VerifyError::NoMatchingSignature),
                "{sig}"
            );
        }
    }

    #[test]
    fn header_without_v1_entries_is_malformed() {
        for sig in ["", "garbage", "v2,abc"] {
            assert_eq!(
                verifier(SECRET).verify(&headers("1614265330", sig), BODY, TS),
                Err(VerifyError::NoSupportedSignature)
            );
        }
    }

    #[test]
    fn entries_past_the_cap_are_not_examined() {
        let header = format!("{}{SIG}", "v1,AAAA ".repeat(MAX_SIGNATURE_ENTRIES));
        assert_eq!(
            verifier(SECRET).verify(&headers("1614265330", &header), BODY, TS),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let v = verifier(SECRET);
        assert_eq!(v.verify(&headers("1614265330", SIG), BODY, TS + 300), Ok(TS));
        assert_eq!(v.verify(&headers("1614265330", SIG), BODY, TS - 300), Ok(TS));
        assert_eq!(
            v.verify(&headers("1614265330", SIG), BODY, TS + 301),
            Err(VerifyError::TimestampTooOld { age_secs: 301, tolerance_secs: 300 })
        );
        assert_eq!(
            v.verify(&headers("1614265330", SIG), BODY, TS - 301),
            Err(VerifyError::TimestampInFuture { ahead_secs: 301, tolerance_secs: 300 })
        );
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for ts in ["", "abc", "-1614265330", "1614265330.5", "99999999999999999999999"] {
            assert_eq!(
                verifier(SECRET).verify(&headers(ts, SIG), BODY, TS),
                Err(VerifyError::InvalidTimestamp),
                "{ts}"
            );
        }
    }

    #[test]
    fn bad_secrets_are_named_by_position() {
        assert_eq!(SigningSecrets::parse("  ").unwrap_err(), SecretError::Empty);
        assert_eq!(
            SigningSecrets::parse(&format!("{SECRET} whsec_!!!")).unwrap_err(),
            SecretError::NotBase64 { position: 2 }
        );
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let shown = format!("{:?}", verifier(SECRET));
        assert!(!shown.contains("MfKQ"), "{shown}");
    }
}
