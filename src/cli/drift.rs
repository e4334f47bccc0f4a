//! `nectar-webhooks drift`: compares the payloads in the archive with the
//! typed models, per event type, and exits 1 when they differ, so it can run
//! on a schedule or in CI. Prints paths, kinds, counts, times and webhook
//! ids, never a payload value.

use super::replay::{LazySdk, References, body_of, is_s3_reference};
use crate::adapters::archive::source::{ArchiveSource, Window};
use crate::core::drift::{DriftReport, render_text};
use chrono::{DateTime, Utc};
use std::process::ExitCode;

/// `drift`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive: s3://BUCKET/PREFIX (the stack's `ArchiveLocation` output) or a directory.
    #[arg(long, value_name = "ARCHIVE")]
    pub from: String,
    /// Only webhooks received at or after this time (RFC 3339).
    #[arg(long, value_name = "T")]
    pub since: Option<DateTime<Utc>>,
    /// ... and before this time (RFC 3339).
    #[arg(long, value_name = "T")]
    pub until: Option<DateTime<Utc>>,
    /// Print the findings as a JSON list (eventType, path, kind, count, firstSeen, lastSeen, samples, ...).
    #[arg(long)]
    pub json: bool,
}

/// 0: the payloads match the models; 1: drift found; 2: the archive could not be read.
pub async fn run(args: Args) -> ExitCode {
    match report(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("nectar-webhooks: {message}");
            ExitCode::from(2)
        }
    }
}

/// Prints the report; true if it found no drift.
async fn report(args: Args) -> Result<bool, String> {
    let sdk = LazySdk::default();
    let source = ArchiveSource::open(&args.from, || async { Ok(aws_sdk_s3::Client::new(&sdk.config().await?)) })
        .await
        .map_err(|err| err.to_string())?;
    // Every partition from `since` on: drift has no end of window to add a lag to.
    let window = Window { since: args.since, until: args.until, lag: chrono::Duration::days(14) };
    let (records, stats) = source.read(window).await.map_err(|err| err.to_string())?;
    let payloads = References::new(if records.iter().any(|r| is_s3_reference(&r.body)) {
        Some(aws_sdk_s3::Client::new(&sdk.config().await?))
    } else {
        None
    });
    let mut report = DriftReport::default();
    let mut unreadable = 0;
    for record in &records {
        match body_of(record, &payloads).await {
            Ok(body) => report.observe(&record.event_type, &record.id, record.received, &body),
            Err(_) => unreadable += 1,
        }
    }
    let findings = report.findings();
    let skipped = report.skipped();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings).expect("findings serialise"));
    } else {
        print!("{}", render_text(&findings));
    }
    eprintln!(
        "drift: {} webhooks compared, {} of other types and {} not JSON objects skipped, {} bodies unreadable \
         ({} objects, {} duplicate lines, {} malformed); {} findings",
        records.len() as u64 - skipped.unknown_event_types - skipped.not_objects - unreadable,
        skipped.unknown_event_types,
        skipped.not_objects,
        unreadable,
        stats.objects,
        stats.duplicates,
        stats.malformed,
        findings.len()
    );
    Ok(findings.is_empty())
}
