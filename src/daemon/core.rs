//! The daemon's core: one event loop that owns the run queue and the schedule timer.
//!
//! Everything that can ask for work arrives as a [`DaemonEvent`] (SIGUSR1, SIGHUP, SIGTERM, the
//! watchdog's probe, later the control API); schedule slots come from the core's own timer. The core
//! never touches the store or the network itself: runs, reloads and bookkeeping go through a
//! [`Driver`], and time through a [`Clock`] — so tests drive it with paused tokio time and a fake
//! driver, in milliseconds.
//!
//! Rules (each has a test that fails when it is broken):
//! - at most one run at a time; a request while a run is active queues **exactly one** more;
//! - a slot is handed to a run, never marked taken by the core: the run records it when it starts,
//!   so a slot that cannot start now (run lock held by a CLI `sync`) is retried until it runs;
//! - the core answers a watchdog probe whatever else is going on;
//! - on shutdown the run in flight gets [`SHUTDOWN_GRACE`] to finish its requests, then is
//!   abandoned; the whole stop stays within the contract's 10 s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::{ConnectorId, Trigger};
use crate::schedule::Schedule;
use crate::sync::{RunControl, RunRequest};
use crate::time::{format_ms, Millis};
pub use crate::time::{Clock, SystemClock};

/// How long in-flight requests may finish after a stop signal; then they are abandoned. The stop's
/// whole budget — this grace, twice [`ABANDON_WAIT`] (the run records itself; the core records an
/// abandoned run) and the runtime's wait for blocking store work (`daemon::RUNTIME_SHUTDOWN`) —
/// stays within the contract's 10 s even when the store is locked by another writer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// After abandoning, how long the run gets to record itself (and, after that, how long recording
/// an abandoned run may take) before the core stops waiting.
pub const ABANDON_WAIT: Duration = Duration::from_secs(1);
/// First wait before retrying a request that could not start (run lock held); doubles up to
/// [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a request that could not start.
pub const RETRY_MAX: Duration = Duration::from_secs(15);

/// Something the core must react to.
#[derive(Debug)]
pub enum DaemonEvent {
    /// Run now (SIGUSR1, or the control API).
    SyncNow {
        /// Who asked.
        trigger: Trigger,
        /// Only this connector.
        connector: Option<ConnectorId>,
        /// Told how the run that serves this request ended (the CLI waits on it).
        done: Option<oneshot::Sender<RunEnd>>,
    },
    /// Re-read the configuration (SIGHUP).
    Reload,
    /// Stop (SIGTERM, SIGINT).
    Shutdown,
    /// The watchdog asks whether the core is alive; the core answers at once.
    Probe(oneshot::Sender<()>),
}

/// A run that ran (whatever its outcome).
#[derive(Debug, Clone)]
pub struct RunDone {
    /// Its one-line summary.
    pub summary: String,
    /// Its full report (None from test drivers).
    pub report: Option<Arc<crate::sync::RunReport>>,
}

/// How a run ended, as far as the queue cares.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// It ran (whatever its outcome).
    Ran(RunDone),
    /// It could not start because another run holds the run lock: try again soon.
    LockHeld,
    /// It could not start for another reason (logged).
    NotStarted(NotStarted),
}

/// Why a run could not start (shared: the end reaches every waiter).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotStarted {
    /// The run failed before it began (the store, the configuration, the client).
    #[error(transparent)]
    Sync(Arc<crate::sync::SyncError>),
    /// The run's task ended abnormally.
    #[error("the run task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

/// A run in progress, as a future the core can await.
pub type RunFuture = Pin<Box<dyn Future<Output = RunEnd> + Send>>;

/// What a reload produced.
pub struct Reloaded {
    /// The new schedule.
    pub schedule: Schedule,
}

/// A reload in progress: it reads files, so it runs as its own task, never on the core's loop.
pub type ReloadFuture = Pin<Box<dyn Future<Output = Result<Reloaded, ReloadError>> + Send>>;

/// Why a reload kept the old configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file (or a file it names) is not a valid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The vendor key or the client could not be set up from it.
    #[error(transparent)]
    Context(#[from] crate::sync::SyncError),
    /// `store.path` changed: a running daemon never switches stores.
    #[error("store.path changed ({} → {}): a running daemon never switches stores; restart it to use the new one", .old.display(), .new.display())]
    StoreMoved {
        /// The store in use.
        old: std::path::PathBuf,
        /// The store the new file names.
        new: std::path::PathBuf,
    },
    /// The reload's task failed.
    #[error("the reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The core's hands: everything that touches the store, the network or the configuration.
pub trait Driver: Send + 'static {
    /// Starts one run; it must honour `control` (stop = no new request, abort = drop in-flight ones).
    fn start_run(&mut self, req: RunRequest, control: RunControl) -> RunFuture;
    /// Re-reads the configuration (off the core's loop: the future runs as a task and swaps the
    /// configuration-derived values when it succeeds); `Err` keeps the old one (the reason is
    /// logged by the caller).
    fn reload(&mut self) -> ReloadFuture;
    /// The next slot changed (for `status`); must not block.
    fn next_slot_changed(&mut self, next: Option<Millis>);
    /// The status line changed (sd_notify STATUS); must not block.
    fn status(&mut self, line: &str);
    /// Shutdown abandoned a run: record it as interrupted, without blocking for long.
    fn abandoned(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

struct Current {
    control: RunControl,
    handle: JoinHandle<RunEnd>,
    req: RunRequest,
    waiters: Vec<oneshot::Sender<RunEnd>>,
}

/// The core's state.
pub struct Core<D: Driver> {
    clock: Arc<dyn Clock>,
    driver: D,
    schedule: Schedule,
    next_slot: Option<Millis>,
    current: Option<Current>,
    pending: Option<RunRequest>,
    /// Told when the pending request's run ends.
    pending_waiters: Vec<oneshot::Sender<RunEnd>>,
    retry: Option<(tokio::time::Instant, Duration)>,
    last_summary: String,
    /// The reload in progress.
    reloading: Option<JoinHandle<Result<Reloaded, ReloadError>>>,
    /// A SIGHUP came during a reload: read the file again when it ends.
    reload_again: bool,
}

impl<D: Driver> Core<D> {
    /// A core that waits for `schedule`'s next slot after now.
    pub fn new(clock: Arc<dyn Clock>, driver: D, schedule: Schedule) -> Core<D> {
        let mut core = Core {
            clock,
            driver,
            schedule,
            next_slot: None,
            current: None,
            pending: None,
            pending_waiters: Vec::new(),
            retry: None,
            last_summary: "none yet".into(),
            reloading: None,
            reload_again: false,
        };
        core.plan_next(core.clock.now());
        core
    }

    /// The slot the core waits for.
    pub fn next_slot(&self) -> Option<Millis> {
        self.next_slot
    }

    fn status_line(&self) -> String {
        let next = self
            .next_slot
            .map(format_ms)
            .unwrap_or_else(|| "none".into());
        let running = if self.current.is_some() {
            "running; "
        } else {
            ""
        };
        format!("{running}last run: {}; next run {next}", self.last_summary)
    }

    fn publish(&mut self) {
        let line = self.status_line();
        self.driver.status(&line);
    }

    fn plan_next(&mut self, after: Millis) {
        self.next_slot = match self.schedule.next_after(after) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        };
        if let Some(n) = self.next_slot {
            tracing::info!(next_run = %format_ms(n), "next scheduled run");
        }
        self.driver.next_slot_changed(self.next_slot);
    }

    /// Queues a run: starts it now when idle, else keeps exactly one pending request.
    pub fn request(&mut self, req: RunRequest) {
        if self.current.is_some() || self.retry.is_some() {
            if self.pending.is_none() {
                tracing::info!(
                    trigger = req.trigger.as_str(),
                    "a run is in progress: one more is queued"
                );
            } else {
                tracing::info!(
                    trigger = req.trigger.as_str(),
                    "a run is in progress and one is queued already: request coalesced"
                );
            }
            self.pending = Some(merge(self.pending.take(), req));
            return;
        }
        self.start(req);
    }

    fn start(&mut self, req: RunRequest) {
        let control = RunControl::default();
        let run = self.driver.start_run(req.clone(), control.clone());
        let handle = tokio::spawn(run);
        self.current = Some(Current {
            control,
            handle,
            req,
            waiters: std::mem::take(&mut self.pending_waiters),
        });
        self.publish();
    }

    fn finished(&mut self, end: RunEnd) {
        let Some(mut done) = self.current.take() else {
            return;
        };
        if !matches!(end, RunEnd::LockHeld) {
            for w in done.waiters.drain(..) {
                let _ = w.send(end.clone());
            }
        }
        match end {
            RunEnd::Ran(ran) => {
                self.retry = None;
                self.last_summary = format!("{} at {}", ran.summary, format_ms(self.clock.now()));
            }
            RunEnd::LockHeld => {
                // Another run (a CLI `sync`) holds the lock: this request is not lost; it is
                // tried again, backing off, and runs as soon as the lock is free.
                let wait = match self.retry {
                    Some((_, w)) => (w * 2).min(RETRY_MAX),
                    None => RETRY_FIRST,
                };
                tracing::warn!(
                    trigger = done.req.trigger.as_str(),
                    retry_in_secs = wait.as_secs(),
                    "another sync holds the run lock: this run starts as soon as it is free"
                );
                let req = match self.pending.take() {
                    Some(newer) => merge(Some(done.req), newer),
                    None => done.req,
                };
                self.pending = Some(req);
                self.pending_waiters.append(&mut done.waiters);
                self.retry = Some((tokio::time::Instant::now() + wait, wait));
                self.publish();
                return;
            }
            RunEnd::NotStarted(why) => {
                self.retry = None;
                tracing::error!("the run could not start: {why}");
                self.last_summary = format!("could not start: {why}");
            }
        }
        match self.pending.take() {
            Some(next) => self.start(next),
            None => self.publish(),
        }
    }

    /// Starts a reload unless one is running (then one more follows it: the file may have changed
    /// again after the running one read it).
    fn reload(&mut self) {
        if self.reloading.is_some() {
            self.reload_again = true;
            return;
        }
        self.reloading = Some(tokio::spawn(self.driver.reload()));
    }

    fn reloaded(&mut self, result: Result<Reloaded, ReloadError>) {
        self.reloading = None;
        match result {
            Ok(r) => {
                self.schedule = r.schedule;
                // The next slot is recomputed from now; a run in flight keeps its configuration.
                self.plan_next(self.clock.now());
                tracing::info!("SIGHUP: configuration reloaded");
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: the new configuration is invalid; keeping the old one. {e}"
                );
            }
        }
        self.publish();
        if std::mem::take(&mut self.reload_again) {
            self.reload();
        }
    }

    /// Runs the loop until [`DaemonEvent::Shutdown`] (or every sender is gone), then stops.
    pub async fn run(mut self, first: Option<RunRequest>, mut events: mpsc::Receiver<DaemonEvent>) {
        self.publish();
        if let Some(req) = first {
            self.request(req);
        }
        loop {
            let slot_wait = self
                .next_slot
                .map(|at| Duration::from_millis(u64::try_from(at - self.clock.now()).unwrap_or(0)));
            tokio::select! {
                _ = sleep_opt(slot_wait) => {
                    let Some(slot) = self.next_slot else { continue };
                    if self.clock.now() < slot {
                        continue; // woke early (clock change): sleep again
                    }
                    self.plan_next(slot.max(self.clock.now()));
                    self.request(RunRequest { trigger: Trigger::Schedule, connector: None, month: None, slot_at: Some(slot) });
                }
                end = join_current(&mut self.current) => self.finished(end),
                r = join_reload(&mut self.reloading) => self.reloaded(r),
                _ = sleep_until_opt(self.retry.map(|(at, _)| at)), if self.current.is_none() => {
                    match self.pending.take() {
                        Some(req) => self.start(req),
                        None => self.retry = None,
                    }
                }
                ev = events.recv() => match ev {
                    Some(DaemonEvent::SyncNow { trigger, connector, done }) => {
                        tracing::info!(trigger = trigger.as_str(), "sync requested");
                        let req = RunRequest { trigger, connector, month: None, slot_at: None };
                        match done {
                            Some(w) if self.current.is_some() || self.retry.is_some() => {
                                // It waits for the run that will serve it: the queued one.
                                self.pending_waiters.push(w);
                                self.request(req);
                            }
                            Some(w) => {
                                self.request(req);
                                if let Some(c) = self.current.as_mut() {
                                    c.waiters.push(w);
                                }
                            }
                            None => self.request(req),
                        }
                    }
                    Some(DaemonEvent::Reload) => self.reload(),
                    Some(DaemonEvent::Probe(reply)) => { let _ = reply.send(()); }
                    Some(DaemonEvent::Shutdown) | None => break,
                },
            }
        }
        self.shutdown().await;
    }

    /// Stop taking work; let the run in flight finish its requests for up to [`SHUTDOWN_GRACE`],
    /// then abandon them; the run is recorded as interrupted.
    async fn shutdown(&mut self) {
        self.pending = None;
        let Some(mut current) = self.current.take() else {
            tracing::info!("stopped");
            return;
        };
        tracing::warn!(
            "stopping: the run in flight gets {} s to finish its requests",
            SHUTDOWN_GRACE.as_secs()
        );
        current.control.stop.cancel();
        let finished = match tokio::time::timeout(SHUTDOWN_GRACE, &mut current.handle).await {
            Ok(r) => Some(r),
            Err(_) => {
                current.control.abort.cancel();
                tokio::time::timeout(ABANDON_WAIT, &mut current.handle)
                    .await
                    .ok()
            }
        };
        match finished {
            Some(Ok(RunEnd::Ran(ran))) => tracing::info!("stopped; {}", ran.summary),
            _ => {
                current.handle.abort();
                let _ = tokio::time::timeout(ABANDON_WAIT, self.driver.abandoned()).await;
                tracing::warn!(
                    "stopped; the run in flight was abandoned and recorded as interrupted"
                );
            }
        }
    }
}

/// Merges two queued requests into one that serves both (pure): one that carries a slot wins
/// its trigger, slot and month (a scheduled report must never be lost to a manual request), else
/// the newer one; the scope is the union — the same connector stays one connector, anything else
/// becomes a run of every connector, so no requested connector is ever dropped.
fn merge(old: Option<RunRequest>, new: RunRequest) -> RunRequest {
    let Some(old) = old else { return new };
    let connector = match (&old.connector, &new.connector) {
        (Some(a), Some(b)) if a == b => Some(a.clone()),
        _ => None,
    };
    let mut kept = if old.slot_at.is_some() && new.slot_at.is_none() {
        old
    } else {
        new
    };
    kept.connector = connector;
    kept
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn join_reload(
    reloading: &mut Option<JoinHandle<Result<Reloaded, ReloadError>>>,
) -> Result<Reloaded, ReloadError> {
    match reloading {
        Some(h) => h.await.unwrap_or_else(|e| Err(ReloadError::Task(e))),
        None => std::future::pending().await,
    }
}

async fn join_current(current: &mut Option<Current>) -> RunEnd {
    match current {
        Some(c) => match (&mut c.handle).await {
            Ok(end) => end,
            Err(e) => RunEnd::NotStarted(NotStarted::Task(Arc::new(e))),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
