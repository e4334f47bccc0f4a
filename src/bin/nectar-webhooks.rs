//! `nectar-webhooks`: local mode and webhook tools (see `--help`).

use clap::Parser as _;
use nectar_webhooks::{cli::Cli, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init_local();
    Cli::parse().run().await
}
