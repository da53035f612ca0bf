//! The sync run: for every connected MSP, make Gradient show what the inventory says, and record it.
//!
//! One run: take the run lock → open a run record → count (store) → read the service catalogue once
//! and create missing services once → per connector, concurrently: verify an unverified token, create
//! missing accounts in one bulk call and rename changed ones, push every planned pair (all but the
//! rebuilding tail with `no_build=true`, [`tail`]) → ledger rows as pushes complete → close the run.
//! [`plan`] holds the pure decisions; [`push`] one connector's part; ledger rows go to the store's
//! writer thread ([`crate::store::StoreHandle`]).

mod close;
mod connectors;
mod dry;
mod fresh_inventory;
pub mod headstart;
use close::close;
pub mod interrupted;
pub mod mapping;
mod record;
mod report;
pub mod set_up;
mod stop;
pub mod tail;
use connectors::*;
pub use dry::{dry_run, DryRun, DryRunConnector};
pub use report::{synced_events, ConnectorReport, RunReport, SyncedPart};
pub use stop::{RunStop, StopKind};
pub mod plan;
pub mod push;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::FutureExt;
use futures::stream::{self, StreamExt};
use secrecy::SecretString;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::connector::{ensure_services, Lifecycle};
use crate::domain::UnitCount;
use crate::domain::{
    Cadence, ConnectorId, ConnectorState, EventKind, PairOutcome, RunOutcome, Tally, Targets,
    Trigger,
};
use crate::gradient::{
    profile_changes, ErrorKind, GradientClient, GradientError, PartnerSession, Vendor,
    VendorProfile,
};
use crate::store::counting::{Counts, ServiceUnit};
use crate::store::key::StoreKey;
use crate::store::ledger::{ConnectorRow, RunLock, WorkspaceRow};
use crate::store::run_inputs::CountQuestion;
use crate::store::{StoreError, StoreHandle};
use crate::time::{format_ms, now_ms, Millis, Month, Period};
use plan::ConnectorPlan;
pub use push::MAX_EXACT_COUNT;
use push::{Attempt, ConnectorRun, Halt, HaltFlag, Recorder, Scope, SetUpFailure};

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad configuration or vendor key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client could not be built.
    #[error("{0}")]
    Client(GradientError),
    /// `--connector` names no connector.
    #[error("there is no connector {0:?}; add it with `gradient-connector connector add {0} --token-file PATH`")]
    UnknownConnector(ConnectorId),
}

/// What a run needs: configuration, store and client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The store.
    pub store: StoreHandle,
    /// The Gradient client (one pool, one pacer per daemon).
    pub client: GradientClient,
    /// The vendor key's keyed fingerprint (recorded with rejections; never the key).
    pub vendor_key_fp: String,
}

impl SyncContext {
    /// Loads the vendor key and the store key, and builds the client.
    pub fn new(config: Arc<Config>) -> Result<SyncContext, SyncError> {
        let store_key = Arc::new(StoreKey::new(config.load_store_key()?));
        let key = config.load_vendor_key()?;
        let vendor_key_fp = crate::connector::key_fingerprint(&key);
        let client =
            GradientClient::new(config.gradient.client.clone(), key).map_err(SyncError::Client)?;
        Ok(SyncContext {
            store: store_handle(&config).with_key(store_key),
            config,
            client,
            vendor_key_fp,
        })
    }

    /// The context a reload puts in force: the new configuration, vendor key and store key,
    /// **this** store handle (its one writer) and a client sharing this one's pacer and, when it can,
    /// its connection pool. Reads the vendor key file: call it off the daemon's core loop.
    pub fn reloaded(&self, config: Arc<Config>) -> Result<SyncContext, SyncError> {
        // A rotated store key (`store rotate-key`, then the file replaced) takes effect here.
        let store_key = Arc::new(StoreKey::new(config.load_store_key()?));
        let key = config.load_vendor_key()?;
        let vendor_key_fp = crate::connector::key_fingerprint(&key);
        let client = self
            .client
            .reconfigured(config.gradient.client.clone(), key)
            .map_err(SyncError::Client)?;
        Ok(SyncContext {
            store: self.store.clone().with_key(store_key),
            config,
            client,
            vendor_key_fp,
        })
    }

    /// The connector lifecycle (paste, verify, disconnect) with this context's store and client.
    pub fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            store: &self.store,
            client: &self.client,
            services: &self.config.services,
            vendor_key_fp: &self.vendor_key_fp,
            webhooks: &self.config.webhooks,
            mail: self.config.email.is_some(),
        }
    }
}

/// The store handle of a configuration.
pub fn store_handle(config: &Config) -> StoreHandle {
    StoreHandle::new(&config.store.path, config.store.busy_timeout)
}

/// A request for one run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Who asked.
    pub trigger: Trigger,
    /// Only this connector.
    pub connector: Option<ConnectorId>,
    /// Count this month instead of the configured cadence.
    pub month: Option<Month>,
    /// The scheduled slot this run is for.
    pub slot_at: Option<Millis>,
}

/// Stop control for a run: `stop` = start no new request; `abort` = abandon requests in flight.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Stop taking work.
    pub stop: CancellationToken,
    /// Abandon in-flight requests.
    pub abort: CancellationToken,
}

/// Everything read from the store before a run talks to Gradient.
struct Setup {
    connectors: Vec<(ConnectorRow, Option<SecretString>)>,
    workspaces: Vec<WorkspaceRow>,
    by_channel: HashMap<String, Vec<WorkspaceRow>>,
    counts: Counts,
    last_known: HashMap<String, HashMap<(String, String), UnitCount>>,
    stored_service_ids: HashMap<String, String>,
    offboarding: Vec<(String, String)>,
}

fn services_of(config: &Config) -> Vec<ServiceUnit> {
    config
        .services
        .iter()
        .map(|s| ServiceUnit {
            module: s.module.clone(),
            unit: s.unit,
            monthly: s.monthly_count,
            decimals: s.decimals,
        })
        .collect()
}

/// Reads connectors, inventory, counts and last-known values: one read transaction in the store.
async fn read_setup(
    store: &StoreHandle,
    config: &Arc<Config>,
    only: Option<ConnectorId>,
    period: Period,
) -> Result<Setup, SyncError> {
    let services = services_of(config);
    let question = match period {
        Period::AsOf(at) => CountQuestion::AsOf(at),
        Period::Month(m) => {
            let (from, to) = m.bounds(config.schedule.timezone);
            CountQuestion::Month {
                from,
                to,
                how: config.schedule.monthly_count,
            }
        }
    };
    let inputs = store
        .read(move |s| s.load_run_inputs(only.as_deref(), &services, question))
        .await?;
    let mut last_known: HashMap<String, HashMap<(String, String), UnitCount>> = HashMap::new();
    for lk in inputs.last_known {
        last_known
            .entry(lk.connector_id)
            .or_default()
            .insert((lk.account, lk.service), lk.unit_count);
    }
    let mut by_channel: HashMap<String, Vec<WorkspaceRow>> = HashMap::new();
    for w in &inputs.workspaces {
        by_channel
            .entry(w.channel_id.clone())
            .or_default()
            .push(w.clone());
    }
    Ok(Setup {
        connectors: inputs.connectors,
        workspaces: inputs.workspaces,
        by_channel,
        counts: inputs.counts,
        last_known,
        stored_service_ids: inputs.service_ids,
        offboarding: inputs.offboarding,
    })
}

/// The period of a request under the configuration.
pub fn request_period(config: &Config, req: &RunRequest, now: Millis) -> Period {
    plan::period_for(
        req.month,
        config.schedule.cadence,
        config.schedule.timezone,
        req.slot_at.unwrap_or(now),
        now,
    )
}

fn cadence_label(p: &Period) -> Cadence {
    match p {
        Period::AsOf(_) => Cadence::Daily,
        Period::Month(_) => Cadence::Monthly,
    }
}

/// A connector taking part in a run.
#[derive(Clone)]
pub struct Participant {
    row: ConnectorRow,
    session: PartnerSession,
}

/// Runs one sync. Returns a report even when the run failed; errors only when it could not start.
pub async fn run(
    ctx: &SyncContext,
    req: RunRequest,
    control: &RunControl,
) -> Result<RunReport, SyncError> {
    let started = Instant::now();
    let _lock = RunLock::try_acquire(ctx.store.path())?;
    let stale = fresh_inventory::pull_and_judge(ctx).await?;
    let (setup, mut report) = open(ctx, &req).await?;
    if let Some(message) = stale {
        return fresh_inventory::refuse_stale(ctx, report, message, started).await;
    }
    let rec = Recorder::new(ctx.store.ledger()?, report.run_id);
    // Abort (the end of the shutdown grace) drops every request in flight, whatever phase the run is
    // in (catalogue, accounts, pushes): nothing of the run may outlive the contract's 10 s. So does
    // the run's deadline, after which every pair not yet recorded is recorded `failed`.
    let deadline = ctx.config.gradient.run_deadline;
    let mut deadline_passed = false;
    // A ledger row that cannot be written stops the run at once: no further push is sent, and
    // requests in flight are dropped (they are the only ones Gradient may hold beyond the ledger).
    let result = tokio::select! {
        biased;
        _ = rec.ledger.broken() => Err(ledger_broken(ctx, rec.ledger.failure())),
        _ = control.abort.cancelled() => Err(RunStop::Shutdown),
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(started) + deadline) => {
            deadline_passed = true;
            Ok(())
        }
        r = run_connectors(ctx, &setup, control, &rec, &mut report) => r,
    };
    if deadline_passed {
        let missed = record_after_deadline(&setup, &rec, &mut report, ctx.vendor_key_fp.as_str());
        report.deadline_passed = true;
        report.stopped_by = Some(StopKind::Deadline);
        report.message = Some(format!(
            "the run's deadline ([gradient] run_deadline_secs = {}) passed: requests still waiting for Gradient were abandoned and the {missed} pair(s) not pushed yet were recorded failed; they are retried at the next run",
            deadline.as_secs()
        ));
    }
    let ledger_failure = rec.ledger.failure();
    drop(rec);
    let result = match (result, ledger_failure) {
        (Ok(()), Some(e)) => Err(ledger_broken(ctx, Some(e))),
        (r, _) => r,
    };
    let aborted = tally_from_ledger(ctx, result, &mut report).await;
    let interrupted = control.stop.is_cancelled();
    report.outcome = plan::run_outcome(&report.tally, aborted, interrupted);
    if interrupted && report.message.is_none() {
        report.message = Some("stopped by shutdown before the run finished".into());
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    if let Err(e) = close(ctx, &report, interrupted).await {
        // The store refused the run's close too (a full disk): the report still says what
        // happened; the next start closes the run as interrupted.
        if !aborted {
            return Err(e);
        }
        tracing::error!(error = %e, run_id = report.run_id, "the run could not be recorded as closed");
        report.outcome = RunOutcome::Failed;
        if let Some(m) = report.message.as_mut() {
            m.push_str(&format!(
                "; the run could not be recorded as {} either ({e})",
                RunOutcome::Failed.as_str()
            ));
        }
    }
    metrics::counter!("gradient_connector_runs_total", "outcome" => report.outcome.as_str())
        .increment(1);
    if report.outcome == RunOutcome::Ok {
        tracing::info!("{}", report.summary());
    } else {
        tracing::warn!("{}", report.summary());
    }
    Ok(report)
}

/// Reads the run's inputs and opens its `runs` row (which also takes a scheduled slot).
async fn open(ctx: &SyncContext, req: &RunRequest) -> Result<(Setup, RunReport), SyncError> {
    let now = now_ms();
    let config = ctx.config.clone();
    let period = request_period(&config, req, now);
    let cadence = cadence_label(&period);
    let label = period.label(config.schedule.timezone);
    let setup = read_setup(&ctx.store, &config, req.connector.clone(), period).await?;
    if let Some(only) = &req.connector {
        if setup.connectors.is_empty() {
            return Err(SyncError::UnknownConnector(only.clone()));
        }
    }
    let (trigger, slot, lbl) = (req.trigger, req.slot_at, label.clone());
    let run_id = ctx
        .store
        .write(move |s| {
            // Runs a crash left open are closed, and told, before this one opens.
            interrupted::close_interrupted(s, &config, now)?;
            Ok(s.open_run(trigger, cadence, &lbl, slot, now)?.0)
        })
        .await?;
    tracing::info!(run_id, trigger = trigger.as_str(), cadence = cadence.as_str(), period = %label, "sync run started");
    let report = RunReport {
        run_id,
        trigger,
        cadence,
        period: label,
        outcome: RunOutcome::Ok,
        tally: Tally::default(),
        message: None,
        duration_ms: 0,
        connectors: Vec::new(),
        deadline_passed: false,
        stopped_by: None,
    };
    Ok((setup, report))
}

/// After the run's deadline: every planned pair of every connector taking part that has no row in
/// this run yet is recorded `failed` (a disabled pair `skipped_disabled`), and connectors whose
/// part was cut short get a report. Returns how many pairs were recorded failed here.
fn record_after_deadline(
    setup: &Setup,
    rec: &Recorder,
    report: &mut RunReport,
    vendor_key_fp: &str,
) -> usize {
    let now = now_ms();
    let taking_part: Vec<&ConnectorRow> = setup
        .connectors
        .iter()
        .filter(|(row, token)| row.state != ConnectorState::Disconnected && token.is_some())
        .map(|(row, _)| row)
        .collect();
    let ids: Vec<&str> = taking_part.iter().map(|r| r.id.as_str()).collect();
    let mut plans = plans_for(setup, &ids, &setup.stored_service_ids);
    let failed = Attempt {
        outcome: PairOutcome::Failed,
        status: None,
        attempts: 0,
        reason: Some("not pushed: the run's deadline ([gradient] run_deadline_secs) passed before Gradient answered".into()),
    };
    let mut missed = 0;
    for row in taking_part {
        let mut plan = plans.remove(&row.id).unwrap_or_default();
        plan.pushes
            .retain(|p| !rec.recorded(&row.id, &p.account_id, &p.module));
        plan.disabled
            .retain(|d| !rec.recorded(&row.id, &d.account_id, &d.module));
        if let Some(cr) = report.connectors.iter_mut().find(|c| c.id == row.id) {
            missed += plan.pushes.len();
            rec.all(cr, &plan, &failed, now);
            rec.disabled(cr, &plan, now);
            continue;
        }
        let mut cr = ConnectorReport {
            id: row.id.clone(),
            state: Some(row.state),
            note: Some("cut short by the run's deadline".into()),
            ..ConnectorReport::default()
        };
        if row.state == ConnectorState::TokenRejected
            && row.rejected_key_fp.as_deref() == Some(vendor_key_fp)
        {
            let a = Attempt {
                outcome: PairOutcome::Rejected,
                reason: Some("not sent: Gradient rejected this connector's token (401)".into()),
                ..failed.clone()
            };
            rec.all(&mut cr, &plan, &a, now);
        } else {
            missed += plan.pushes.len();
            rec.all(&mut cr, &plan, &failed, now);
        }
        rec.disabled(&mut cr, &plan, now);
        report.connectors.push(cr);
    }
    report.connectors.sort_by(|a, b| a.id.cmp(&b.id));
    missed
}

/// Why a run stopped when its ledger could not be written, naming the store.
fn ledger_broken(ctx: &SyncContext, failure: Option<String>) -> RunStop {
    RunStop::LedgerUnwritable {
        store: ctx.store.path().to_path_buf(),
        cause: failure.unwrap_or_else(|| "the store's writer stopped".into()),
    }
}

/// Sets every connector's tally (and the run's) from what the ledger holds — not from what the
/// tasks counted: this write job runs on the store's writer thread after every row the run sent.
/// Returns whether the run was aborted (its reason becomes the message).
async fn tally_from_ledger(
    ctx: &SyncContext,
    result: Result<(), RunStop>,
    report: &mut RunReport,
) -> bool {
    let run_id = report.run_id;
    let held = ctx
        .store
        .write(move |s| s.run_tally_by_connector(run_id))
        .await;
    let aborted = match result {
        Err(stop) => {
            report.message = Some(stop.to_string());
            report.stopped_by = Some(stop.kind());
            true
        }
        Ok(()) => false,
    };
    match held {
        Ok(by_connector) => {
            for c in &mut report.connectors {
                c.tally = by_connector.get(c.id.as_str()).copied().unwrap_or_default();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the run's ledger back; its counts are the tasks' own")
        }
    }
    for c in &report.connectors {
        report.tally.merge(&c.tally);
    }
    aborted
}

fn plans_for(
    setup: &Setup,
    connector_ids: &[&str],
    service_ids: &HashMap<String, String>,
) -> HashMap<String, ConnectorPlan> {
    let mut plans = plan::plan_connectors(
        connector_ids,
        &setup.workspaces,
        &setup.counts,
        service_ids,
        &setup.last_known,
    );
    plan::add_final_zeros(
        &mut plans,
        &setup.offboarding,
        service_ids,
        &setup.last_known,
    );
    plans
}

/// A human timestamp for reports.
pub fn when(ms: Option<Millis>) -> String {
    ms.map(format_ms).unwrap_or_else(|| "-".into())
}
