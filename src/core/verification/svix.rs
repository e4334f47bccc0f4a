//! Svix / Standard Webhooks signatures.
//!
//! The signed content is `{id}.{timestamp}.{body}`. Symmetric secrets
//! (`whsec_…`) give `v1,<base64 HMAC-SHA256>` entries; public keys
//! (`whpk_…`) verify `v1a,<base64 Ed25519>` entries, which the Standard
//! Webhooks spec defines and the official Svix libraries do not verify. The
//! signature header holds one or more space-separated entries; any match
//! passes. The body is never copied for HMAC, and each key's HMAC state is
//! prepared once at start-up, so a request costs one MAC pass per secret.
//!
//! The MAC is AWS-LC's (through `aws-lc-rs`, a general-purpose crypto library
//! the HTTPS stack links anyway): its SHA-256 is assembly with a path for each
//! CPU (SHA extensions on x86-64, the ARMv8 SHA2 instructions on Graviton,
//! AVX2 or SSSE3 otherwise), about 1.8× the portable Rust implementations on a
//! CPU without SHA extensions (BENCHMARKS.md, section 1).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use ed25519_dalek::{Signature, VerifyingKey};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// How far a timestamp may be from the receiver's clock, as Svix's libraries allow.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Only this many signature entries are examined, so a hostile header cannot
/// make one request cost unbounded CPU. Svix sends one per active secret.
pub const MAX_SIGNATURE_ENTRIES: usize = 20;

const MAC_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;
const SECRET_PREFIX: &str = "whsec_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";
const PRIVATE_KEY_PREFIX: &str = "whsk_";

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
    #[error("entry {position} is not base64 (expected whsec_ or whpk_ followed by base64)")]
    NotBase64 { position: usize },
    /// Svix's portal and other tools list secrets with commas; this
    /// variable separates them with spaces.
    #[error("entry {position} contains a comma; separate several secrets with spaces (\"whsec_… whsec_…\")")]
    CommaSeparated { position: usize },
    #[error("entry {position} decodes to an empty key")]
    EmptyKey { position: usize },
    #[error("entry {position} is not a 32-byte Ed25519 public key")]
    NotPublicKey { position: usize },
    #[error("entry {position} is a private signing key (whsk_); configure its public key (whpk_)")]
    PrivateKey { position: usize },
    /// From [`sign`]: Svix signs with the endpoint's symmetric secret; the
    /// asymmetric keys only verify here.
    #[error(
        "entry {position} is an Ed25519 key (whpk_ or whsk_); signing needs the endpoint's symmetric secret (whsec_…, from the Svix portal or `nectar-webhooks secret`)"
    )]
    NotSymmetric { position: usize },
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
    #[error("signature header has no v1 or v1a entry")]
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

#[derive(Clone)]
enum Key {
    /// Boxed: AWS-LC's prepared HMAC state is over a kilobyte.
    Symmetric(Box<hmac::Key>),
    Public(VerifyingKey),
}

/// The keys of one endpoint; several at once during rotation.
#[derive(Clone)]
pub struct SigningSecrets {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningSecrets({} keys, redacted)", self.keys.len())
    }
}

impl SigningSecrets {
    /// Parses whitespace-separated keys: `whsec_<base64>` or bare base64
    /// (symmetric secrets), `whpk_<base64>` (Ed25519 public keys).
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        let keys = list
            .split_whitespace()
            .enumerate()
            .map(|(index, entry)| parse_key(index + 1, entry))
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

fn parse_key(position: usize, entry: &str) -> Result<Key, SecretError> {
    if entry.contains(',') {
        return Err(SecretError::CommaSeparated { position });
    }
    if entry.starts_with(PRIVATE_KEY_PREFIX) {
        return Err(SecretError::PrivateKey { position });
    }
    if let Some(encoded) = entry.strip_prefix(PUBLIC_KEY_PREFIX) {
        let bytes = LENIENT_BASE64.decode(encoded).map_err(|_| SecretError::NotBase64 { position })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretError::NotPublicKey { position })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SecretError::NotPublicKey { position })?;
        return Ok(Key::Public(key));
    }
    let encoded = entry.strip_prefix(SECRET_PREFIX).unwrap_or(entry);
    let secret = LENIENT_BASE64.decode(encoded).map_err(|_| SecretError::NotBase64 { position })?;
    if secret.is_empty() {
        return Err(SecretError::EmptyKey { position });
    }
    Ok(Key::Symmetric(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &secret))))
}

/// Checks Svix signatures against a set of keys within a timestamp tolerance.
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
        let entries = Entries(headers.signature);
        if !entries.any_supported() {
            return Err(VerifyError::NoSupportedSignature);
        }
        let matched = self.secrets.keys.iter().any(|key| match key {
            Key::Symmetric(mac_key) => {
                let expected = mac(mac_key, headers.id, headers.timestamp, body);
                let any = entries.macs().fold(subtle::Choice::from(0), |any, c| any | c.ct_eq(&expected));
                bool::from(any)
            }
            Key::Public(public_key) => {
                let mut signatures = entries.ed25519().peekable();
                signatures.peek().is_some() && {
                    let content = signed_content(headers.id, headers.timestamp, body);
                    signatures.any(|signature| public_key.verify_strict(&content, &signature).is_ok())
                }
            }
        });
        if matched { Ok(timestamp) } else { Err(VerifyError::NoMatchingSignature) }
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

/// The entries of a signature header, read in place each time they are
/// needed rather than collected, so verifying allocates nothing. Entries of
/// other versions are skipped; empty, truncated or overlong ones never match.
#[derive(Clone, Copy)]
struct Entries<'a>(&'a str);

impl<'a> Entries<'a> {
    /// `(version, encoded signature)` of the first [`MAX_SIGNATURE_ENTRIES`] entries.
    fn all(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let entries = self.0.split(' ').filter(|entry| !entry.is_empty()).take(MAX_SIGNATURE_ENTRIES);
        entries.filter_map(|entry| entry.split_once(','))
    }

    fn any_supported(self) -> bool {
        self.all().any(|(version, _)| version == "v1" || version == "v1a")
    }

    fn macs(self) -> impl Iterator<Item = [u8; MAC_LEN]> + 'a {
        self.all().filter(|(version, _)| *version == "v1").filter_map(|(_, encoded)| decode_exact(encoded))
    }

    fn ed25519(self) -> impl Iterator<Item = Signature> + 'a {
        let decoded = self
            .all()
            .filter(|(version, _)| *version == "v1a")
            .filter_map(|(_, encoded)| decode_exact::<ED25519_SIGNATURE_LEN>(encoded));
        decoded.map(|bytes| Signature::from_bytes(&bytes))
    }
}

fn decode_exact<const N: usize>(encoded: &str) -> Option<[u8; N]> {
    let mut decoded = [0u8; N];
    match general_purpose::STANDARD.decode_slice(encoded, &mut decoded) {
        Ok(len) if len == N => Some(decoded),
        _ => None,
    }
}

fn mac(key: &hmac::Key, id: &str, timestamp: &str, body: &[u8]) -> [u8; MAC_LEN] {
    let mut context = hmac::Context::with_key(key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    let mut tag = [0u8; MAC_LEN];
    tag.copy_from_slice(context.sign().as_ref());
    tag
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// Signs like Svix with symmetric secrets (`whsec_…` or bare base64), for
/// the CLI's `sign` and `send` commands and for tests. Several secrets
/// separated by whitespace (`WEBHOOK_SECRET`'s rotation form) give one
/// signature each, space-separated, as Svix sends while a rotation is under way.
pub fn sign(secrets: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let timestamp = timestamp.to_string();
    let signatures = secrets
        .split_whitespace()
        .enumerate()
        .map(|(index, entry)| match parse_key(index + 1, entry) {
            Ok(Key::Symmetric(key)) => {
                Ok(format!("v1,{}", general_purpose::STANDARD.encode(mac(&key, id, &timestamp, body))))
            }
            Ok(Key::Public(_)) | Err(SecretError::PrivateKey { .. }) => {
                Err(SecretError::NotSymmetric { position: index + 1 })
            }
            Err(err) => Err(err),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if signatures.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(signatures.join(" "))
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
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), SIG);
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
        let commas = format!("{SECRET},{SECRET}");
        assert_eq!(SigningSecrets::parse(&commas).unwrap_err(), SecretError::CommaSeparated { position: 1 });
        assert!(SecretError::CommaSeparated { position: 1 }.to_string().contains("with spaces"));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let shown = format!("{:?}", verifier(SECRET));
        assert!(!shown.contains("MfKQ"), "{shown}");
    }

    const PUBLIC_KEY: &str = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=";
    const V1A_SIG: &str =
        "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==";

    #[test]
    fn svix_server_ed25519_vector_verifies_with_the_public_key() {
        assert_eq!(verifier(PUBLIC_KEY).verify(&headers("1614265330", V1A_SIG), BODY, TS), Ok(TS));
        assert_eq!(
            verifier(&format!("{SECRET} {PUBLIC_KEY}")).verify(&headers("1614265330", V1A_SIG), BODY, TS),
            Ok(TS)
        );
        assert_eq!(
            verifier(PUBLIC_KEY).verify(&headers("1614265330", V1A_SIG), br#"{"test": 2432232315}"#, TS),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn ed25519_signatures_from_the_matching_private_key_verify() {
        use ed25519_dalek::{Signer as _, SigningKey};
        let keypair = LENIENT_BASE64
            .decode("6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==")
            .unwrap();
        let signing_key = SigningKey::from_keypair_bytes(&keypair.try_into().unwrap()).unwrap();
        let signature = signing_key.sign(&signed_content(ID, "1614265330", BODY));
        let header = format!("v1a,{}", general_purpose::STANDARD.encode(signature.to_bytes()));
        assert_eq!(header, V1A_SIG);
    }

    #[test]
    fn hmac_entries_never_match_public_keys_and_vice_versa() {
        assert_eq!(
            verifier(PUBLIC_KEY).verify(&headers("1614265330", SIG), BODY, TS),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verifier(SECRET).verify(&headers("1614265330", V1A_SIG), BODY, TS),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn signing_with_a_rotation_list_gives_one_signature_per_secret() {
        let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let both = sign(&format!("{SECRET}  {other}"), ID, TS, BODY).unwrap();
        assert_eq!(both.split(' ').next(), Some(SIG));
        assert_eq!(both.split(' ').count(), 2);
        for secret in [SECRET, other] {
            assert_eq!(verifier(secret).verify(&headers("1614265330", &both), BODY, TS), Ok(TS));
        }
    }

    #[test]
    fn key_configuration_errors_are_specific() {
        let private = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";
        assert_eq!(SigningSecrets::parse(private).unwrap_err(), SecretError::PrivateKey { position: 1 });
        assert_eq!(SigningSecrets::parse("whpk_AAAA").unwrap_err(), SecretError::NotPublicKey { position: 1 });
        assert_eq!(SigningSecrets::parse("whsec_").unwrap_err(), SecretError::EmptyKey { position: 1 });
        assert_eq!(sign(PUBLIC_KEY, ID, TS, BODY).unwrap_err(), SecretError::NotSymmetric { position: 1 });
        assert_eq!(
            sign(&format!("{SECRET} {private}"), ID, TS, BODY).unwrap_err(),
            SecretError::NotSymmetric { position: 2 }
        );
    }

    #[test]
    fn large_payload_vectors_verify() {
        let cases = [
            (262_143, "v1,NTItnqyWMoFhk2Bbe5V/BMdcFRWgcSQaTgqLHX7FC7c="),
            (262_144, "v1,Mw4Pe2WgApuT7NSqnSq0PQPV9gbLdggCl9B865x5Xh0="),
            (1_048_576, "v1,txpEUxqWZJ5nteTnymUVa+7C4NHpBeXJ6CsBAW0c3/A="),
        ];
        for (len, sig) in cases {
            let body = vec![b'a'; len];
            assert_eq!(verifier(SECRET).verify(&headers("1614265330", sig), &body, TS), Ok(TS), "{len} bytes");
        }
    }

    #[test]
    fn bodies_that_are_not_utf8_or_json_verify_when_signed() {
        let body = b"\xff\x00 not json \xfe";
        let sig = sign(SECRET, ID, TS, body).unwrap();
        assert_eq!(verifier(SECRET).verify(&headers("1614265330", &sig), body, TS), Ok(TS));
    }
}
