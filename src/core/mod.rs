//! The core: everything about webhooks that knows nothing of Lambda or AWS.
//!
//! - [`verification`]: Svix signature checks.
//! - [`sources`]: who may send, and how each source authenticates.
//! - [`ingest`]: request → queued or refused, with every status code.
//! - [`envelope`]: the queued message's format.
//! - [`claim_check`]: payloads too large for the queue, stored by reference.
//! - [`archive`]: every verified webhook kept, for replay and drift reports.
//! - [`replay`]: which archived webhooks a replay takes, and how far it got.
//! - [`events`]: Nectar event types and typed models.
//! - [`routing`]: the route table and its syntax.
//! - [`router`]: routing and delivering a batch, once per destination.
//! - [`handlers`]: typed handlers written in Rust, the extension point.
//! - [`dedup`]: remembering deliveries.
//! - [`outcome`]: what happened at each step, the field metrics are read from.
//! - [`queue`], [`clock`]: ports to the outside.

pub mod archive;
pub mod claim_check;
pub mod clock;
pub mod dedup;
pub mod envelope;
pub mod events;
pub mod handlers;
pub mod ingest;
pub mod outcome;
pub mod queue;
pub mod replay;
pub mod router;
pub mod routing;
pub mod sources;
pub mod verification;
