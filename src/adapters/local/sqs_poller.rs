//! Local mode with a real SQS queue: what Lambda's SQS event source does for
//! the router, in a loop (receive, route, delete what was delivered).

use crate::adapters::sqs::envelope_from_sdk;
use crate::core::dedup::SeenStore;
use crate::core::router::{Deliver, Record, Router};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, warn};

/// Polls `queue_url` until the process ends. Failed messages are left on the
/// queue, so SQS redelivers them and its redrive policy dead-letters them.
pub async fn poll<D: Deliver, S: SeenStore>(client: Client, queue_url: String, router: Arc<Router<D, S>>) {
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(err) => {
                error!(error = %aws_sdk_sqs::error::DisplayErrorContext(err), "receiving from the queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let records = messages
            .iter()
            .map(|m| Record { id: m.message_id().unwrap_or_default().to_owned(), message: envelope_from_sdk(m) })
            .collect();
        let failed = router.route_batch(records).await;
        let delivered: Vec<_> = messages
            .iter()
            .filter(|m| !failed.iter().any(|f| Some(f.id.as_str()) == m.message_id()))
            .enumerate()
            .filter_map(|(index, m)| {
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build();
                entry.ok()
            })
            .collect();
        if delivered.is_empty() {
            continue;
        }
        let deleted = client.delete_message_batch().queue_url(&queue_url).set_entries(Some(delivered)).send().await;
        match deleted {
            Ok(output) if output.failed().is_empty() => {}
            Ok(output) => warn!(
                failed = output.failed().len(),
                "some deletes failed; those messages will be delivered again and de-duplicated"
            ),
            Err(err) => {
                warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(err), "delete failed; the messages will be delivered again and de-duplicated")
            }
        }
    }
}
