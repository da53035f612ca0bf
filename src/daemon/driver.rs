//! The core's hands in production ([`RealDriver`]): runs go to [`crate::sync::run`], a reload's
//! file work to a blocking thread, store work to the store's writer; and the webhook delivery task a
//! reload restarts ([`Delivery`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::core::{Driver, ReloadError, ReloadFuture, Reloaded, RunDone, RunEnd, RunFuture};
use super::notify;
use crate::api::SharedContext;
use crate::config::Config;
use crate::store::StoreError;
use crate::sync::{RunControl, RunRequest, SyncContext, SyncError};
use crate::time::{now_ms, Millis};

/// A reload's file work: the configuration, the vendor key and the webhooks' secrets, checked
/// against the running daemon's (`old`). The store handle and the client's pacer carry over.
fn read_reload(
    old: &SyncContext,
) -> Result<(SyncContext, Vec<crate::events::Webhook>), ReloadError> {
    let path = old.config.source.clone();
    let cfg = Config::load(&path)?;
    if cfg.store.path != old.config.store.path {
        return Err(ReloadError::StoreMoved {
            old: old.config.store.path.clone(),
            new: cfg.store.path.clone(),
        });
    }
    // Webhooks and their secrets are read again; a bad one refuses the whole reload.
    let hooks = crate::events::webhooks(&cfg)?;
    // The last step that can fail: it puts the store key in force on the running handle.
    let ctx = old.reloaded(Arc::new(cfg))?;
    if ctx.config.api.listen != old.config.api.listen {
        tracing::warn!(old = %old.config.api.listen, new = %ctx.config.api.listen, "api.listen changed: the control API keeps its address until a restart");
    }
    for w in &ctx.config.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %path.display(), services = ctx.config.services.len(), "configuration read");
    Ok((ctx, hooks))
}

/// The core's hands in production: runs go to [`crate::sync::run`], store work to blocking threads.
pub(super) struct RealDriver {
    pub(super) ctx: SharedContext,
    /// What `STATUS=` adds to the core's line (the API's address).
    pub(super) status_suffix: String,
    /// Webhook events not delivered yet (refreshed by a task; the core never reads the store).
    pub(super) undelivered: Arc<std::sync::atomic::AtomicU64>,
    /// The webhook delivery task: a reload restarts it with the new webhooks and secrets.
    pub(super) delivery: SharedDelivery,
}

/// The webhook delivery task and what stops it.
pub(super) struct Delivery {
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The delivery task, shared by the daemon (which stops it at the end) and the driver (which
/// restarts it on a reload).
pub(super) type SharedDelivery = Arc<std::sync::Mutex<Delivery>>;

impl Delivery {
    /// Starts delivering to `hooks` (must run inside the runtime).
    pub(super) fn start(
        store: crate::store::StoreHandle,
        hooks: Vec<crate::events::Webhook>,
        pending: Arc<std::sync::atomic::AtomicU64>,
    ) -> Delivery {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = crate::events::spawn(store, hooks, stop.clone(), pending);
        Delivery {
            stop,
            task: Some(task),
        }
    }

    /// Stops the task (requests in flight are abandoned: they are due again at once, with the
    /// same `webhook-id`) and hands back its handle.
    pub(super) fn stop(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.stop.cancel();
        self.task.take()
    }
}

pub(super) fn lock_delivery(d: &SharedDelivery) -> std::sync::MutexGuard<'_, Delivery> {
    match d.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl RealDriver {
    fn ctx(&self) -> SyncContext {
        match self.ctx.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Driver for RealDriver {
    fn start_run(&mut self, req: RunRequest, control: RunControl) -> RunFuture {
        let ctx = self.ctx();
        Box::pin(async move {
            let result = crate::sync::run(&ctx, req, &control).await;
            if result.is_ok() {
                prune_after_run(&ctx).await;
            }
            match result {
                Ok(report) => RunEnd::Ran(RunDone {
                    summary: format!(
                        "#{} {} ({})",
                        report.run_id,
                        report.outcome.as_str(),
                        report.tally
                    ),
                    report: Some(Arc::new(report)),
                }),
                Err(SyncError::Store(StoreError::RunInProgress)) => RunEnd::LockHeld,
                Err(e) => RunEnd::NotStarted(super::core::NotStarted::Sync(Arc::new(e))),
            }
        })
    }

    fn reload(&mut self) -> ReloadFuture {
        let (shared, delivery, undelivered) = (
            self.ctx.clone(),
            self.delivery.clone(),
            self.undelivered.clone(),
        );
        let old = self.ctx();
        Box::pin(async move {
            match sd_notify::NotifyState::monotonic_usec_now() {
                Ok(usec) => notify(&[sd_notify::NotifyState::Reloading, usec]),
                Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
            }
            // Files are read on a blocking thread: the core answers the watchdog meanwhile.
            let read = tokio::task::spawn_blocking(move || read_reload(&old)).await;
            notify(&[sd_notify::NotifyState::Ready]);
            let (ctx, hooks) = read??;
            let schedule = ctx.config.schedule.parsed.clone();
            let store = ctx.store.clone();
            match shared.write() {
                Ok(mut c) => *c = ctx,
                Err(p) => *p.into_inner() = ctx,
            }
            let mut delivery = lock_delivery(&delivery);
            drop(delivery.stop());
            *delivery = Delivery::start(store, hooks, undelivered);
            Ok(Reloaded { schedule })
        })
    }

    fn next_slot_changed(&mut self, _next: Option<Millis>) {}

    fn status(&mut self, line: &str) {
        let pending = self.undelivered.load(std::sync::atomic::Ordering::Relaxed);
        let line = format!(
            "{line}{}; {pending} webhook events undelivered",
            self.status_suffix
        );
        notify(&[sd_notify::NotifyState::Status(&line)]);
    }

    fn abandoned(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let ctx = self.ctx();
        Box::pin(async move {
            let now = now_ms();
            let config = ctx.config.clone();
            // The abandoned run is this daemon's own: closed and told without the run lock.
            let closed = ctx
                .store
                .write(move |s| crate::sync::interrupted::close_interrupted(s, &config, now))
                .await;
            if let Err(e) = closed {
                tracing::error!(error = %e, "the abandoned run could not be recorded as interrupted; the next start does it");
            }
        })
    }
}

/// A run's housekeeping: the outbox's old events ([`crate::events::prune_events`]), and the
/// ledger's retention (`store.ledger_retention_days`, 0 = keep everything): ledger rows and
/// finished runs older than the retention are pruned (each pair's newest push and `last_known`
/// stay). A failure is logged; it never changes the run's outcome.
pub async fn prune_after_run(ctx: &SyncContext) {
    crate::events::prune_events(&ctx.store, now_ms()).await;
    let days = ctx.config.store.ledger_retention_days;
    if days == 0 {
        return;
    }
    let before = now_ms() - i64::from(days) * 86_400_000;
    match ctx.store.write(move |s| s.prune_ledger(before)).await {
        Ok(p) if p.ledger_rows > 0 || p.runs > 0 => tracing::info!(
            ledger_rows = p.ledger_rows,
            runs = p.runs,
            retention_days = days,
            "ledger retention: pruned rows older than the retention"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "ledger retention: pruning failed; the next run tries again")
        }
    }
}
