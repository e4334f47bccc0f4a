//! `nectar-webhooks redrive`: moves the messages of a dead-letter queue back
//! to the queue they came from, once the cause of their failure is fixed.
//!
//! By default with SQS's own message-move task (`StartMessageMoveTask`,
//! polled with `ListMessageMoveTasks`): SQS moves the messages itself, and
//! the task goes on even if this command is interrupted. `--copy` moves them
//! with `ReceiveMessage`, `SendMessageBatch` and `DeleteMessageBatch`
//! instead, for SQS-compatible servers without message-move tasks (moto,
//! ElasticMQ): same body, same message attributes, deleted from the
//! dead-letter queue only once the copy is sent.
//!
//! `--data-dir` moves local mode's dead letters back to its embedded queue
//! instead (one transaction; safe while `serve` runs on that directory).
//!
//! Progress (`moved 120 of 300`) goes to stderr, the summary to stdout.

use crate::adapters::aws;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use std::time::Duration;

/// `redrive`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dead-letter queue's URL.
    #[arg(long, required_unless_present = "data_dir")]
    pub dlq: Option<String>,
    /// Local mode's data directory (`serve --data-dir`): redrive its dead
    /// letters to its embedded queue instead of an SQS queue's.
    #[arg(long, conflicts_with_all = ["dlq", "to", "copy", "max_per_second"])]
    pub data_dir: Option<std::path::PathBuf>,
    /// The queue to move the messages to (its URL). By default the queue
    /// whose redrive policy names the dead-letter queue, if there is one
    /// only; with several, the move task returns each message to its own.
    #[arg(long = "to", value_name = "SOURCE_URL")]
    pub to: Option<String>,
    /// Copy and delete the messages instead of starting an SQS message-move
    /// task, for SQS-compatible servers without one (moto, ElasticMQ).
    #[arg(long)]
    pub copy: bool,
    /// At most this many messages a second (message-move task only; SQS's
    /// default rate is 500 and increases over time).
    #[arg(long, value_name = "N", conflicts_with = "copy")]
    pub max_per_second: Option<i32>,
    /// Seconds between progress reports of a message-move task.
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll_seconds: f64,
}

/// A queue by URL and ARN.
struct Queue {
    url: String,
    arn: String,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<(), String> {
    let (Some(dlq), None) = (&args.dlq, &args.data_dir) else {
        let dir = args.data_dir.unwrap_or_default();
        let moved = crate::adapters::local::durable_queue::redrive(&dir).map_err(|err| err.to_string())?;
        println!("moved {moved} dead letters to the embedded queue in {}", dir.display());
        return Ok(());
    };
    let client = client().await?;
    let dlq = Queue { arn: queue_arn(&client, dlq).await?, url: dlq.clone() };
    let destination = match &args.to {
        Some(url) => Some(Queue { arn: queue_arn(&client, url).await?, url: url.clone() }),
        None => source_queue(&client, &dlq.url).await?,
    };
    let waiting = visible_messages(&client, &dlq.url).await?;
    let target = destination.as_ref().map_or("their source queues", |q| q.url.as_str());
    eprintln!("redriving {waiting} messages from {} to {target}", dlq.url);
    if args.copy {
        let destination = destination.ok_or_else(|| {
            format!("several queues use {} as their dead-letter queue; with --copy, name one with --to", dlq.url)
        })?;
        copy(&client, &dlq, &destination, waiting).await
    } else {
        move_task(&client, &dlq, destination.as_ref(), &args).await
    }
}

/// The SDK's configuration (`AWS_ENDPOINT_URL`, region, credentials), with
/// time limits for an operator's tool rather than ingest's 5-second budget.
async fn client() -> Result<Client, String> {
    let sdk = aws::sdk_config().await.map_err(|err| err.to_string())?;
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    Ok(Client::from_conf(aws_sdk_sqs::config::Builder::from(&sdk).timeout_config(timeouts).build()))
}

fn sqs_error(what: &str, err: impl std::error::Error + 'static) -> String {
    format!("{what}: {}", aws::short_cause(&err))
}

async fn queue_attribute(client: &Client, url: &str, name: QueueAttributeName) -> Result<Option<String>, String> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .map_err(|err| sqs_error(&format!("GetQueueAttributes on {url}"), err))?;
    Ok(output.attributes.and_then(|mut attributes| attributes.remove(&name)))
}

async fn queue_arn(client: &Client, url: &str) -> Result<String, String> {
    queue_attribute(client, url, QueueAttributeName::QueueArn).await?.ok_or_else(|| format!("{url} has no QueueArn"))
}

async fn visible_messages(client: &Client, url: &str) -> Result<i64, String> {
    let count = queue_attribute(client, url, QueueAttributeName::ApproximateNumberOfMessages).await?;
    Ok(count.and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// The queue whose redrive policy names `dlq`: `None` if there are several
/// (each message then returns to its own), an error if there is none.
async fn source_queue(client: &Client, dlq: &str) -> Result<Option<Queue>, String> {
    let output = client
        .list_dead_letter_source_queues()
        .queue_url(dlq)
        .send()
        .await
        .map_err(|err| sqs_error(&format!("ListDeadLetterSourceQueues on {dlq}"), err))?;
    match output.queue_urls.as_slice() {
        [] => Err(format!("no queue uses {dlq} as its dead-letter queue; name the destination with --to")),
        [url] => Ok(Some(Queue { arn: queue_arn(client, url).await?, url: url.clone() })),
        _ => Ok(None),
    }
}

/// SQS's message-move task, polled until it ends.
async fn move_task(client: &Client, dlq: &Queue, destination: Option<&Queue>, args: &Args) -> Result<(), String> {
    // A message the router dead-lettered itself (with its failure-reason)
    // was sent to the DLQ, not moved there by SQS: it has no source queue of
    // its own, so the destination is named whenever it is known.
    let started = client
        .start_message_move_task()
        .source_arn(&dlq.arn)
        .set_destination_arn(destination.map(|q| q.arn.clone()))
        .set_max_number_of_messages_per_second(args.max_per_second)
        .send()
        .await
        .map_err(|err| {
            format!(
                "{}\nA server without message-move tasks, such as moto or ElasticMQ? Copy instead: nectar-webhooks redrive --dlq {}{} --copy",
                sqs_error("StartMessageMoveTask", err),
                dlq.url,
                args.to.as_ref().map_or_else(String::new, |to| format!(" --to {to}"))
            )
        })?;
    let handle = started.task_handle.unwrap_or_default();
    eprintln!("started message-move task; it continues if this command stops. To cancel:");
    eprintln!("  aws sqs cancel-message-move-task --task-handle {handle}");
    let mut last_report = None;
    loop {
        tokio::time::sleep(Duration::from_secs_f64(args.poll_seconds.max(0.01))).await;
        let tasks = client
            .list_message_move_tasks()
            .source_arn(&dlq.arn)
            .max_results(1)
            .send()
            .await
            .map_err(|err| sqs_error("ListMessageMoveTasks", err))?;
        let Some(task) = tasks.results().first() else { continue };
        let moved = task.approximate_number_of_messages_moved();
        let total = task.approximate_number_of_messages_to_move();
        let report = (moved, total);
        if last_report != Some(report) {
            eprintln!("moved {moved} of {}", total.map_or("?".to_owned(), |n| n.to_string()));
            last_report = Some(report);
        }
        let target = destination.map_or("their source queues", |q| q.url.as_str());
        let summary = format!("moved {moved} of {} messages from {} to {target}", total.unwrap_or(moved), dlq.url);
        match task.status().unwrap_or_default() {
            "RUNNING" | "CANCELLING" => {}
            "COMPLETED" => {
                println!("{summary}");
                return Ok(());
            }
            status => {
                println!("{summary}; task {status}");
                return Err(format!(
                    "message-move task {status}: {}",
                    task.failure_reason().unwrap_or("no reason given")
                ));
            }
        }
    }
}

/// Receive, send a copy, delete: ten at a time, until the DLQ is empty.
async fn copy(client: &Client, dlq: &Queue, destination: &Queue, waiting: i64) -> Result<(), String> {
    let fifo = destination.url.ends_with(".fifo");
    let (mut moved, mut failed) = (0_i64, Vec::new());
    let mut empty_receives = 0;
    // Two empty long polls in a row: the queue is drained. Messages that
    // could not be sent stay hidden (visibility timeout) until this ends.
    while empty_receives < 2 {
        let received = client
            .receive_message()
            .queue_url(&dlq.url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|err| sqs_error(&format!("ReceiveMessage on {}", dlq.url), err))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_receives += 1;
            continue;
        }
        empty_receives = 0;
        let entries = messages.iter().enumerate().map(|(index, message)| copy_entry(index, message, fifo)).collect();
        let sent = client
            .send_message_batch()
            .queue_url(&destination.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| sqs_error(&format!("SendMessageBatch to {}", destination.url), err))?;
        let deletes: Vec<_> = sent
            .successful
            .iter()
            .filter_map(|entry| {
                let message = &messages[entry.id.parse::<usize>().ok()?];
                DeleteMessageBatchRequestEntry::builder()
                    .id(&entry.id)
                    .receipt_handle(message.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        for entry in &sent.failed {
            let message_id = entry.id.parse::<usize>().ok().and_then(|i| messages[i].message_id.clone());
            failed.push(format!(
                "{}: {}",
                message_id.unwrap_or_default(),
                entry.message.as_deref().unwrap_or(&entry.code)
            ));
        }
        if !deletes.is_empty() {
            let count = deletes.len();
            let deleted = client
                .delete_message_batch()
                .queue_url(&dlq.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|err| sqs_error(&format!("DeleteMessageBatch on {}", dlq.url), err))?;
            for entry in &deleted.failed {
                // Sent but not deleted: it will reappear in the DLQ; the
                // router's idempotency makes the second copy harmless.
                failed.push(format!("entry {} copied but not deleted: {}", entry.id, entry.code));
            }
            moved += i64::try_from(count - deleted.failed.len()).unwrap_or(0);
        }
        eprintln!("moved {moved} of {}", waiting.max(moved));
    }
    println!("moved {moved} of {} messages from {} to {} (copy)", waiting.max(moved), dlq.url, destination.url);
    if failed.is_empty() {
        Ok(())
    } else {
        for failure in &failed {
            eprintln!("not moved: {failure}");
        }
        Err(format!("{} messages not moved; they stay in {}", failed.len(), dlq.url))
    }
}

/// The same body and message attributes; on a FIFO queue, the same group
/// and the DLQ message's id as deduplication id.
fn copy_entry(index: usize, message: &Message, fifo: bool) -> SendMessageBatchRequestEntry {
    let group = message.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned();
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes(message.message_attributes.clone());
    if fifo {
        entry = entry
            .message_group_id(group.unwrap_or_else(|| "redrive".to_owned()))
            .message_deduplication_id(message.message_id().unwrap_or_default());
    }
    entry.build().expect("id and body are set")
}
