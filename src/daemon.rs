//! The daemon: logging set-up, signals, systemd notification, the run queue and shutdown.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Sets up tracing to stderr: level from `RUST_LOG` when set, else from `[log] level`; text lines
/// without timestamps under journald (`JOURNAL_STREAM` set), or JSON. Safe to call more than once.
pub fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match (log.format, under_journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}
