//! The extension point for Rust users: a typed handler for Nectar events,
//! registered under a name and routed to with `handler:NAME`.

use crate::core::events::NectarEvent;
use crate::core::router::{Delivery, DeliveryError};
use std::future::Future;
use std::pin::Pin;

/// What a handler returns: `Ok` once the event is handled; an error makes
/// the record fail, be retried, and end in the dead-letter queue if it keeps
/// failing.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Handles typed Nectar events. Events whose payload cannot be typed (an
/// unknown type, or a body that is not a JSON object) never reach it: they
/// fail before, with the reason.
pub trait Handler: Send + Sync {
    fn handle<'a>(&'a self, event: &'a NectarEvent, delivery: &'a Delivery<'a>) -> HandlerFuture<'a>;
}
