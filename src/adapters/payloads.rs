//! Amazon S3 as the claim-check store for payloads too large for SQS, and
//! reading queue messages that may point there.

use crate::core::claim_check::{self, ClaimCheckError, PayloadStore, StoreFuture};
use crate::core::envelope::{ATTR_CLAIM_CHECK, DecodeError, Envelope};
use bytes::Bytes;

/// Payloads under `s3://BUCKET/payloads/{source}/{webhook id}`.
#[derive(Debug, Clone)]
pub struct S3PayloadStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3PayloadStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }
}

impl PayloadStore for S3PayloadStore {
    fn put<'a>(&'a self, key: &'a str, body: &'a [u8]) -> StoreFuture<'a, String> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(Bytes::copy_from_slice(body).into())
                .send()
                .await
                .map_err(|err| ClaimCheckError(format!("PutObject: {}", crate::adapters::aws::ErrorChain(&err))))?;
            Ok(format!("s3://{}/{key}", self.bucket))
        })
    }

    fn get<'a>(&'a self, reference: &'a str) -> StoreFuture<'a, Bytes> {
        Box::pin(async move {
            let (bucket, key) = reference
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
                .ok_or_else(|| ClaimCheckError(format!("{reference:?} is not an s3:// reference")))?;
            let mut object = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|err| ClaimCheckError(format!("GetObject: {}", crate::adapters::aws::ErrorChain(&err))))?;
            // Straight into one buffer of the object's length: collecting the
            // chunks and joining them would hold the payload twice.
            let length = object.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
            let mut body = Vec::with_capacity(length);
            while let Some(chunk) =
                object.body.try_next().await.map_err(|err| ClaimCheckError(format!("reading {reference}: {err}")))?
            {
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
        })
    }
}

/// Reads an envelope from a queue message, fetching a claim-checked payload.
pub async fn read_envelope<'a>(
    store: Option<&dyn PayloadStore>,
    body: &str,
    attribute: impl Fn(&str) -> Option<&'a str>,
) -> Result<Envelope, DecodeError> {
    let reference = attribute(ATTR_CLAIM_CHECK);
    let envelope = Envelope::from_queue_message(body, attribute)?;
    claim_check::resolve(store, envelope, reference)
        .await
        .map_err(|err| DecodeError::PayloadUnavailable(err.to_string()))
}
