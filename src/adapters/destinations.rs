//! The destinations a routed webhook can be delivered to.

use crate::adapters::sqs;
use crate::core::envelope::{ATTR_EVENT_TYPE, ATTR_ROUTE};
use crate::core::router::{Deliver, Delivery, DeliveryError};
use crate::core::routing::Destination;
use base64::Engine as _;
use std::io::Write as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;
use tracing::info;

/// Delivers to SQS queues, JSON-lines files, standard output, or nowhere.
#[derive(Debug)]
pub struct Destinations {
    sqs: Option<aws_sdk_sqs::Client>,
    file_lock: Mutex<()>,
}

impl Destinations {
    /// `sqs` may be `None` when no route names an SQS queue.
    pub fn new(sqs: Option<aws_sdk_sqs::Client>) -> Self {
        Self { sqs, file_lock: Mutex::new(()) }
    }
}

impl Deliver for Destinations {
    async fn deliver(&self, destination: &Destination, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
        match destination {
            Destination::Sqs(url) => {
                let client = self.sqs.as_ref().ok_or_else(|| DeliveryError("no SQS client configured".into()))?;
                let mut message = delivery.envelope.to_queue_message();
                message.attributes.push((ATTR_EVENT_TYPE, delivery.event_type.to_owned()));
                message.attributes.push((ATTR_ROUTE, delivery.route.to_owned()));
                sqs::send(client, url, message).await.map_err(DeliveryError)
            }
            Destination::File(path) => {
                let line = json_line(delivery);
                let _serialised = self.file_lock.lock().await;
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|err| DeliveryError(format!("open {path}: {err}")))?;
                file.write_all(line.as_bytes()).await.map_err(|err| DeliveryError(format!("write {path}: {err}")))?;
                file.flush().await.map_err(|err| DeliveryError(format!("flush {path}: {err}")))
            }
            Destination::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(json_line(delivery).as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|err| DeliveryError(format!("stdout: {err}")))
            }
            Destination::Drop => {
                info!(webhook_id = %delivery.envelope.id, event_type = delivery.event_type, "webhook dropped by route");
                Ok(())
            }
        }
    }
}

/// One line of the `file:` and `stdout` formats: the payload exactly as
/// received in `body` (base64 in `bodyBase64` if it was not UTF-8).
pub fn json_line(delivery: &Delivery<'_>) -> String {
    let envelope = delivery.envelope;
    let mut line = serde_json::json!({
        "id": envelope.id,
        "source": envelope.source,
        "timestamp": envelope.timestamp,
        "eventType": delivery.event_type,
        "route": delivery.route,
    });
    match std::str::from_utf8(&envelope.body) {
        Ok(text) => line["body"] = text.into(),
        Err(_) => line["bodyBase64"] = base64::engine::general_purpose::STANDARD.encode(&envelope.body).into(),
    }
    let mut text = line.to_string();
    text.push('\n');
    text
}
