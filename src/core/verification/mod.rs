//! Verification: how each source's webhooks are proven genuine.
//!
//! - [`svix`]: Svix / Standard Webhooks signatures (Nectar): HMAC-SHA256
//!   `v1` and Ed25519 `v1a`, with timestamp tolerance.
//! - [`nector`]: Nector's shared-secret digest header.

pub mod nector;
pub mod svix;
