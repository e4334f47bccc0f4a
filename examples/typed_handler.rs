//! A router Lambda with a typed handler of your own, next to the built-in
//! destinations. Route to it by name:
//!
//! ```text
//! ROUTES='document.*[isFlagged=true]=handler:flagged-bills; document.*=https://sqs…/documents; *=drop'
//! ```
//!
//! Build it like the stock router (`cargo lambda build --release --example typed_handler`).

use nectar_webhooks::adapters::lambda_router;
use nectar_webhooks::core::events::NectarEvent;
use nectar_webhooks::core::handlers::{Handler, HandlerFuture};
use nectar_webhooks::core::router::{Delivery, DeliveryError};
use nectar_webhooks::telemetry;

/// Flags bills over a threshold for review; an `Err` makes the record retry.
struct FlaggedBills;

impl Handler for FlaggedBills {
    fn handle<'a>(&'a self, event: &'a NectarEvent, delivery: &'a Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let NectarEvent::DocumentCreated { document, .. } = event else { return Ok(()) };
            let total = document.total_charges.as_ref().and_then(|amount| amount.value());
            let total = total.ok_or_else(|| DeliveryError(format!("bill {:?} has no total", document.id)))?;
            tracing::info!(webhook_id = %delivery.envelope.id, %total, "flagged bill for review");
            Ok(())
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_lambda();
    lambda_router::run_from_env(|destinations| destinations.with_handler("flagged-bills", FlaggedBills)).await
}
