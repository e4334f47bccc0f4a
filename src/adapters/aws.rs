//! The AWS SDK configuration every client shares.

use crate::config::ConfigError;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{ConfigLoader, Region, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;
use std::time::Duration;

/// SDK time limits chosen so a failing or stalled AWS service still leaves
/// ingest time to answer 503 inside Svix's 15-second budget: at most 3
/// attempts of at most 2 s each, never more than 5 s in all (see
/// `template.yaml`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: u32 = 3;

/// `true` adds the system's CA bundle to the trusted roots (read the way
/// `rustls-native-certs` reads it, so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply):
/// for AWS endpoints reached through a TLS-intercepting proxy, or an
/// `AWS_ENDPOINT_URL` whose certificate another CA issued.
pub const TLS_SYSTEM_ROOTS: &str = "TLS_SYSTEM_ROOTS";

/// The roots that AWS service endpoints chain to: Amazon Root CA 1 to 4 and
/// Starfield Services Root Certificate Authority - G2, which cross-signs
/// them (Mozilla's copies; SHA-256 of Amazon Root CA 1: 8ECDE688…98196E).
/// Trusting these alone spares every cold start reading and parsing the
/// system's whole CA bundle, about 140 certificates (BENCHMARKS.md, section 4).
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("amazon-trust-services-roots.pem");

/// Region, credentials and `AWS_ENDPOINT_URL` from the environment, as the
/// AWS SDKs read them, with the time limits above and an HTTPS client that
/// trusts Amazon's roots (and the system's with [`TLS_SYSTEM_ROOTS`]).
pub async fn sdk_config() -> Result<SdkConfig, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let (tls, system_roots) = tls_context(&env)?;
    let hyper_client = Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls.clone())
            .proxy_config(ProxyConfig::from_env());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.build()
    });
    let http_client =
        SharedHttpClient::new(ConnectOnFirstRequest { client: hyper_client, early_connector: system_roots });
    let loader = aws_config::from_env().http_client(http_client).timeout_config(timeouts()).retry_config(retries());
    Ok(with_region_and_credentials_from_env(loader, &env).load().await)
}

/// Lambda puts the region and the function role's credentials in the
/// environment, where the SDK's default chains look first. Taking them from
/// there directly gives the same region and credentials without building the
/// rest of those chains at every cold start: an STS client for web identity
/// (parsing its endpoint partitions) and an instance-metadata client, about
/// 0.5 ms of init (BENCHMARKS.md, section 4). Without these variables the
/// default chains run as usual.
fn with_region_and_credentials_from_env(
    mut loader: ConfigLoader,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> ConfigLoader {
    let set = |name| lookup(name).filter(|value| !value.is_empty());
    if let Some(region) = set("AWS_REGION") {
        loader = loader.region(Region::new(region));
    }
    if set("AWS_ACCESS_KEY_ID").is_some() && set("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader
}

/// The SDK's HTTPS client, less the connector it builds and throws away as
/// each service client is created. Smithy does that so the system's CA
/// bundle is read at start-up rather than at the first request; with only
/// the built-in roots it would set up TLS twice per client at cold start
/// (BENCHMARKS.md, section 4). With [`TLS_SYSTEM_ROOTS`] it still does.
#[derive(Debug)]
struct ConnectOnFirstRequest {
    client: SharedHttpClient,
    early_connector: bool,
}

impl HttpClient for ConnectOnFirstRequest {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.client.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        if self.early_connector { self.client.validate_base_client_config(components, cfg) } else { Ok(()) }
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.client.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.client.connector_metadata()
    }
}

/// The TLS settings, and whether they include the system's roots.
fn tls_context(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(TlsContext, bool), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { variable: TLS_SYSTEM_ROOTS, reason };
    let system_roots = match lookup(TLS_SYSTEM_ROOTS).as_deref().map(str::trim) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid(format!("expected true or false, got {other:?}"))),
    };
    let roots = TrustStore::empty().with_native_roots(system_roots).with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS);
    let context = TlsContext::builder().with_trust_store(roots).build().map_err(|err| invalid(err.to_string()))?;
    Ok((context, system_roots))
}

/// The time limits above, for clients configured by hand.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Standard retries, at most [`MAX_ATTEMPTS`] attempts.
pub fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

/// An SDK error as one line: each cause's message, outermost first, joined
/// by `: `. The SDK's own `DisplayErrorContext` ends with the error's `Debug`
/// form (the raw HTTP response, headers and body included), a kilobyte that
/// says nothing the messages do not.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = Vec::<String>::new();
        let mut cause = Some(self.0);
        while let Some(error) = cause {
            let text = error.to_string();
            // Service errors repeat their source's message in their own.
            if !shown.iter().any(|earlier| earlier.contains(&text)) {
                shown.push(text);
            }
            cause = error.source();
        }
        f.write_str(&shown.join(": "))
    }
}

/// The fix when an AWS call finds no credentials, the usual case on a
/// developer's machine.
pub const NO_CREDENTIALS: &str = "no AWS credentials were found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for moto or LocalStack, any values with AWS_ENDPOINT_URL)";

/// An AWS call's failure in one line, for a person or a log line repeated on
/// every retry: [`NO_CREDENTIALS`] when no credentials were found (rather
/// than the SDK's list of every provider it tried, one line each), else the
/// first line of its [`ErrorChain`].
pub fn short_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let chain = ErrorChain(error).to_string();
    if lacks_credentials(&chain) {
        return NO_CREDENTIALS.to_owned();
    }
    chain.lines().next().unwrap_or_default().trim_end_matches(" Attempted:").to_owned()
}

/// Whether an error's text says no credentials were found.
pub fn lacks_credentials(text: &str) -> bool {
    text.contains("credentials")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_cause_is_one_line_and_names_the_fix_for_missing_credentials() {
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Dispatch(#[source] std::io::Error);
        let chain = "no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: not enabled";
        let error = Dispatch(std::io::Error::other(chain));
        assert_eq!(short_cause(&error), NO_CREDENTIALS);
        let error = Dispatch(std::io::Error::other("connection refused\nmore"));
        assert_eq!(short_cause(&error), "dispatch failure: connection refused");
    }

    #[test]
    fn an_error_chain_shows_each_cause_once_and_no_debug_form() {
        #[derive(Debug, thiserror::Error)]
        #[error("service error")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("QueueDoesNotExist: the queue does not exist")]
        struct Inner(#[source] std::io::Error);
        let error = Outer(Inner(std::io::Error::other("the queue does not exist")));
        assert_eq!(ErrorChain(&error).to_string(), "service error: QueueDoesNotExist: the queue does not exist");
    }
    use base64::Engine as _;

    #[test]
    fn the_bundled_roots_are_five_der_certificates() {
        let blocks: Vec<&str> = AMAZON_TRUST_SERVICES_ROOTS
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|block| block.split("-----END CERTIFICATE-----").next().unwrap_or_default())
            .collect();
        assert_eq!(blocks.len(), 5);
        for block in blocks {
            let base64: String = block.split_whitespace().collect();
            let der = base64::engine::general_purpose::STANDARD.decode(base64).expect("base64");
            assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        }
    }

    async fn loaded_with(variables: &'static [(&'static str, &'static str)]) -> SdkConfig {
        let lookup = |name: &str| variables.iter().find(|(n, _)| *n == name).map(|(_, value)| (*value).to_owned());
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).empty_test_environment();
        with_region_and_credentials_from_env(loader, &lookup).load().await
    }

    #[tokio::test]
    async fn region_and_credentials_come_straight_from_lambdas_variables() {
        let variables = &[("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")];
        let lambda = loaded_with(variables).await;
        assert_eq!(lambda.region().map(Region::as_ref), Some("eu-west-1"));
        let credentials = format!("{:?}", lambda.credentials_provider());
        assert!(credentials.contains("EnvironmentVariableCredentialsProvider"), "{credentials}");
    }

    #[tokio::test]
    async fn without_them_the_default_chains_decide() {
        for partial in [&[("AWS_REGION", ""), ("AWS_ACCESS_KEY_ID", "a")][..], &[("AWS_SECRET_ACCESS_KEY", "b")]] {
            let config = loaded_with(partial).await;
            assert_eq!(config.region(), None);
            let credentials = format!("{:?}", config.credentials_provider());
            assert!(credentials.contains("DefaultCredentialsChain"), "{credentials}");
        }
    }

    #[test]
    fn clients_are_created_without_a_throwaway_tls_connector_unless_system_roots_are_read() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (early_connector, builds) in [(false, 0), (true, 1)] {
            let built = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&built);
            let client = Builder::new().build_with_connector_fn(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                ConnectorBuilder::default().build_http()
            });
            let wrapped = ConnectOnFirstRequest { client, early_connector };
            let validated =
                wrapped.validate_base_client_config(&RuntimeComponentsBuilder::new("test"), &ConfigBag::base());
            assert!(validated.is_ok());
            assert_eq!(built.load(Ordering::Relaxed), builds, "early_connector: {early_connector}");
        }
    }

    #[test]
    fn system_roots_are_opt_in_with_a_clear_message_for_typos() {
        let with = |value: &'static str| tls_context(&move |name| (name == TLS_SYSTEM_ROOTS).then(|| value.to_owned()));
        assert!(!tls_context(&|_| None).expect("valid").1);
        assert!(with("true").expect("valid").1);
        assert!(with("true").is_ok() && with("false").is_ok());
        let error = with("yes").unwrap_err().to_string();
        assert!(error.contains(TLS_SYSTEM_ROOTS) && error.contains("\"yes\""), "{error}");
    }
}
