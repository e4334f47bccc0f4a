//! Amazon SQS: the ingest queue (a [`Queue`]) and the shapes messages take on it.

use crate::adapters::payloads;
use crate::core::claim_check::PayloadStore;
use crate::core::envelope::{DecodeError, Envelope, QueueMessage};
use crate::core::events::probe;
use crate::core::queue::{Queue, QueueError, Webhook};
use crate::core::routing::is_fifo_queue_url;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use futures_util::future::join_all;
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
    /// On a FIFO queue (a URL ending in `.fifo`), each message is grouped by
    /// the resource its payload is about, so the router sees one document's
    /// or connection's events in order, and de-duplicated by webhook id.
    async fn enqueue(&self, message: QueueMessage, webhook: Webhook<'_>) -> Result<(), QueueError> {
        let fifo = is_fifo_queue_url(&self.url).then(|| {
            let resource = probe(webhook.source, webhook.body).resource_id;
            fifo_ids(resource.as_deref(), webhook.id)
        });
        send(&self.client, &self.url, message, fifo).await.map_err(QueueError)
    }
}

/// A FIFO message's group id (the resource, else the webhook) and
/// deduplication id (the webhook). SQS takes up to 128 visible ASCII
/// characters for either; a resource id that is not such is not a usable
/// group, so that webhook is grouped alone rather than refused.
pub fn fifo_ids(resource: Option<&str>, webhook_id: &str) -> (String, String) {
    let usable = |id: &&str| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic());
    let group = resource.filter(usable).unwrap_or(webhook_id);
    (group.to_owned(), webhook_id.to_owned())
}

/// One harmless call that shows the queue exists and these credentials
/// reach it: what `serve` checks its queues with before it listens.
pub async fn reach(client: &Client, queue_url: &str) -> Result<(), SdkError<GetQueueAttributesError>> {
    client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map(drop)
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
        .map_err(|err| crate::adapters::aws::ErrorChain(&err).to_string())
}

/// A message to send and, to a FIFO queue, its group and deduplication ids.
pub type Outgoing = (QueueMessage, Option<(String, String)>);

/// The most messages one `SendMessageBatch` takes.
pub const BATCH_ENTRIES: usize = 10;
/// The most bytes of messages one `SendMessageBatch` takes, all together
/// (each message's body and attributes, as [`QueueMessage::size`] counts).
pub const BATCH_BYTES: usize = 1_048_576;

/// Sends messages to one queue in as few `SendMessageBatch` requests as
/// [`BATCH_ENTRIES`] and [`BATCH_BYTES`] allow, in order (a FIFO queue keeps
/// the order of one message group's messages within a batch); one result
/// per message, in the same order, saying why SQS did not take it.
pub async fn send_all(client: &Client, queue_url: &str, messages: Vec<Outgoing>) -> Vec<Result<(), String>> {
    let mut chunks: Vec<Vec<Outgoing>> = Vec::new();
    let mut bytes = 0;
    for (message, fifo) in messages {
        let size = message.size();
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < BATCH_ENTRIES && bytes + size <= BATCH_BYTES => {
                bytes += size;
                chunk.push((message, fifo));
            }
            _ => {
                bytes = size;
                chunks.push(vec![(message, fifo)]);
            }
        }
    }
    let sends = chunks.into_iter().map(|chunk| async move {
        let count = chunk.len();
        let entries = chunk.into_iter().enumerate().map(|(n, (message, fifo))| {
            let (group, deduplication) = fifo.unzip();
            SendMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .message_body(message.body)
                .set_message_attributes(Some(to_sdk_attributes(&message.attributes)))
                .set_message_group_id(group)
                .set_message_deduplication_id(deduplication)
                .build()
                .expect("id and body are set")
        });
        match client.send_message_batch().queue_url(queue_url).set_entries(Some(entries.collect())).send().await {
            Ok(output) => batch_results(
                count,
                output.successful().iter().map(|s| s.id()),
                output.failed().iter().map(|f| (f.id(), format!("{}: {}", f.code(), f.message().unwrap_or_default()))),
            ),
            Err(err) => {
                let reason = crate::adapters::aws::ErrorChain(&err).to_string();
                vec![Err(reason); count]
            }
        }
    });
    join_all(sends).await.into_iter().flatten().collect()
}

/// Each entry's result from a batch answer: the ids (positions, as text)
/// that succeeded and those that failed with why. An entry the answer does
/// not mention failed: it may not have been sent.
fn batch_results<'a>(
    count: usize,
    successful: impl Iterator<Item = &'a str>,
    failed: impl Iterator<Item = (&'a str, String)>,
) -> Vec<Result<(), String>> {
    let mut results = vec![Err("SQS's answer did not mention this message".to_owned()); count];
    let position = |id: &str| id.parse::<usize>().ok().filter(|n| *n < count);
    for n in successful.filter_map(position) {
        results[n] = Ok(());
    }
    for (id, reason) in failed {
        if let Some(n) = position(id) {
            results[n] = Err(format!("SQS refused the message: {reason}"));
        }
    }
    results
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_groups_by_a_usable_resource_id_else_by_webhook() {
        let long = "x".repeat(129);
        assert_eq!(fifo_ids(Some("doc-a"), "msg_1"), ("doc-a".into(), "msg_1".into()));
        assert_eq!(fifo_ids(None, "msg_1"), ("msg_1".into(), "msg_1".into()));
        assert_eq!(fifo_ids(Some("has space"), "msg_1").0, "msg_1");
        assert_eq!(fifo_ids(Some(&long), "msg_1").0, "msg_1");
        assert_eq!(fifo_ids(Some(&long[1..]), "msg_1").0, long[1..]);
        assert!(is_fifo_queue_url("https://sqs.eu-west-1.amazonaws.com/1/ingest.fifo"));
        assert!(!is_fifo_queue_url("https://sqs.eu-west-1.amazonaws.com/1/ingest"));
    }

    #[test]
    fn a_batch_answer_fails_only_the_entries_it_failed_and_those_it_did_not_mention() {
        let results = batch_results(
            4,
            ["0", "2", "9"].into_iter(),
            [("1", "InternalError: try again".to_owned()), ("x", "ignored".to_owned())].into_iter(),
        );
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1], Err("SQS refused the message: InternalError: try again".to_owned()));
        assert_eq!(results[2], Ok(()));
        assert!(results[3].as_ref().unwrap_err().contains("did not mention"));
    }
}
