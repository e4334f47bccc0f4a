//! Amazon SQS: the ingest queue (a [`Queue`]) and the shapes messages take on it.

use crate::core::envelope::{DecodeError, Envelope, QueueMessage};
use crate::core::queue::{Queue, QueueError};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use std::collections::HashMap;
use std::time::Duration;

/// SDK time limits chosen so a failing or stalled SQS still leaves ingest
/// time to answer 503 inside Svix's 15-second budget: at most 3 attempts of
/// at most 2 s each, never more than 5 s in all (see `template.yaml`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: u32 = 3;

/// Builds an SQS client from the environment (region, credentials and
/// `AWS_ENDPOINT_URL` as the AWS SDKs read them) with the time limits above.
pub async fn client() -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let config = aws_config::from_env()
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .load()
        .await;
    Client::new(&config)
}

/// The ingest queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

impl Queue for SqsQueue {
    async fn enqueue(&self, message: QueueMessage) -> Result<(), QueueError> {
        send(&self.client, &self.url, message).await.map_err(QueueError)
    }
}

/// Sends one message; the error says why SQS did not take it.
pub async fn send(client: &Client, queue_url: &str, message: QueueMessage) -> Result<(), String> {
    client
        .send_message()
        .queue_url(queue_url)
        .message_body(message.body)
        .set_message_attributes(Some(to_sdk_attributes(&message.attributes)))
        .send()
        .await
        .map(drop)
        .map_err(|err| aws_sdk_sqs::error::DisplayErrorContext(err).to_string())
}

fn to_sdk_attributes(attributes: &[(&'static str, String)]) -> HashMap<String, MessageAttributeValue> {
    attributes
        .iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data type is set");
            ((*name).to_owned(), value)
        })
        .collect()
}

/// Reads an envelope from a message received through the SDK.
pub fn envelope_from_sdk(message: &aws_sdk_sqs::types::Message) -> Result<Envelope, DecodeError> {
    let attributes = message.message_attributes();
    Envelope::from_queue_message(message.body().unwrap_or_default(), |name| {
        attributes.and_then(|map| map.get(name)).and_then(|value| value.string_value())
    })
}
