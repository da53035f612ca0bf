//! The daemon: logging set-up, signals, systemd notification, the schedule timer, the run queue and
//! shutdown.
//!
//! One loop owns everything: it sleeps until the next slot, a signal, the end of the current run or
//! the watchdog tick — there is no polling. Schedule, SIGUSR1 and catch-up all go through one queue:
//! at most one run at a time, and a request while a run is active queues exactly one more.
//! Slots are computed with croner (tokio-cron-scheduler's engine, same parser settings); the
//! scheduler's own job runner is not used because it wakes every 500 ms and, after a DST change,
//! fires at the wrong hour (upstream issues #87, #107). The last slot started is persisted, so a
//! slot never runs twice and a slot missed while down is caught up once at start.

use tracing_subscriber::EnvFilter;

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use crate::cli::Exit;
use crate::config::{Config, LogConfig, LogFormat};
use crate::domain::{RunOutcome, Trigger};
use crate::schedule::Schedule;
use crate::store::StoreError;
use crate::sync::{RunControl, RunReport, RunRequest, SyncContext, SyncError};
use crate::time::{format_ms, now_ms, Millis};

/// Sets up tracing to stderr: level from `RUST_LOG` when set, else from `[log] level`; text lines
/// without timestamps under journald (`JOURNAL_STREAM` set), or JSON. Safe to call more than once.
pub fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colours only on a terminal: journald and log files get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
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

/// How long in-flight requests may finish after a stop signal; then they are abandoned, so that the
/// whole stop stays within the contract's 10 s.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(7);

/// `daemon_state` key: the last scheduled slot a run was started for (milliseconds).
const LAST_SLOT: &str = "last_slot";
/// `daemon_state` key: the next slot the daemon is waiting for (for `status`).
const NEXT_SLOT: &str = "next_slot";

/// Sends a notification to systemd when `NOTIFY_SOCKET` is set (a no-op otherwise).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The daemon's live state.
struct Daemon {
    ctx: SyncContext,
    schedule: Schedule,
    next_slot: Option<Millis>,
    pending: Option<RunRequest>,
    current: Option<CurrentRun>,
    last_summary: String,
}

struct CurrentRun {
    control: RunControl,
    handle: JoinHandle<Result<RunReport, SyncError>>,
}

impl Daemon {
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

    fn publish_status(&self) {
        notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
    }

    /// Queues a run: starts it now when idle, else keeps exactly one pending request.
    fn request(&mut self, req: RunRequest) {
        if self.current.is_some() {
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
            // A scheduled or catch-up request carries a slot: keep the one with a slot.
            match (&self.pending, req.slot_at) {
                (Some(p), None) if p.slot_at.is_some() => {}
                _ => self.pending = Some(req),
            }
            return;
        }
        self.start(req);
    }

    fn start(&mut self, req: RunRequest) {
        let control = RunControl::default();
        let ctx = self.ctx.clone();
        let c = control.clone();
        let handle = tokio::spawn(async move { crate::sync::run(&ctx, req, &c).await });
        self.current = Some(CurrentRun { control, handle });
        self.publish_status();
    }

    fn finished(&mut self, result: Result<Result<RunReport, SyncError>, tokio::task::JoinError>) {
        self.current = None;
        self.last_summary = match result {
            Ok(Ok(report)) => format!(
                "#{} {} ({}) at {}",
                report.run_id,
                report.outcome.as_str(),
                report.tally,
                format_ms(now_ms())
            ),
            Ok(Err(e)) => {
                tracing::error!("the run could not start: {e}");
                format!("could not start: {e}")
            }
            Err(e) => {
                tracing::error!("the run task failed: {e}");
                "run task failed".into()
            }
        };
        if let Some(next) = self.pending.take() {
            self.start(next);
        } else {
            self.publish_status();
        }
    }

    /// Persists `slot` as started (so it never runs twice) and computes the next slot after it.
    async fn take_slot(&mut self, slot: Millis) {
        let v = slot.to_string();
        if let Err(e) = self
            .ctx
            .store
            .with(move |s| s.state_set(LAST_SLOT, &v))
            .await
        {
            tracing::error!(error = %e, "could not persist the schedule slot");
        }
        self.plan_next(slot.max(now_ms())).await;
    }

    async fn plan_next(&mut self, after: Millis) {
        self.next_slot = match self.schedule.next_after(after) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        };
        if let Some(n) = self.next_slot {
            let v = n.to_string();
            let _ = self
                .ctx
                .store
                .with(move |s| s.state_set(NEXT_SLOT, &v))
                .await;
            tracing::info!(next_run = %format_ms(n), "next scheduled run");
        }
    }
}

/// Decides the catch-up request at start: the latest slot missed while down, or the slot of a run
/// that was interrupted. Records the slot as taken. Returns None when nothing is owed.
async fn catch_up(d: &mut Daemon) -> Result<Option<RunRequest>, StoreError> {
    let now = now_ms();
    let (last_slot, last_run) = d
        .ctx
        .store
        .with(|s| {
            let slot = s
                .state_get(LAST_SLOT)?
                .and_then(|v| v.parse::<Millis>().ok());
            Ok((slot, s.last_run()?))
        })
        .await?;
    if last_slot.is_none() {
        // A fresh store: nothing was missed; remember where the schedule stands.
        if let Some(latest) = d.schedule.latest_at_or_before(now) {
            let v = latest.to_string();
            d.ctx
                .store
                .with(move |s| s.state_set(LAST_SLOT, &v))
                .await?;
        }
    }
    let missed = d.schedule.missed_slot(last_slot, now);
    let interrupted = last_run
        .as_ref()
        .filter(|r| r.outcome.is_none() || r.outcome == Some(RunOutcome::Interrupted));
    if !d.ctx.config.schedule.catch_up {
        if let Some(m) = missed {
            tracing::warn!(slot = %format_ms(m), "a scheduled run was missed while down; catch_up = false, so it is skipped");
            d.take_slot(m).await;
        }
        return Ok(None);
    }
    let slot = match (missed, interrupted) {
        (Some(m), _) => {
            tracing::warn!(slot = %format_ms(m), "a scheduled run was missed while down: running it now");
            Some(Some(m))
        }
        (None, Some(r)) => {
            tracing::warn!(
                run_id = r.id,
                "the last run did not finish: running again now"
            );
            Some(r.slot_at)
        }
        (None, None) => {
            tracing::info!("catch-up: nothing missed, nothing interrupted");
            None
        }
    };
    let Some(slot_at) = slot else {
        return Ok(None);
    };
    if let Some(m) = missed {
        d.take_slot(m).await;
    }
    Ok(Some(RunRequest {
        trigger: Trigger::CatchUp,
        connector: None,
        month: None,
        slot_at,
    }))
}

fn schedule_of(cfg: &Config) -> Result<Schedule, crate::schedule::ScheduleError> {
    Schedule::new(&cfg.schedule.cron, cfg.schedule.timezone)
}

/// Sleeps until `slot` (wall clock), or forever when there is none.
async fn until(slot: Option<Millis>) {
    match slot {
        Some(at) => {
            let wait = (at - now_ms()).max(0) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn watchdog_tick(interval: Option<std::time::Duration>) {
    match interval {
        Some(i) => tokio::time::sleep(i).await,
        None => std::future::pending::<()>().await,
    }
}

async fn run_done(
    current: &mut Option<CurrentRun>,
) -> Result<Result<RunReport, SyncError>, tokio::task::JoinError> {
    match current {
        Some(c) => (&mut c.handle).await,
        None => std::future::pending().await,
    }
}

/// `gradient-connector run`: the daemon, in the foreground.
pub async fn run(cfg: Arc<Config>) -> Exit {
    // Signals first: registering replaces the default action (terminate) before READY=1.
    let mut signals = match Signals::register() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot register signal handlers: {e}");
            return Exit::Failed;
        }
    };
    let ctx = match SyncContext::new(cfg.clone()) {
        Ok(c) => c,
        Err(SyncError::Config(e)) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failed;
        }
    };
    // The store must open (and migrate) before we say we are ready.
    if let Err(e) = ctx.store.with(|_| Ok(())).await {
        eprintln!("error: {e}");
        return Exit::Failed;
    }
    let schedule = match schedule_of(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let mut d = Daemon {
        ctx,
        schedule,
        next_slot: None,
        pending: None,
        current: None,
        last_summary: "none yet".into(),
    };
    let first = match catch_up(&mut d).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failed;
        }
    };
    if d.next_slot.is_none() {
        d.plan_next(now_ms()).await;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|i| i / 2);
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        config = %cfg.source.display(),
        store = %cfg.store.path.display(),
        schedule = %format!("{} \"{}\" {}", cfg.schedule.cadence.as_str(), cfg.schedule.cron, cfg.schedule.timezone),
        "gradient-connector daemon ready"
    );
    d.publish_status();
    if let Some(req) = first {
        d.request(req);
    }

    loop {
        tokio::select! {
            _ = until(d.next_slot) => {
                let Some(slot) = d.next_slot else { continue };
                if now_ms() < slot {
                    continue; // woke early (clock change): sleep again
                }
                d.take_slot(slot).await;
                d.request(RunRequest { trigger: Trigger::Schedule, connector: None, month: None, slot_at: Some(slot) });
            }
            result = run_done(&mut d.current) => d.finished(result),
            _ = signals.usr1.recv() => {
                tracing::info!("SIGUSR1: sync requested");
                d.request(RunRequest { trigger: Trigger::Signal, connector: None, month: None, slot_at: None });
            }
            _ = signals.hup.recv() => reload(&mut d).await,
            _ = watchdog_tick(watchdog) => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
        }
    }
    shutdown(&mut d).await;
    Exit::Ok
}

struct Signals {
    usr1: Signal,
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// SIGHUP: re-read and validate the configuration; keep the old one when the new one is bad.
async fn reload(d: &mut Daemon) {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(usec) => notify(&[sd_notify::NotifyState::Reloading, usec]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
    let path = d.ctx.config.source.clone();
    let loaded = Config::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            let schedule = schedule_of(&cfg).map_err(|e| e.to_string())?;
            let ctx = SyncContext::new(Arc::new(cfg)).map_err(|e| e.to_string())?;
            Ok((ctx, schedule))
        });
    match loaded {
        Ok((ctx, schedule)) => {
            for w in &ctx.config.warnings {
                tracing::warn!("{w}");
            }
            d.ctx = ctx;
            d.schedule = schedule;
            // The next slot is recomputed from now; a run in flight keeps its own configuration.
            d.plan_next(now_ms()).await;
            tracing::info!(config = %path.display(), services = d.ctx.config.services.len(), "SIGHUP: configuration reloaded");
        }
        Err(e) => {
            tracing::error!("SIGHUP: the new configuration is invalid; keeping the old one. {e}");
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
    d.publish_status();
}

/// Stop taking work; let the run in flight finish its requests for up to [`SHUTDOWN_GRACE`], then
/// abandon them; the run is recorded as interrupted.
async fn shutdown(d: &mut Daemon) {
    notify(&[sd_notify::NotifyState::Stopping]);
    d.pending = None;
    let Some(mut current) = d.current.take() else {
        tracing::info!("stopped");
        return;
    };
    tracing::warn!(
        "stopping: the run in flight gets {} s to finish its requests",
        SHUTDOWN_GRACE.as_secs()
    );
    current.control.stop.cancel();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, &mut current.handle).await;
    let finished = match finished {
        Ok(r) => Some(r),
        Err(_) => {
            current.control.abort.cancel();
            tokio::time::timeout(std::time::Duration::from_secs(2), &mut current.handle)
                .await
                .ok()
        }
    };
    match finished {
        Some(Ok(Ok(report))) => tracing::info!("stopped; {}", report.summary()),
        _ => {
            current.handle.abort();
            let now = now_ms();
            let marked = d
                .ctx
                .store
                .with(move |s| s.mark_unfinished_interrupted(now))
                .await;
            tracing::warn!(
                ?marked,
                "stopped; the run in flight was abandoned and recorded as interrupted"
            );
        }
    }
}
