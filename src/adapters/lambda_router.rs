//! The router Lambda: SQS batches in, partial batch failures out.

use crate::core::dedup::SeenStore;
use crate::core::envelope::Envelope;
use crate::core::router::{Deliver, Record, Router};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

/// Routes one SQS batch; only the records that failed are reported, so SQS
/// redelivers just those (and, after `maxReceiveCount`, moves them to the DLQ).
pub async fn handle<D: Deliver, S: SeenStore>(router: &Router<D, S>, event: SqsEvent) -> SqsBatchResponse {
    let records = event.records.iter().map(record).collect();
    let failed = router.route_batch(records).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

fn record(message: &SqsMessage) -> Record {
    let attribute = |name: &str| message.message_attributes.get(name).and_then(|a| a.string_value.as_deref());
    Record {
        id: message.message_id.clone().unwrap_or_default(),
        message: Envelope::from_queue_message(message.body.as_deref().unwrap_or_default(), attribute),
    }
}

/// Runs the router Lambda until the runtime stops it.
pub async fn run<D: Deliver + 'static, S: SeenStore + 'static>(
    router: Router<D, S>,
) -> Result<(), lambda_runtime::Error> {
    let router = Arc::new(router);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let router = Arc::clone(&router);
        async move { Ok::<_, std::convert::Infallible>(handle(&router, event.payload).await) }
    }))
    .await
}
