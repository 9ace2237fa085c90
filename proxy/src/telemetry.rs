//! Logging: JSON lines (or text) on stdout through a non-blocking writer, filtered by the
//! config's `log_filter` (`RUST_LOG`). Nothing logs cookie or token values.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RuntimeConfig};

/// Installs the global subscriber. Keep the guard alive: dropping it flushes the log.
pub fn init(runtime: &RuntimeConfig) -> WorkerGuard {
    // 16,384 lines is a few tenths of a second of request logs at full load. The library's
    // default, 128,000, is a channel whose slots are all written at startup: 4 MB, 40 % of an
    // idle proxy's memory. When it is full, lines are dropped, never a request held up.
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(16_384)
        .finish(std::io::stdout());
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
