//! The archive's backends ([`crate::core::archive`]): written through Amazon
//! Data Firehose when deployed ([`firehose`]) or into a directory locally
//! ([`dir`]), and read back from either by [`source`] for `replay` and `drift`.

pub mod dir;
pub mod firehose;
pub mod source;
