//! Arbitrary headers and bodies through both sources' authentication: header
//! parsing, secret-digest comparison, signature-header parsing, timestamp
//! checks and the MAC. Must never panic, whatever arrives.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nectar_webhooks::core::sources::{Authenticator, NectorSource, SvixSource};
use nectar_webhooks::core::verification::nector::NectorVerifier;
use nectar_webhooks::core::verification::svix::{SigningSecrets, SvixVerifier};
use std::sync::OnceLock;

#[derive(Debug, Arbitrary)]
struct Request<'a> {
    headers: Vec<(&'a str, &'a [u8])>,
    body: &'a [u8],
    now: i64,
}

struct Sources {
    svix: SvixSource,
    nector: NectorSource,
}

fn sources() -> &'static Sources {
    static SOURCES: OnceLock<Sources> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let keys = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=";
        Sources {
            svix: SvixSource::new(SvixVerifier::new(SigningSecrets::parse(keys).unwrap(), 300)),
            nector: NectorSource::new(NectorVerifier::new("shared")),
        }
    })
}

fuzz_target!(|request: Request<'_>| {
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers.iter().take(16) {
        // Steer most names onto the ones that matter.
        let name = match name.len() % 5 {
            0 => "svix-id",
            1 => "svix-timestamp",
            2 => "svix-signature",
            3 => "x-nector-webhook-secret",
            _ => name,
        };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let sources = sources();
    let _ = sources.svix.authenticate(&headers, request.body, request.now);
    let _ = sources.nector.authenticate(&headers, request.body, request.now);
});
