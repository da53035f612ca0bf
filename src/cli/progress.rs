//! Progress on a terminal for long work a command does in the foreground: an import (bytes of the
//! input read) and a local sync run (pairs recorded so far). Drawn with `indicatif` on stderr, and
//! only when stderr is a terminal, `--quiet` is not given and the log format is text — so never in
//! a log file, the journal or JSON output (stdout).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Config, LogFormat};

/// How often a bar redraws at most (and a sync's progress is read from the store).
const REFRESH: Duration = Duration::from_millis(200);

/// Whether progress is drawn: stderr is a terminal, no `--quiet`, text logs.
pub fn wanted(cfg: &Config, quiet: bool) -> bool {
    !quiet && cfg.log.format == LogFormat::Text && std::io::stderr().is_terminal()
}

/// The bar on the terminal now, if any: log lines are written around it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> Option<ProgressBar> {
    SHOWN.lock().ok().and_then(|b| b.clone())
}

fn set_shown(bar: Option<ProgressBar>) {
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = bar;
    }
}

/// Clears a bar off the terminal (and lets log lines through directly again).
pub fn clear(bar: &ProgressBar) {
    set_shown(None);
    bar.finish_and_clear();
}

fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    let target = ProgressDrawTarget::stderr_with_hz(5);
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(len, target).with_style(style);
    bar.enable_steady_tick(REFRESH);
    set_shown(Some(bar.clone()));
    bar
}

/// The log's writer for the command line: stderr, with a progress bar on the terminal taken off
/// while a log line is written (so that a line never starts after the bar's text).
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'w self) -> LogLine {
        LogLine
    }
}

/// One log line's writer (see [`LogWriter`]).
#[derive(Debug)]
pub struct LogLine;

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match shown() {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// An import's input, counting the bytes the importer consumes into a bar (of the file's size
/// when known).
pub struct ImportProgress<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R> ImportProgress<R> {
    /// Wraps `inner`; `len` is the input's size in bytes when known (a file, not stdin).
    pub fn new(inner: R, len: Option<u64>) -> Self {
        let bar = match len {
            Some(_) => bar(
                len,
                "importing {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
            ),
            None => bar(None, "importing {spinner} {binary_bytes} ({binary_bytes_per_sec})"),
        };
        ImportProgress { inner, bar }
    }

    /// The bar, to clear when the import is done.
    pub fn bar(&self) -> ProgressBar {
        self.bar.clone()
    }
}

impl<R: Read> Read for ImportProgress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for ImportProgress<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.bar.inc(amt as u64);
        self.inner.consume(amt);
    }
}

/// A local sync run's progress: a thread reads, from its own store connection, how many pairs the
/// run has recorded so far (the ledger writer's rows) and shows them; it stops and clears the line
/// when dropped.
pub struct SyncProgress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncProgress {
    /// Starts watching the store at `store_path` for a run newer than the newest one now.
    pub fn start(store_path: PathBuf, busy: Duration) -> SyncProgress {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sync-progress".into())
            .spawn(move || watch(store_path, busy, stopped))
            .ok();
        SyncProgress {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for SyncProgress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(store_path: PathBuf, busy: Duration, stopped: mpsc::Receiver<()>) {
    let Ok(store) = crate::store::Store::open(&store_path, busy) else {
        return;
    };
    let before = store.last_run().ok().flatten().map(|r| r.id).unwrap_or(0);
    let bar = bar(None, "sync {spinner} {msg}");
    bar.set_message("starting");
    // Until told to stop (or the command is gone).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
        let Ok(Some(run)) = store.last_run() else {
            continue;
        };
        if run.id <= before {
            continue;
        }
        if let Ok(by_connector) = store.run_tally_by_connector(run.id) {
            let mut total = crate::domain::Tally::default();
            for t in by_connector.values() {
                total.merge(t);
            }
            let trouble = total.failed + total.rejected;
            bar.set_message(format!(
                "run #{}: {} pair(s) recorded, {} pushed{}",
                run.id,
                total.total(),
                total.pushed,
                if trouble > 0 {
                    format!(", {trouble} failed")
                } else {
                    String::new()
                }
            ));
        }
    }
    clear(&bar);
}
