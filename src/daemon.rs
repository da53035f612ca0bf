//! The daemon: logging set-up, signals, systemd notification, the run queue and shutdown.

use tracing_subscriber::EnvFilter;

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::Exit;
use crate::config::{LogConfig, LogFormat};
use crate::sync::RunControl;

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

/// On SIGINT or SIGTERM: stop taking work at once, abandon in-flight requests after
/// [`SHUTDOWN_GRACE`]. Returns the watcher task (abort it when the work is done).
pub fn stop_on_signals(control: RunControl) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!(
            "stopping: no new requests; in-flight ones get {} s",
            SHUTDOWN_GRACE.as_secs()
        );
        control.stop.cancel();
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        control.abort.cancel();
    })
}

/// How long in-flight requests may finish after a stop signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The daemon (work in progress).
pub async fn run(_cfg: std::sync::Arc<crate::config::Config>) -> Exit {
    eprintln!("error: `run` is not yet available in this build");
    Exit::Failed
}
