//! Nector's scheme: the `x-nector-webhook-secret` header carries the SHA-256
//! (hex) of a secret shared with the sender.
//!
//! This proves the sender knows the secret, nothing more: the body is not
//! signed, so it could be altered in transit, and a captured header can be
//! replayed forever. TLS is what protects the body here.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Why a Nector request was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NectorError {
    #[error("secret header is not a hex SHA-256 digest")]
    MalformedDigest,
    #[error("secret header does not match the configured secret")]
    Mismatch,
}

/// Checks the header against the digest of the configured secret.
#[derive(Clone)]
pub struct NectorVerifier {
    expected: [u8; 32],
}

impl std::fmt::Debug for NectorVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NectorVerifier(redacted)")
    }
}

impl NectorVerifier {
    /// `shared_secret` is the secret as entered in Nector's dashboard.
    pub fn new(shared_secret: &str) -> Self {
        Self { expected: Sha256::digest(shared_secret.as_bytes()).into() }
    }

    /// Compares the header's digest with the expected one in constant time.
    pub fn verify(&self, header: &str) -> Result<(), NectorError> {
        let received = decode_hex_digest(header.trim()).ok_or(NectorError::MalformedDigest)?;
        if bool::from(received.ct_eq(&self.expected)) { Ok(()) } else { Err(NectorError::Mismatch) }
    }

    /// The header value a sender with this secret would send.
    pub fn header_for(shared_secret: &str) -> String {
        Sha256::digest(shared_secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn decode_hex_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_the_shared_secret_passes_in_either_case() {
        let verifier = NectorVerifier::new("loyalty-secret");
        let header = NectorVerifier::header_for("loyalty-secret");
        assert_eq!(header, "589fb7203408d827dff149d86153fe0f11ccc363799769c984d93fcd83632dd2");
        assert_eq!(verifier.verify(&header), Ok(()));
        assert_eq!(verifier.verify(&header.to_uppercase()), Ok(()));
    }

    #[test]
    fn other_secrets_and_malformed_digests_are_refused() {
        let verifier = NectorVerifier::new("loyalty-secret");
        assert_eq!(verifier.verify(&NectorVerifier::header_for("other")), Err(NectorError::Mismatch));
        assert_eq!(verifier.verify("loyalty-secret"), Err(NectorError::MalformedDigest));
        assert_eq!(verifier.verify(""), Err(NectorError::MalformedDigest));
        assert_eq!(verifier.verify(&"zz".repeat(32)), Err(NectorError::MalformedDigest));
    }
}
