//! The Lambda functions' JSON log lines, formatted as in production
//! (`telemetry::init_lambda`) but written nowhere, so their cost is measured
//! without a terminal's.

pub fn init() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::sink)
        .init();
}
