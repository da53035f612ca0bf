//! The daemon: logging set-up, the async runtime, signals, systemd notification and the watchdog,
//! wired around the event-driven [`core`] (which owns the run queue and the schedule timer).
//!
//! Signals become [`core::DaemonEvent`]s; the watchdog pings on its own timer, each ping proving
//! that the core answered a probe; the store and the network are reached only through
//! [`driver::RealDriver`], whose store work runs on blocking threads. Slots are computed with croner
//! (tokio-cron-scheduler's engine, same parser settings); the scheduler's own job runner is not
//! used because it wakes every 500 ms and, after a DST change, fires at the wrong hour (upstream
//! issues #87, #107). A slot is recorded as taken by the run that starts for it, so a slot never
//! runs twice and a slot missed while down is caught up once at start.

pub mod core;
mod driver;
mod tasks;

pub use driver::prune_after_run;
use driver::{lock_delivery, Delivery, RealDriver, SharedDelivery};
use tasks::Tasks;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing_subscriber::EnvFilter;

use crate::api::SharedContext;
use crate::config::{Config, LogConfig, LogFormat};
use crate::domain::{RunOutcome, Trigger};
use crate::schedule::Schedule;
use crate::store::ledger::RunRow;
use crate::store::StoreError;
use crate::sync::{RunControl, RunRequest, SyncContext, SyncError};
use crate::time::{format_ms, now_ms, Millis};
pub use core::SHUTDOWN_GRACE;
use core::{Core, DaemonEvent, RunEnd, SystemClock};

/// Why the daemon could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Signal handlers could not be registered.
    #[error("cannot register signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The client, the vendor key or the configuration failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The store could not be opened or read at start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The control API's address (set explicitly) cannot be served.
    #[error(transparent)]
    Api(crate::api::ApiError),
}

impl DaemonError {
    /// Whether the configuration is to blame (exit 78 at the entry point).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            DaemonError::Sync(SyncError::Config(_))
                | DaemonError::Api(crate::api::ApiError::Setup { .. })
        )
    }
}

/// The multi-threaded runtime every async command runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Sets up tracing to stderr: level from `RUST_LOG` when set, else from `[log] level`; text lines
/// without timestamps under journald (`JOURNAL_STREAM` set), or JSON. Safe to call more than once.
pub fn init_logging(log: &LogConfig) {
    init_logging_to(log, std::io::stderr);
}

/// [`init_logging`] through `writer` (the command line's writer keeps a progress line on the
/// terminal clear of log lines).
pub fn init_logging_to<W>(log: &LogConfig, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
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
        .with_writer(writer)
        .with_ansi(colour)
        .with_target(false);
    let _ = match (log.format, under_journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

/// For one-shot commands (`sync`): on SIGINT or SIGTERM stop taking work at once, abandon in-flight
/// requests after [`SHUTDOWN_GRACE`]. Returns the watcher task (abort it when the work is done).
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

/// Sends a notification to systemd when `NOTIFY_SOCKET` is set (a no-op otherwise).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The catch-up decision at start (pure): the latest slot missed while down, else the slot of a run
/// that did not finish; None when nothing is owed or `catch_up` is off.
pub fn catch_up_request(
    schedule: &Schedule,
    catch_up: bool,
    last_slot: Option<Millis>,
    last_run: Option<&RunRow>,
    now: Millis,
) -> Option<RunRequest> {
    let missed = schedule.missed_slot(last_slot, now);
    let interrupted =
        last_run.filter(|r| r.outcome.is_none() || r.outcome == Some(RunOutcome::Interrupted));
    if !catch_up {
        if let Some(m) = missed {
            tracing::warn!(slot = %format_ms(m), "a scheduled run was missed while down; catch_up = false, so it is skipped");
        }
        return None;
    }
    let slot_at = match (missed, interrupted) {
        (Some(m), _) => {
            tracing::warn!(slot = %format_ms(m), "a scheduled run was missed while down: running it now");
            Some(m)
        }
        (None, Some(r)) => {
            tracing::warn!(
                run_id = r.id,
                "the last run did not finish: running again now"
            );
            r.slot_at
        }
        (None, None) => {
            tracing::info!("catch-up: nothing missed, nothing interrupted");
            return None;
        }
    };
    Some(RunRequest {
        trigger: Trigger::CatchUp,
        connector: None,
        month: None,
        slot_at,
    })
}

/// Everything read from the store before the daemon is ready: the catch-up request.
async fn start_up(
    ctx: &SyncContext,
    schedule: &Schedule,
) -> Result<Option<RunRequest>, DaemonError> {
    let now = now_ms();
    // Runs a crash left open are closed and told to the console now, not at the next run.
    crate::sync::interrupted::close_interrupted_at_start(&ctx.store, ctx.config.clone(), now)
        .await?;
    let anchor = schedule.latest_at_or_before(now);
    let (last_slot, last_run) = ctx
        .store
        .write(move |s| {
            let slot = s.last_slot()?;
            if slot.is_none() {
                // A fresh store: nothing was missed; remember where the schedule stands.
                if let Some(a) = anchor {
                    s.anchor_schedule(a)?;
                }
            }
            Ok((slot, s.last_run()?))
        })
        .await?;
    Ok(catch_up_request(
        schedule,
        ctx.config.schedule.catch_up,
        last_slot,
        last_run.as_ref(),
        now,
    ))
}

/// Forwards signals to the core as events.
fn forward_signals(
    tasks: &mut Tasks,
    events: mpsc::Sender<DaemonEvent>,
) -> Result<(), DaemonError> {
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    tasks.spawn("signals", |stop| async move {
        loop {
            let ev = tokio::select! {
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: sync requested");
                    DaemonEvent::SyncNow { trigger: Trigger::Signal, connector: None, done: None }
                }
                _ = hup.recv() => DaemonEvent::Reload,
                _ = stop.cancelled() => return,
            };
            if events.send(ev).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Pings systemd's watchdog on its own timer, each ping after the core answered a probe.
fn watchdog(tasks: &mut Tasks, events: mpsc::Sender<DaemonEvent>) {
    let Some(interval) = sd_notify::watchdog_enabled().map(|i| i / 2) else {
        return;
    };
    tasks.spawn("watchdog", move |stop| async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (tx, rx) = oneshot::channel();
            if events.send(DaemonEvent::Probe(tx)).await.is_err() {
                return;
            }
            match tokio::time::timeout(interval, rx).await {
                Ok(Ok(())) => notify(&[sd_notify::NotifyState::Watchdog]),
                _ => tracing::error!("the daemon core did not answer the watchdog probe"),
            }
        }
    });
}

/// Starts the control API (and the metrics recorder); returns its address for `STATUS=`. The
/// default socket that cannot be served is a warning; an address set explicitly is an error.
async fn start_api(
    cfg: &Config,
    ctx: SharedContext,
    events: mpsc::Sender<DaemonEvent>,
    tasks: &mut Tasks,
) -> Result<String, DaemonError> {
    let exposition = crate::api::metrics::Exposition::install();
    crate::api::metrics::describe();
    let bound = match crate::api::serve::bind(&cfg.api).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok("off".into()),
        Err(e) if cfg.api.listen_is_default => {
            tracing::warn!("{e}; going on without the control API");
            return Ok("unavailable".into());
        }
        Err(e) => return Err(DaemonError::Api(e)),
    };
    let token = match &cfg.api.listen {
        crate::config::ApiListen::Tcp(_) => Some(Arc::new(
            crate::api::serve::load_token(&cfg.api).map_err(DaemonError::Api)?,
        )),
        _ => None,
    };
    let (asks, mut inbox) = mpsc::channel::<crate::api::SyncAsk>(64);
    tasks.spawn("api sync requests", |stop| async move {
        while let Some(ask) = tokio::select! {
            a = inbox.recv() => a,
            _ = stop.cancelled() => None,
        } {
            let (done, reply) = match ask.done {
                Some(waiter) => {
                    let (tx, rx) = oneshot::channel::<RunEnd>();
                    (Some(tx), Some((waiter, rx)))
                }
                None => (None, None),
            };
            let ev = DaemonEvent::SyncNow {
                trigger: Trigger::Api,
                connector: ask.connector,
                done,
            };
            if events.send(ev).await.is_err() {
                return;
            }
            if let Some((waiter, rx)) = reply {
                tokio::spawn(async move {
                    let report = match rx.await {
                        Ok(RunEnd::Ran(ran)) => ran.report,
                        _ => None,
                    };
                    let _ = waiter.send(report);
                });
            }
        }
    });
    let state = crate::api::ApiState {
        ctx,
        queue: asks,
        token,
        metrics: exposition,
        imports: Arc::default(),
    };
    let address = cfg.api.listen.to_string();
    tracing::info!(api = %address, "control API listening");
    let limits = crate::api::serve::limits(&cfg.api);
    tasks.spawn("control API", move |stop| {
        crate::api::serve::serve(bound, state, limits, stop)
    });
    Ok(address)
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated(term: &mut tokio::signal::unix::Signal, int: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `gradient-connector run`: the daemon, in the foreground.
pub async fn run(cfg: Arc<Config>) -> Result<(), DaemonError> {
    // Signals first: registering replaces the default action (terminate) before READY=1.
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let (events, inbox) = mpsc::channel(64);
    let mut tasks = Tasks::default();
    forward_signals(&mut tasks, events.clone())?;
    let ctx = SyncContext::new(cfg.clone())?;
    // Webhook secrets load before READY: a bad one is a configuration error at start.
    let hooks = crate::events::webhooks(&cfg).map_err(SyncError::from)?;
    // So does `[email]` (its login, templates and url): a problem is a configuration error.
    let mail = crate::events::mail::setup(&cfg).map_err(SyncError::from)?;
    let schedule = cfg.schedule.parsed.clone();
    // The store must open (and migrate) before we say we are ready; SIGTERM is honoured meanwhile.
    let first = tokio::select! {
        r = start_up(&ctx, &schedule) => r?,
        _ = terminated(&mut term, &mut int) => {
            tracing::warn!("stopped before the daemon was ready");
            return Ok(());
        }
    };
    let shared: SharedContext = Arc::new(std::sync::RwLock::new(ctx));
    let api_address = start_api(&cfg, shared.clone(), events.clone(), &mut tasks).await?;
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        config = %cfg.source.display(),
        store = %cfg.store.path.display(),
        schedule = %format!("{} \"{}\" {}", cfg.schedule.cadence.as_str(), cfg.schedule.cron, cfg.schedule.timezone),
        "gradient-connector daemon ready"
    );
    watchdog(&mut tasks, events.clone());
    let stopper = events.clone();
    tasks.spawn("stop signals", |stop| async move {
        tokio::select! {
            _ = terminated(&mut term, &mut int) => {}
            _ = stop.cancelled() => return,
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stopper.send(DaemonEvent::Shutdown).await;
    });
    drop(events);
    // Webhook events not delivered yet, for `STATUS=`: kept by the delivery task itself (nothing
    // polls the store when there is no webhook).
    let undelivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let delivery: SharedDelivery = {
        let store = match shared.read() {
            Ok(c) => c.store.clone(),
            Err(p) => p.into_inner().store.clone(),
        };
        Arc::new(std::sync::Mutex::new(Delivery::start(
            store,
            hooks,
            undelivered.clone(),
        )))
    };
    // The delivery task is restarted by reloads; this one stops whichever runs at the end.
    let current = delivery.clone();
    tasks.spawn("webhook delivery", |stop| async move {
        stop.cancelled().await;
        let last = lock_delivery(&current).stop();
        if let Some(task) = last {
            let _ = task.await;
        }
    });
    // Mail to MSP contacts: started once (a change of `[email]` needs a restart).
    if let Some(mail) = mail {
        let store = match shared.read() {
            Ok(c) => c.store.clone(),
            Err(p) => p.into_inner().store.clone(),
        };
        tasks.spawn("mail delivery", |stop| {
            crate::events::mail::deliver(store, mail, stop)
        });
    }
    let driver = RealDriver {
        ctx: shared,
        status_suffix: format!("; api {api_address}"),
        undelivered,
        delivery,
    };
    tracing::debug!(tasks = ?tasks.names(), "daemon tasks started");
    let core = Core::new(Arc::new(SystemClock), driver, schedule);
    core.run(first, inbox).await;
    // One shutdown path for every task the daemon started.
    tasks.stop(TASKS_STOP).await;
    Ok(())
}

/// How long the daemon's tasks (control API, webhook delivery, signals, watchdog) get to stop
/// after the core has ended.
pub const TASKS_STOP: Duration = Duration::from_secs(1);

/// How long the runtime waits for blocking store work after a command ends (a store call stuck in
/// SQLite's busy wait must not hold the process past the contract's 10 s).
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);
