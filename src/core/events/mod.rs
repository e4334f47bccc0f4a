//! Nectar's events: their types (what routing needs) and typed models (what
//! handlers written in Rust match on).
//!
//! - [`types`]: reading a payload's event type and resource id, cheaply.
//! - [`model`]: [`NectarEvent`], the twelve event types as Rust types.
//! - [`values`]: exact decimals and lenient dates.

mod introspect;
pub mod model;
pub mod types;
pub mod values;

pub use model::{NectarEvent, ParseError, Version};
pub use types::{NECTAR_EVENT_TYPES, NECTOR_SOURCE, Probe, UNKNOWN_EVENT_TYPE, probe};
