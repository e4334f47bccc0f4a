//! Local mode with a real SQS queue: what Lambda's SQS event source does for
//! the router, in a loop (receive, route, delete what was delivered).

use crate::adapters::aws::{ErrorChain, short_cause};
use crate::adapters::sqs::envelope_from_sdk;
use crate::core::claim_check::PayloadStore;
use crate::core::dedup::SeenStore;
use crate::core::envelope::received_at;
use crate::core::router::{Deliver, Record, Router};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, warn};

/// Messages per receive, as the template's event source mapping takes them.
const BATCH: usize = 10;

/// The most receive loops that run at once. Like Lambda's SQS event source,
/// local mode adds pollers while the queue has a backlog: one loop falls
/// behind a few dozen concurrent senders, and a backlog slows moto (its every
/// request scans all the messages a queue holds) until its answers outlast
/// the SDK's time limit and it stalls. With 32 senders, five loops let that
/// happen; ten keep the backlog under about 40 messages. A message two loops
/// take is still delivered once: the router claims it first.
const MAX_POLLERS: usize = 10;

/// The wait after a first failed receive, doubled on each further failure
/// up to [`MAX_BACKOFF`]: a queue that stays unreachable (credentials
/// expired, the server stopped) costs a log line now and then, not a flood.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait after `failures` receives in a row have failed.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// Polls `queue_url` until the process ends, fetching claim-checked payloads
/// from `payload_store`. Failed messages are left on the queue, so SQS
/// redelivers them and its redrive policy dead-letters them.
pub async fn poll<D: Deliver, S: SeenStore>(
    client: Client,
    queue_url: String,
    router: Arc<Router<D, S>>,
    payload_store: Arc<dyn PayloadStore>,
) {
    let backlog = Notify::new();
    let pollers =
        (0..MAX_POLLERS).map(|n| poll_one(n == 0, &backlog, &client, &queue_url, &router, payload_store.as_ref()));
    join_all(pollers).await;
}

/// One receive loop. The first polls always; the others join in when a
/// batch comes back full and leave when a receive finds nothing, so an idle
/// queue costs one request a second.
async fn poll_one<D: Deliver, S: SeenStore>(
    always: bool,
    backlog: &Notify,
    client: &Client,
    queue_url: &str,
    router: &Router<D, S>,
    payload_store: &dyn PayloadStore,
) {
    let mut failures = 0;
    loop {
        let received = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(BATCH as i32)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => {
                failures = 0;
                output.messages.unwrap_or_default()
            }
            // Only the first loop retries; the others wait for a backlog.
            Err(_) if !always => {
                backlog.notified().await;
                continue;
            }
            Err(err) => {
                failures += 1;
                let wait = backoff(failures);
                error!(error = %short_cause(&err), failures, retry_in_secs = wait.as_secs(), "receiving from the queue failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if messages.len() == BATCH {
            backlog.notify_waiters();
        } else if messages.is_empty() && !always {
            backlog.notified().await;
            continue;
        }
        let records = join_all(messages.iter().map(|m| async {
            let message = envelope_from_sdk(Some(payload_store), m).await;
            let attributes = m.message_attributes();
            let received = received_at(|name| attributes?.get(name)?.string_value());
            Record { id: m.message_id().unwrap_or_default().to_owned(), message, claim_check: None, received }
        }))
        .await;
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
        let deleted = client.delete_message_batch().queue_url(queue_url).set_entries(Some(delivered)).send().await;
        match deleted {
            Ok(output) if output.failed().is_empty() => {}
            Ok(output) => warn!(
                failed = output.failed().len(),
                "some deletes failed; those messages will be delivered again and de-duplicated"
            ),
            Err(err) => {
                warn!(error = %ErrorChain(&err), "delete failed; the messages will be delivered again and de-duplicated")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_failures_back_off_from_one_second_to_thirty() {
        let waits: Vec<u64> = (1..=8).map(|failures| backoff(failures).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
