//! Log set-up: JSON lines in Lambda (CloudWatch's JSON log format), compact
//! text on a terminal. `RUST_LOG` filters; the default is `info`.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For the Lambda functions.
pub fn init_lambda() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .init();
}

/// For the command-line tool: logs on stderr, so stdout carries only data.
pub fn init_local() {
    tracing_subscriber::fmt().compact().with_env_filter(filter()).with_writer(std::io::stderr).init();
}
