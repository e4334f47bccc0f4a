//! The AWS SDK configuration every client shares.

use aws_config::SdkConfig;
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
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    aws_config::from_env()
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .load()
        .await
}
