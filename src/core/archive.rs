//! The archive: every verified webhook, kept after its destinations have it,
//! so a window of history can be replayed ([`crate::core::replay`]) or read
//! for schema drift ([`crate::core::drift`]).
//!
//! The format is one JSON line per webhook ([`ArchiveRecord`]), in objects
//! partitioned by the hour they were archived: `dt=YYYY-MM-DD/hour=HH/`. The
//! deployed stack writes it through Amazon Data Firehose (gzip) into S3,
//! where a Glue table reads it for Athena; local mode writes the same lines
//! into a directory. Both are read back by the same code.
//!
//! The router archives each record it reads, once per attempt: a record
//! retried after a failure is archived again, and Firehose itself delivers
//! at least once. Readers keep the first line of each webhook id.

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use thiserror::Error;

/// One archived webhook, as written: the envelope, when it was received,
/// and the body exactly as received or where it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    /// The webhook id (Svix's `svix-id`).
    pub id: String,
    /// The source it came from (`nectar`).
    pub source: String,
    /// The signed timestamp, in Unix seconds.
    pub timestamp: i64,
    pub event_type: String,
    /// When ingest received it (RFC 3339, milliseconds): what replay windows
    /// are compared with.
    pub received: DateTime<Utc>,
    /// The connection's or document's id, so one resource's history is one
    /// query away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(flatten)]
    pub body: ArchivedBody,
}

/// The body of an archived webhook: kept in the line, or by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ArchivedBody {
    /// The body as received, when it is UTF-8.
    Text { body: String },
    /// The body as received, base64-encoded, when it is not UTF-8.
    #[serde(rename_all = "camelCase")]
    Base64 { body_base64: String },
    /// Where the body is kept (`s3://…`, `file://…`) and its size in bytes:
    /// a body too large for an archive record, stored as a claim check.
    #[serde(rename_all = "camelCase")]
    ClaimCheck { claim_check: String, bytes: u64 },
}

impl ArchivedBody {
    /// The body kept in the line, as received.
    pub fn inline(body: &[u8]) -> Self {
        use base64::Engine as _;
        match std::str::from_utf8(body) {
            Ok(text) => Self::Text { body: text.to_owned() },
            Err(_) => Self::Base64 { body_base64: base64::engine::general_purpose::STANDARD.encode(body) },
        }
    }

    /// The bytes as received when they are in the line; `None` for a claim
    /// check (fetch it from its store).
    pub fn bytes(&self) -> Result<Option<Bytes>, ArchiveError> {
        use base64::Engine as _;
        match self {
            Self::Text { body } => Ok(Some(Bytes::copy_from_slice(body.as_bytes()))),
            Self::Base64 { body_base64 } => base64::engine::general_purpose::STANDARD
                .decode(body_base64)
                .map(|bytes| Some(Bytes::from(bytes)))
                .map_err(|_| ArchiveError::Malformed("bodyBase64 is not base64".into())),
            Self::ClaimCheck { .. } => Ok(None),
        }
    }
}

impl ArchiveRecord {
    /// The record as one line, newline included (Firehose joins records
    /// as they come, so each carries its own separator).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("strings and numbers serialise");
        line.push(b'\n');
        line
    }

    /// A line read back; errors say what is wrong, never what the line held.
    pub fn from_line(line: &[u8]) -> Result<Self, ArchiveError> {
        serde_json::from_slice(line).map_err(|err| {
            ArchiveError::Malformed(format!("line {}, column {}: not an archive record", err.line(), err.column()))
        })
    }
}

/// The archive could not be written or read.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The archive did not take the record; the router retries it.
    #[error("archive: {0}")]
    Unavailable(String),
    /// A record larger than the archive takes in one line, with no payload
    /// store to keep its body in.
    #[error("archive: a {0}-byte record is over the archive's limit and no payload store is configured")]
    TooLarge(usize),
    /// What was read is not an archive record.
    #[error("archive: {0}")]
    Malformed(String),
}

/// A boxed future, so archives can be shared as trait objects.
pub type ArchiveFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where archive records are written (Firehose deployed, a directory locally).
pub trait Archive: Send + Sync {
    /// The largest line it takes, if it has a limit: a record over it keeps
    /// its body in the payload store and a reference in the line.
    fn max_line_bytes(&self) -> Option<usize>;

    /// Appends lines ([`ArchiveRecord::to_line`]); says for each whether it
    /// was taken, in order, so only the ones that were not are retried.
    fn append<'a>(&'a self, lines: &'a [Vec<u8>]) -> ArchiveFuture<'a, Vec<Result<(), ArchiveError>>>;
}

/// The partition an object of the archive belongs to, read from its key or
/// path (`…/dt=2026-12-05/hour=09/…`): the hour it was archived, UTC.
/// `None` for a key without one (moto's Firehose does not expand the
/// `!{timestamp:…}` prefix): such objects are read whatever the window.
pub fn partition_hour(key: &str) -> Option<DateTime<Utc>> {
    let date = key.split('/').find_map(|part| part.strip_prefix("dt="))?;
    let hour = key.split('/').find_map(|part| part.strip_prefix("hour="))?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.parse().ok()?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(hour, 0, 0)?))
}

/// The partition path of an hour: `dt=YYYY-MM-DD/hour=HH`, as Firehose's
/// prefix in `template.yaml` writes it.
pub fn partition_path(at: DateTime<Utc>) -> String {
    at.format("dt=%Y-%m-%d/hour=%H").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: ArchivedBody) -> ArchiveRecord {
        ArchiveRecord {
            id: "msg_1".into(),
            source: "nectar".into(),
            timestamp: 1_764_201_600,
            event_type: "document.created.v2".into(),
            received: Utc.timestamp_millis_opt(1_764_201_600_123).unwrap(),
            resource_id: Some("doc_1".into()),
            body,
        }
    }

    #[test]
    fn lines_round_trip_with_the_body_byte_exact() {
        for body in [&br#"{"a": 1,  "b":"\u00e9"}"#[..], b"\xff\xfe not utf-8"] {
            let original = record(ArchivedBody::inline(body));
            let line = original.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            let read = ArchiveRecord::from_line(&line).unwrap();
            assert_eq!(read, original);
            assert_eq!(read.body.bytes().unwrap().unwrap(), body);
        }
        let checked = record(ArchivedBody::ClaimCheck { claim_check: "s3://b/k".into(), bytes: 9 });
        assert_eq!(ArchiveRecord::from_line(&checked.to_line()).unwrap(), checked);
    }

    #[test]
    fn the_line_has_the_documented_keys() {
        let line = String::from_utf8(record(ArchivedBody::inline(b"{}")).to_line()).unwrap();
        assert_eq!(
            line,
            "{\"id\":\"msg_1\",\"source\":\"nectar\",\"timestamp\":1764201600,\"eventType\":\"document.created.v2\",\
             \"received\":\"2025-11-27T00:00:00.123Z\",\"resourceId\":\"doc_1\",\"body\":\"{}\"}\n"
        );
    }

    #[test]
    fn malformed_lines_are_named_without_their_content() {
        let err = ArchiveRecord::from_line(b"{\"id\":\"secret-value\"}").unwrap_err().to_string();
        assert!(err.contains("not an archive record"), "{err}");
        assert!(!err.contains("secret-value"), "{err}");
    }

    #[test]
    fn partitions_read_from_keys_and_paths() {
        let hour = Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap();
        assert_eq!(partition_path(hour), "dt=2026-12-05/hour=09");
        assert_eq!(partition_hour("archive/dt=2026-12-05/hour=09/nectar-1-2026-12-05-09-10-11-abc.gz"), Some(hour));
        assert_eq!(partition_hour("/tmp/a/dt=2026-12-05/hour=09/archive.jsonl"), Some(hour));
        assert_eq!(partition_hour("archive/dt=!{timestamp:yyyy-MM-dd}/2026/12/05/09/x"), None);
    }
}
