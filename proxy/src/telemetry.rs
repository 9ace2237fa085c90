//! Logging: JSON lines (or text) on stdout through a non-blocking writer, filtered by the
//! config's `log_filter` (`RUST_LOG`). Nothing logs cookie or token values.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RuntimeConfig};

/// Installs the global subscriber. Keep the guard alive: dropping it flushes the log.
pub fn init(runtime: &RuntimeConfig) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = EnvFilter::try_new(&runtime.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match runtime.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
