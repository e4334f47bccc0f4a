//! The deployed archive: lines sent to an Amazon Data Firehose stream, which
//! buffers them, gzips them and writes them into S3 by the hour
//! (`template.yaml`, `ArchiveStream`).

use crate::adapters::aws::ErrorChain;
use crate::core::archive::{Archive, ArchiveError, ArchiveFuture};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;

/// The largest record Firehose takes: 1,000 KiB before base64 encoding.
pub const RECORD_LIMIT: usize = 1000 * 1024;
/// The most records in one `PutRecordBatch`.
const BATCH_RECORDS: usize = 500;
/// The most bytes in one `PutRecordBatch`: 4 MiB.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Appends with `PutRecordBatch`: one call per router batch (more only when
/// the lines pass the call's 4 MiB).
#[derive(Debug, Clone)]
pub struct FirehoseArchive {
    client: aws_sdk_firehose::Client,
    stream: String,
}

impl FirehoseArchive {
    pub fn new(client: aws_sdk_firehose::Client, stream: impl Into<String>) -> Self {
        Self { client, stream: stream.into() }
    }

    /// One call; each line's result, in order.
    async fn put(&self, lines: &[Vec<u8>]) -> Vec<Result<(), ArchiveError>> {
        let records: Vec<Record> = lines
            .iter()
            .map(|line| Record::builder().data(Blob::new(line.clone())).build().expect("data is set"))
            .collect();
        let output =
            self.client.put_record_batch().delivery_stream_name(&self.stream).set_records(Some(records)).send().await;
        match output {
            Err(err) => {
                let cause = format!("PutRecordBatch: {}", ErrorChain(&err));
                lines.iter().map(|_| Err(ArchiveError::Unavailable(cause.clone()))).collect()
            }
            Ok(output) => {
                let responses = output.request_responses();
                (0..lines.len())
                    .map(|index| match responses.get(index) {
                        Some(response) if response.error_code().is_none() => Ok(()),
                        Some(response) => Err(ArchiveError::Unavailable(format!(
                            "Firehose refused the record: {} {}",
                            response.error_code().unwrap_or_default(),
                            response.error_message().unwrap_or_default()
                        ))),
                        None => Err(ArchiveError::Unavailable("Firehose did not answer for the record".into())),
                    })
                    .collect()
            }
        }
    }
}

impl Archive for FirehoseArchive {
    fn max_line_bytes(&self) -> Option<usize> {
        Some(RECORD_LIMIT)
    }

    fn append<'a>(&'a self, lines: &'a [Vec<u8>]) -> ArchiveFuture<'a, Vec<Result<(), ArchiveError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(lines.len());
            for call in calls(lines) {
                results.extend(self.put(call).await);
            }
            results
        })
    }
}

/// Consecutive runs of lines, each within one call's limits.
fn calls(lines: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, line) in lines.iter().enumerate() {
        if index > start && (index - start == BATCH_RECORDS || bytes + line.len() > BATCH_BYTES) {
            calls.push(&lines[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += line.len();
    }
    if start < lines.len() {
        calls.push(&lines[start..]);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_to_500_records_and_4_mib() {
        let small = vec![vec![b'x'; 100]; 1201];
        let sizes: Vec<usize> = calls(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [500, 500, 201]);
        let large = vec![vec![b'x'; RECORD_LIMIT]; 10];
        let calls = calls(&large);
        assert_eq!(calls.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(calls.iter().all(|c| c.iter().map(Vec::len).sum::<usize>() <= BATCH_BYTES), "{}", calls.len());
        assert!(super::calls(&[]).is_empty());
    }
}
