//! What local mode's `GET /ready` checks: the store takes a write, and the
//! routes' `file:` destinations can be opened for appending. AWS
//! destinations are checked at start-up for a client
//! ([`crate::adapters::destinations::Destinations::check`]), not probed on
//! each request: a probe that calls AWS would cost a request per poll.

use super::durable_queue::DurableStore;
use super::server::ReadyCheck;
use crate::core::routing::{Destination, RouteTable};
use std::sync::Arc;
use tracing::warn;

/// The check for a server with `store` (the embedded queue's, if it is
/// used) routing by `routes`.
pub fn ready_check(store: Option<DurableStore>, routes: &RouteTable) -> ReadyCheck {
    let files: Arc<[String]> = routes
        .destinations()
        .filter_map(|destination| match destination {
            Destination::File(path) => Some(path.clone()),
            _ => None,
        })
        .collect();
    Arc::new(move || {
        let (store, files) = (store.clone(), Arc::clone(&files));
        Box::pin(async move {
            if let Some(store) = store {
                store.check_writable().await.map_err(|err| {
                    warn!(error = %err, "not ready: the local queue store does not take writes");
                    "store_unwritable"
                })?;
            }
            for path in files.iter() {
                tokio::fs::OpenOptions::new().create(true).append(true).open(path).await.map_err(|err| {
                    warn!(path, error = %err, "not ready: a file destination cannot be opened");
                    "destination_unreachable"
                })?;
            }
            Ok(())
        })
    })
}
