//! Amazon SQS: the ingest queue (a [`Queue`]) and the shapes messages take on it.

use crate::adapters::payloads;
use crate::core::claim_check::PayloadStore;
use crate::core::envelope::{DecodeError, Envelope, QueueMessage};
use crate::core::queue::{Queue, QueueError};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use std::collections::HashMap;

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
        send(&self.client, &self.url, message, None).await.map_err(QueueError)
    }
}

/// Sends one message; the error says why SQS did not take it. `fifo` gives
/// a FIFO queue's message group id and deduplication id.
pub async fn send(
    client: &Client,
    queue_url: &str,
    message: QueueMessage,
    fifo: Option<(String, String)>,
) -> Result<(), String> {
    let (group, deduplication) = fifo.unzip();
    client
        .send_message()
        .queue_url(queue_url)
        .message_body(message.body)
        .set_message_attributes(Some(to_sdk_attributes(&message.attributes)))
        .set_message_group_id(group)
        .set_message_deduplication_id(deduplication)
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

/// Reads an envelope from a message received through the SDK, fetching a
/// claim-checked payload from `store`.
pub async fn envelope_from_sdk(
    store: Option<&dyn PayloadStore>,
    message: &aws_sdk_sqs::types::Message,
) -> Result<Envelope, DecodeError> {
    let attributes = message.message_attributes();
    payloads::read_envelope(store, message.body().unwrap_or_default(), |name| {
        attributes.and_then(|map| map.get(name)).and_then(|value| value.string_value())
    })
    .await
}
