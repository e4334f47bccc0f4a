//! Every file in `events/` through the real Lambda handlers: what
//! `sam local invoke` would do, without Docker. Ingest events must get the
//! status their folder or name promises; router events must be routed, with
//! exactly their poison records reported failed.

#![cfg(feature = "adapters")]

mod support;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_http::request::LambdaRequest;
use lambda_runtime::tower::ServiceExt as _;
use lambda_runtime::{Context, LambdaEvent, Service as _};
use nectar_webhooks::adapters::destinations::Destinations;
use nectar_webhooks::adapters::lambda_ingest;
use nectar_webhooks::adapters::lambda_router::SqsBatchHandler;
use nectar_webhooks::adapters::sqs::SqsQueue;
use nectar_webhooks::config::IngestConfig;
use nectar_webhooks::core::clock::FixedClock;
use nectar_webhooks::core::dedup::InMemorySeen;
use nectar_webhooks::core::ingest::{Ingest, Limits};
use nectar_webhooks::core::router::Router;
use nectar_webhooks::core::routing::RouteTable;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::*;

/// The committed samples are signed at this time (see the Makefile).
const SIGNED_AT: i64 = 1_764_201_600;

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { json_files(&path) } else { vec![path] }
        })
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// `rejected/401-wrong-secret.json` → 401; anything else → 202.
fn expected_status(path: &Path) -> u16 {
    let name = path.file_name().unwrap().to_string_lossy();
    if path.parent().unwrap().ends_with("rejected") { name[..3].parse().unwrap() } else { 202 }
}

#[tokio::test]
async fn every_ingest_sample_gets_its_expected_status() {
    let client = sqs_client();
    let queue = create_queue(&client, "samples").await;
    let config =
        IngestConfig::from_lookup(|name| (name == "WEBHOOK_SECRET").then(|| SAMPLE_SECRET.to_owned())).unwrap();
    let ingest = Arc::new(Ingest::new(
        config.sources(),
        SqsQueue::new(client.clone(), &queue),
        Limits::default(),
        Arc::new(FixedClock(SIGNED_AT + 60)),
    ));
    let files = json_files(&project_dir().join("events/ingest"));
    assert!(files.len() >= 30, "samples for every payload in every shape");
    let mut accepted = 0;
    for file in &files {
        let event: LambdaRequest = serde_json::from_slice(&std::fs::read(file).unwrap())
            .unwrap_or_else(|err| panic!("{}: not a Lambda HTTP event: {err}", file.display()));
        let mut service = lambda_ingest::service(Arc::clone(&ingest));
        let response = service.ready().await.unwrap().call(LambdaEvent::new(event, Context::default())).await.unwrap();
        let response = serde_json::to_value(response).unwrap();
        assert_eq!(response["statusCode"], expected_status(file), "{}: {}", file.display(), response["body"]);
        accepted += usize::from(expected_status(file) == 202);
    }
    assert_eq!(drain(&client, &queue, accepted).await.len(), accepted);
}

#[tokio::test]
async fn every_router_sample_is_routed_and_only_poison_fails() {
    let out = std::env::temp_dir().join(unique_name("samples")).with_extension("jsonl");
    let routes = RouteTable::parse(&format!("*=file:{}", out.display())).unwrap();
    let handler = SqsBatchHandler {
        router: Router::new(routes, Destinations::default(), InMemorySeen::default())
            .with_clock(Arc::new(FixedClock(SIGNED_AT + 60))),
        dead_letters: None,
    };
    for file in json_files(&project_dir().join("events/router")) {
        let event: SqsEvent = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let poison: Vec<String> =
            event.records.iter().filter_map(|r| r.message_id.clone()).filter(|id| id.starts_with("poison")).collect();
        let response = handler.handle(event).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failed, poison, "{}", file.display());
    }
    assert!(std::fs::read_to_string(&out).unwrap().lines().count() >= 14);
}
