//! Reading the archive back, from S3 (`s3://BUCKET/PREFIX`, as Firehose
//! wrote it) or from a directory (as `serve --archive-dir` wrote it): the
//! same lines either way, gzip-compressed or not.

use crate::adapters::aws::ErrorChain;
use crate::core::archive::{ArchiveError, ArchiveRecord, partition_hour};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Where an archive is.
#[derive(Debug, Clone)]
pub enum ArchiveSource {
    S3 { client: aws_sdk_s3::Client, bucket: String, prefix: String },
    Dir(PathBuf),
}

/// Which records to read: those received in `[since, until)`.
///
/// Objects are partitioned by the hour they were archived, which is after
/// the webhook was received: by the router's delay (seconds, unless its
/// queue had a backlog) plus Firehose's buffering (up to 15 minutes). So a
/// window reads partitions from `since`'s hour to `until` plus `lag`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub lag: Duration,
}

impl Window {
    /// Everything archived.
    pub fn all() -> Self {
        Self { since: None, until: None, lag: Duration::zero() }
    }

    fn holds(&self, received: DateTime<Utc>) -> bool {
        self.since.is_none_or(|since| received >= since) && self.until.is_none_or(|until| received < until)
    }

    /// Whether an object of this partition may hold records of the window.
    fn may_hold(&self, partition: Option<DateTime<Utc>>) -> bool {
        let Some(hour) = partition else { return true };
        let after_since = self.since.is_none_or(|since| hour + Duration::hours(1) > since);
        let before_until = self.until.is_none_or(|until| hour < until + self.lag);
        after_since && before_until
    }
}

/// What a read found besides the records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub objects: usize,
    pub lines: usize,
    /// Lines that are not archive records: skipped, and counted here.
    pub malformed: usize,
    /// Second and later lines of the same webhook (a retried record, or
    /// Firehose's own at-least-once delivery): skipped.
    pub duplicates: usize,
}

impl ArchiveSource {
    /// `s3://BUCKET/PREFIX` (the client is made only then) or a directory.
    pub async fn open<F, Fut>(location: &str, s3_client: F) -> Result<Self, ArchiveError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<aws_sdk_s3::Client, String>>,
    {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ArchiveError::Unavailable(format!("{location:?}: expected s3://BUCKET/PREFIX")));
            }
            let client = s3_client().await.map_err(ArchiveError::Unavailable)?;
            return Ok(Self::S3 { client, bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
        if !path.is_dir() {
            return Err(ArchiveError::Unavailable(format!("{location}: not a directory (nor s3://BUCKET/PREFIX)")));
        }
        Ok(Self::Dir(path))
    }

    /// The records received in `window`, one per webhook, ordered by when
    /// they were received (then by id).
    pub async fn read(&self, window: Window) -> Result<(Vec<ArchiveRecord>, ReadStats), ArchiveError> {
        let mut stats = ReadStats::default();
        let mut records = Vec::new();
        for object in self.objects(window).await? {
            let bytes = self.fetch(&object).await?;
            stats.objects += 1;
            for line in bytes.split(|&b| b == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace)) {
                stats.lines += 1;
                match ArchiveRecord::from_line(line) {
                    Ok(record) if window.holds(record.received) => records.push(record),
                    Ok(_) => {}
                    Err(_) => stats.malformed += 1,
                }
            }
        }
        records.sort_by(|a, b| (a.received, &a.source, &a.id).cmp(&(b.received, &b.source, &b.id)));
        let in_window = records.len();
        let mut seen = HashSet::new();
        records.retain(|record| seen.insert((record.source.clone(), record.id.clone())));
        stats.duplicates = in_window - records.len();
        Ok((records, stats))
    }

    /// The objects (keys or paths) whose partition may hold the window.
    async fn objects(&self, window: Window) -> Result<Vec<String>, ArchiveError> {
        let mut objects = match self {
            Self::S3 { client, bucket, prefix } => {
                let mut keys = Vec::new();
                let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|err| {
                        ArchiveError::Unavailable(format!("ListObjectsV2 s3://{bucket}/{prefix}: {}", ErrorChain(&err)))
                    })?;
                    keys.extend(page.contents().iter().filter_map(|object| object.key().map(str::to_owned)));
                }
                keys
            }
            Self::Dir(root) => {
                let mut files = Vec::new();
                walk(root, &mut files)
                    .map_err(|err| ArchiveError::Unavailable(format!("reading {}: {err}", root.display())))?;
                files.into_iter().filter_map(|path| path.to_str().map(str::to_owned)).collect()
            }
        };
        objects.retain(|object| window.may_hold(partition_hour(object)));
        objects.sort();
        Ok(objects)
    }

    /// An object's lines, uncompressed.
    async fn fetch(&self, object: &str) -> Result<Vec<u8>, ArchiveError> {
        let bytes =
            match self {
                Self::S3 { client, bucket, .. } => {
                    let output = client.get_object().bucket(bucket).key(object).send().await.map_err(|err| {
                        ArchiveError::Unavailable(format!("GetObject s3://{bucket}/{object}: {}", ErrorChain(&err)))
                    })?;
                    let body =
                        output.body.collect().await.map_err(|err| {
                            ArchiveError::Unavailable(format!("reading s3://{bucket}/{object}: {err}"))
                        })?;
                    body.to_vec()
                }
                Self::Dir(_) => std::fs::read(object)
                    .map_err(|err| ArchiveError::Unavailable(format!("reading {object}: {err}")))?,
            };
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .map_err(|err| ArchiveError::Malformed(format!("{object}: not gzip: {err}")))?;
            return Ok(plain);
        }
        Ok(bytes)
    }
}

/// Every file under `dir`, hidden ones (`.write-check-…`) left out.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::archive::{ArchivedBody, partition_path};
    use chrono::TimeZone as _;
    use std::io::Write as _;

    fn record(id: &str, received: DateTime<Utc>) -> ArchiveRecord {
        ArchiveRecord {
            id: id.into(),
            source: "nectar".into(),
            timestamp: received.timestamp(),
            event_type: "document.created.v2".into(),
            received,
            resource_id: None,
            body: ArchivedBody::inline(b"{}"),
        }
    }

    #[tokio::test]
    async fn reads_plain_and_gzip_objects_once_per_webhook_in_order_within_the_window() {
        let root = std::env::temp_dir().join(format!("archive-source-test-{}", std::process::id()));
        let at = |minute| Utc.with_ymd_and_hms(2026, 12, 5, 9, minute, 0).unwrap();
        let hour = root.join(partition_path(at(0)));
        std::fs::create_dir_all(&hour).unwrap();
        let lines = |records: &[ArchiveRecord]| records.iter().flat_map(ArchiveRecord::to_line).collect::<Vec<u8>>();
        std::fs::write(
            hour.join("a.jsonl"),
            [lines(&[record("b", at(20)), record("a", at(10))]), b"junk\n".to_vec()].concat(),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&lines(&[record("a", at(10)), record("c", at(40))])).unwrap();
        std::fs::write(hour.join("b.gz"), gz.finish().unwrap()).unwrap();
        let far = root.join(partition_path(at(0) + Duration::days(3)));
        std::fs::create_dir_all(&far).unwrap();
        std::fs::write(far.join("c.jsonl"), lines(&[record("late", at(30))])).unwrap();

        let source = ArchiveSource::Dir(root.clone());
        let window = Window { since: Some(at(10)), until: Some(at(40)), lag: Duration::hours(1) };
        let (records, stats) = source.read(window).await.unwrap();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(stats, ReadStats { objects: 2, lines: 5, malformed: 1, duplicates: 1 });
        let (records, _) = source.read(Window { lag: Duration::days(4), ..window }).await.unwrap();
        assert_eq!(records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b", "late"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
