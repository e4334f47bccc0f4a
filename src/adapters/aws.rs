//! The AWS SDK configuration every client shares.

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::time::Duration;

/// SDK time limits chosen so a failing or stalled AWS service still leaves
/// ingest time to answer 503 inside Svix's 15-second budget: at most 3
/// attempts of at most 2 s each, never more than 5 s in all (see
/// `template.yaml`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: u32 = 3;

/// Region, credentials and `AWS_ENDPOINT_URL` from the environment, as the
/// AWS SDKs read them, with the time limits above.
pub async fn sdk_config() -> SdkConfig {
    aws_config::from_env().timeout_config(timeouts()).retry_config(retries()).load().await
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
