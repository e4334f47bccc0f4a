//! The signing secret in AWS Secrets Manager, read once at cold start, so it
//! is never a plaintext environment variable of the deployed function.

use crate::config::{ConfigError, WEBHOOK_SECRET, WEBHOOK_SECRET_ARN};

/// The secret's value; errors name the variable, never the value.
pub async fn fetch(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { variable: WEBHOOK_SECRET_ARN, reason };
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|err| invalid(format!("cannot read the secret: {}", crate::adapters::aws::ErrorChain(&err))))?;
    output
        .secret_string()
        .map(str::to_owned)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| invalid(format!("the secret has no string value; put {WEBHOOK_SECRET}'s value in it")))
}
