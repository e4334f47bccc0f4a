//! Webhook sources: who may send to `/webhooks/{source}` and how each proves it.
//!
//! Each source has an [`Authenticator`]; adding a sender with another scheme
//! means adding one implementation and registering it under its path name.

use crate::core::verification::nector::{NectorError, NectorVerifier};
use crate::core::verification::svix::{SignedHeaders, SvixVerifier, VerifyError};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest webhook id accepted; Svix's are about 30 characters.
pub const MAX_ID_LEN: usize = 256;

/// What a source vouches for: the webhook's id and signed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub timestamp: i64,
}

/// Why a request failed authentication.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    #[error("header {0} is malformed")]
    MalformedHeader(&'static str),
    #[error(transparent)]
    Verification(#[from] VerifyError),
    #[error(transparent)]
    SharedSecret(#[from] NectorError),
}

/// Checks that a request really comes from its source.
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> Result<Identity, AuthError>;
}

/// Svix's scheme, under the `svix-*` header names or the Standard Webhooks
/// `webhook-*` names as a fallback.
#[derive(Debug, Clone)]
pub struct SvixSource {
    verifier: SvixVerifier,
}

struct HeaderNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const SVIX_HEADERS: HeaderNames =
    HeaderNames { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };
const STANDARD_HEADERS: HeaderNames =
    HeaderNames { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };

impl SvixSource {
    pub fn new(verifier: SvixVerifier) -> Self {
        Self { verifier }
    }
}

impl Authenticator for SvixSource {
    fn authenticate(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> Result<Identity, AuthError> {
        // With neither id header, the error names `svix-id`: the header
        // Svix sends, so the one a sender of a bare request should add.
        let standard = headers.contains_key(STANDARD_HEADERS.id) && !headers.contains_key(SVIX_HEADERS.id);
        let names = if standard { &STANDARD_HEADERS } else { &SVIX_HEADERS };
        let id = single_header(headers, names.id)?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(AuthError::MalformedHeader(names.id));
        }
        let signed = SignedHeaders {
            id,
            timestamp: single_header(headers, names.timestamp)?,
            signature: single_header(headers, names.signature)?,
        };
        let timestamp = self.verifier.verify(&signed, body, now_unix)?;
        Ok(Identity { id: id.to_owned(), timestamp })
    }
}

/// The header Nector sends: the SHA-256 (hex) of the shared secret.
pub const NECTOR_SECRET_HEADER: &str = "x-nector-webhook-secret";

/// Nector's shared-secret scheme. Nector sends no id or timestamp, so the id
/// is derived from the body (a retry of the same body has the same id, and is
/// de-duplicated downstream) and the time is the time of receipt.
#[derive(Debug, Clone)]
pub struct NectorSource {
    verifier: NectorVerifier,
}

impl NectorSource {
    pub fn new(verifier: NectorVerifier) -> Self {
        Self { verifier }
    }
}

impl Authenticator for NectorSource {
    fn authenticate(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> Result<Identity, AuthError> {
        self.verifier.verify(single_header(headers, NECTOR_SECRET_HEADER)?)?;
        let digest: String = Sha256::digest(body)[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Identity { id: format!("nector_{digest}"), timestamp: now_unix })
    }
}

/// The value of a header that must appear exactly once, as visible ASCII.
fn single_header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthError::MissingHeader(name))?;
    if values.next().is_some() {
        return Err(AuthError::DuplicateHeader(name));
    }
    value.to_str().map(str::trim).map_err(|_| AuthError::MalformedHeader(name))
}

/// The configured sources, by the path segment that names them.
#[derive(Default)]
pub struct Sources {
    by_name: Vec<(String, Box<dyn Authenticator>)>,
}

impl Sources {
    pub fn with(mut self, name: &str, authenticator: impl Authenticator + 'static) -> Self {
        self.by_name.push((name.to_owned(), Box::new(authenticator)));
        self
    }

    pub fn get(&self, name: &str) -> Option<(&str, &dyn Authenticator)> {
        self.by_name.iter().find(|(n, _)| n == name).map(|(n, a)| (n.as_str(), a.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::verification::svix::{DEFAULT_TOLERANCE_SECS, SigningSecrets};

    #[test]
    fn nector_requests_carry_the_digest_and_get_a_body_derived_id() {
        let source = NectorSource::new(NectorVerifier::new("shared"));
        let mut map = HeaderMap::new();
        map.insert(NECTOR_SECRET_HEADER, NectorVerifier::header_for("shared").parse().unwrap());
        let first = source.authenticate(&map, b"{\"a\":1}", 100).unwrap();
        let retry = source.authenticate(&map, b"{\"a\":1}", 160).unwrap();
        let other = source.authenticate(&map, b"{\"a\":2}", 100).unwrap();
        assert_eq!(first.id, retry.id);
        assert_ne!(first.id, other.id);
        assert_eq!(retry.timestamp, 160);

        map.insert(NECTOR_SECRET_HEADER, NectorVerifier::header_for("guess").parse().unwrap());
        assert_eq!(source.authenticate(&map, b"{}", 100), Err(AuthError::SharedSecret(NectorError::Mismatch)));
        assert_eq!(
            source.authenticate(&HeaderMap::new(), b"{}", 100),
            Err(AuthError::MissingHeader(NECTOR_SECRET_HEADER))
        );
    }

    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    fn source() -> SvixSource {
        let secrets = SigningSecrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        SvixSource::new(SvixVerifier::new(secrets, DEFAULT_TOLERANCE_SECS))
    }

    fn headers(prefix: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            http::HeaderName::from_bytes(format!("{prefix}-id").as_bytes()).unwrap(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        map.insert(
            http::HeaderName::from_bytes(format!("{prefix}-timestamp").as_bytes()).unwrap(),
            "1614265330".parse().unwrap(),
        );
        map.insert(
            http::HeaderName::from_bytes(format!("{prefix}-signature").as_bytes()).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".parse().unwrap(),
        );
        map
    }

    #[test]
    fn both_header_families_verify() {
        for prefix in ["svix", "webhook", "Svix", "WEBHOOK"] {
            let identity = source().authenticate(&headers(prefix), BODY, TS).unwrap();
            assert_eq!(identity, Identity { id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(), timestamp: TS });
        }
    }

    #[test]
    fn missing_and_duplicate_headers_are_named() {
        let mut map = headers("svix");
        map.remove("svix-signature");
        assert_eq!(source().authenticate(&map, BODY, TS), Err(AuthError::MissingHeader("svix-signature")));

        let mut map = headers("svix");
        map.append("svix-timestamp", "1614265330".parse().unwrap());
        assert_eq!(source().authenticate(&map, BODY, TS), Err(AuthError::DuplicateHeader("svix-timestamp")));

        assert_eq!(source().authenticate(&HeaderMap::new(), BODY, TS), Err(AuthError::MissingHeader("svix-id")));
        let mut standard = headers("webhook");
        standard.remove("webhook-timestamp");
        assert_eq!(source().authenticate(&standard, BODY, TS), Err(AuthError::MissingHeader("webhook-timestamp")));
    }

    #[test]
    fn unknown_source_names_are_not_found() {
        let sources = Sources::default().with("nectar", source());
        assert!(sources.get("nectar").is_some());
        assert!(sources.get("other").is_none());
    }
}
