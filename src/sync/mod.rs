//! The sync run: for every connected MSP, make Gradient show what the inventory says, and record it.
//!
//! One run: take the run lock → open a run record → count (store) → read the service catalogue once
//! and create missing services once → per connector, concurrently: verify an unverified token, create
//! missing accounts in one bulk call and rename changed ones, push every planned pair (all but the last
//! with `no_build=true`, then the last one rebuilding) → ledger rows as pushes complete → close the run.
//! [`plan`] holds the pure decisions; [`writer`] the ledger thread.

pub mod plan;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use secrecy::SecretString;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::connector::{ensure_accounts, verify};
use crate::domain::{
    Cadence, ConnectorId, ConnectorState, PairOutcome, RunOutcome, Tally, Trigger,
};
use crate::gradient::{ErrorKind, GradientClient, GradientError, NewService, PartnerSession};
use crate::store::counting::{count_as_of, count_month, Counts, ServiceUnit};
use crate::store::ledger::{ConnectorRow, LedgerEntry, RunLock, WorkspaceRow};
use crate::store::{StoreError, StoreLocation};
use crate::time::{format_ms, now_ms, Millis, Month, Period};
use plan::{ConnectorPlan, PlannedPush};
use writer::LedgerWriter;

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
    pub store: StoreLocation,
    /// The Gradient client (one pool, one pacer per daemon).
    pub client: GradientClient,
}

impl SyncContext {
    /// Loads the vendor key and builds the client.
    pub fn new(config: Arc<Config>) -> Result<SyncContext, SyncError> {
        let key = config.load_vendor_key()?;
        let client =
            GradientClient::new(config.gradient.client.clone(), key).map_err(SyncError::Client)?;
        Ok(SyncContext {
            store: store_location(&config),
            config,
            client,
        })
    }
}

/// The store location of a configuration.
pub fn store_location(config: &Config) -> StoreLocation {
    StoreLocation {
        path: config.store.path.clone(),
        busy_timeout: config.store.busy_timeout,
    }
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

/// One connector's part of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectorReport {
    /// Connector id.
    pub id: String,
    /// State after the run.
    pub state: Option<ConnectorState>,
    /// Per-outcome counts.
    pub tally: Tally,
    /// Accounts created in Gradient.
    pub accounts_created: usize,
    /// Accounts renamed in Gradient.
    pub accounts_renamed: usize,
    /// Unmapped pairs: (account, module).
    pub unmapped: Vec<(String, String)>,
    /// Failed pairs: (account, module, reason).
    pub failed: Vec<(String, String, String)>,
    /// Disabled pairs: (account, module, last known count).
    pub disabled: Vec<(String, String, Option<u64>)>,
    /// Anything the operator should know.
    pub note: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in the store.
    pub run_id: i64,
    /// Who asked.
    pub trigger: Trigger,
    /// `daily` or `monthly`.
    pub cadence: Cadence,
    /// Period label.
    pub period: String,
    /// Outcome.
    pub outcome: RunOutcome,
    /// Per-outcome counts.
    pub tally: Tally,
    /// Why it failed, or a summary.
    pub message: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Per connector.
    pub connectors: Vec<ConnectorReport>,
}

impl RunReport {
    /// Whether the run's failures are worth retrying at the next run (failed or rejected pairs)
    /// rather than a reason the message explains (the catalogue could not be read, 403, ...).
    pub fn is_transient(&self) -> bool {
        match self.outcome {
            RunOutcome::Ok => false,
            RunOutcome::Interrupted | RunOutcome::Partial => true,
            RunOutcome::Failed => {
                self.tally.failed + self.tally.rejected > 0 && self.message.is_none()
            }
        }
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        format!(
            "run {} ({}, {} {}) {}: {} in {} ms{}",
            self.run_id,
            self.trigger.as_str(),
            self.cadence,
            self.period,
            self.outcome.as_str(),
            self.tally,
            self.duration_ms,
            self.message
                .as_ref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default()
        )
    }
}

/// Everything read from the store before a run talks to Gradient.
struct Setup {
    connectors: Vec<(ConnectorRow, Option<SecretString>)>,
    workspaces: Vec<WorkspaceRow>,
    by_channel: HashMap<String, Vec<WorkspaceRow>>,
    counts: Counts,
    last_known: HashMap<String, HashMap<(String, String), u64>>,
    stored_service_ids: HashMap<String, String>,
}

fn services_of(config: &Config) -> Vec<ServiceUnit> {
    config
        .services
        .iter()
        .map(|s| ServiceUnit {
            module: s.module.clone(),
            unit: s.unit,
        })
        .collect()
}

/// Reads connectors, inventory, counts and last-known values.
async fn read_setup(
    store: &StoreLocation,
    config: &Arc<Config>,
    only: Option<ConnectorId>,
    period: Period,
) -> Result<Setup, SyncError> {
    let config = config.clone();
    let setup = store
        .with(move |s| {
            let mut connectors = Vec::new();
            for c in s.connectors()? {
                if only.as_ref().is_some_and(|o| o != &c.id) {
                    continue;
                }
                let token = s.token(&c.id)?;
                connectors.push((c, token));
            }
            let services = services_of(&config);
            let counts = match period {
                Period::AsOf(at) => count_as_of(s.conn(), &services, at)?,
                Period::Month(m) => {
                    let (a, b) = m.bounds(config.schedule.timezone);
                    count_month(s.conn(), &services, a, b, config.schedule.monthly_count)?
                }
            };
            let mut last_known: HashMap<String, HashMap<(String, String), u64>> = HashMap::new();
            for lk in s.last_known(only.as_deref())? {
                last_known
                    .entry(lk.connector_id)
                    .or_default()
                    .insert((lk.account, lk.service), lk.unit_count);
            }
            let stored_service_ids = s
                .service_ids()?
                .into_iter()
                .map(|(m, (_, id))| (m, id))
                .collect();
            let workspaces = s.workspaces()?;
            let mut by_channel: HashMap<String, Vec<WorkspaceRow>> = HashMap::new();
            for w in &workspaces {
                by_channel
                    .entry(w.channel_id.clone())
                    .or_default()
                    .push(w.clone());
            }
            Ok(Setup {
                connectors,
                workspaces,
                by_channel,
                counts,
                last_known,
                stored_service_ids,
            })
        })
        .await?;
    Ok(setup)
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
struct Participant {
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
    let now = now_ms();
    let config = ctx.config.clone();
    let _lock = RunLock::try_acquire(&ctx.store.path)?;
    let period = request_period(&config, &req, now);
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
        .with(move |s| {
            let (id, n) = s.open_run(trigger, cadence, &lbl, slot, now)?;
            if n > 0 {
                tracing::warn!("{n} earlier run(s) stopped before finishing (crash or kill); recorded as interrupted");
            }
            Ok(id)
        })
        .await?;
    tracing::info!(run_id, trigger = trigger.as_str(), cadence = cadence.as_str(), period = %label, "sync run started");

    let mut report = RunReport {
        run_id,
        trigger,
        cadence,
        period: label,
        outcome: RunOutcome::Ok,
        tally: Tally::default(),
        message: None,
        duration_ms: 0,
        connectors: Vec::new(),
    };

    let writer = LedgerWriter::start(&ctx.store)?;
    let result = run_connectors(ctx, &setup, run_id, control, &writer.sender(), &mut report).await;
    let written = writer.finish().await;
    let aborted = match (result, written) {
        (Err(msg), _) => {
            report.message = Some(msg);
            true
        }
        (Ok(()), Err(e)) => {
            report.message = Some(format!("the ledger could not be written: {e}"));
            true
        }
        (Ok(()), Ok(_)) => false,
    };
    // The run's tally is what the ledger holds, not what the tasks counted.
    let held = ctx
        .store
        .with(move |s| s.run_tally_by_connector(run_id))
        .await;
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
    let interrupted = control.stop.is_cancelled();
    report.outcome = plan::run_outcome(&report.tally, aborted, interrupted);
    if interrupted && report.message.is_none() {
        report.message = Some("stopped by shutdown before the run finished".into());
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, tally, message) = (report.outcome, report.tally, report.message.clone());
    let finished = now_ms();
    ctx.store
        .with(move |s| s.finish_run(run_id, outcome, &tally, message.as_deref(), finished))
        .await?;
    if report.outcome == RunOutcome::Ok {
        tracing::info!("{}", report.summary());
    } else {
        tracing::warn!("{}", report.summary());
    }
    Ok(report)
}

/// Catalogue, then every connector. `Err` carries the reason the run was aborted.
async fn run_connectors(
    ctx: &SyncContext,
    setup: &Setup,
    run_id: i64,
    control: &RunControl,
    ledger: &Sender<LedgerEntry>,
    report: &mut RunReport,
) -> Result<(), String> {
    let now = now_ms();
    let mut participants = Vec::new();
    let rejected_before: Vec<&str> = setup
        .connectors
        .iter()
        .filter(|(row, token)| row.state == ConnectorState::TokenRejected && token.is_some())
        .map(|(row, _)| row.id.as_str())
        .collect();
    let mut stale_plans = plans_for(setup, &rejected_before, &setup.stored_service_ids);
    for (row, token) in &setup.connectors {
        match (row.state, token) {
            (ConnectorState::Disconnected, _) | (_, None) => continue,
            (ConnectorState::TokenRejected, Some(_)) => {
                // Never send with a rejected token; its pairs are recorded as rejected.
                let plan = stale_plans.remove(&row.id).unwrap_or_default();
                let mut cr = ConnectorReport {
                    id: row.id.clone(),
                    state: Some(ConnectorState::TokenRejected),
                    note: Some(format!(
                        "token rejected by Gradient: paste the MSP's new token with `gradient-connector connector add {} --token-file PATH`",
                        row.id
                    )),
                    ..ConnectorReport::default()
                };
                record_rejected(ledger, &mut cr, run_id, &plan, now);
                record_disabled(ledger, &mut cr, run_id, &plan, now);
                report.connectors.push(cr);
            }
            (_, Some(token)) => participants.push(Participant {
                row: row.clone(),
                session: ctx.client.partner(token),
            }),
        }
    }
    if participants.is_empty() {
        if report.connectors.is_empty() {
            report.message = Some("no connected connector: add one with `gradient-connector connector add ID --token-file PATH`".into());
        }
        return Ok(());
    }

    // The catalogue, read once with the first token Gradient accepts.
    let (service_ids, rejected_here) = resolve_catalogue(ctx, &participants, control).await?;
    let ids: Vec<&str> = participants.iter().map(|p| p.row.id.as_str()).collect();
    let mut plans = plans_for(setup, &ids, &service_ids);
    let mut active = Vec::new();
    for p in participants {
        if let Some(err) = rejected_here.get(&p.row.id) {
            let mut cr = reject_connector(ctx, &p.row, err).await;
            let plan = plans.remove(&p.row.id).unwrap_or_default();
            record_rejected(ledger, &mut cr, run_id, &plan, now);
            record_disabled(ledger, &mut cr, run_id, &plan, now);
            report.connectors.push(cr);
        } else {
            active.push(p);
        }
    }

    let forbidden = Arc::new(AtomicBool::new(false));
    let parallel = ctx.config.gradient.client.max_in_flight.max(1);
    let work: Vec<(Participant, ConnectorPlan)> = active
        .into_iter()
        .map(|p| {
            let plan = plans.remove(&p.row.id).unwrap_or_default();
            (p, plan)
        })
        .collect();
    let results: Vec<ConnectorReport> = stream::iter(work)
        .map(|(p, plan)| {
            let workspaces = setup.by_channel.get(&p.row.id).cloned().unwrap_or_default();
            let forbidden = forbidden.clone();
            async move {
                sync_connector(
                    ctx,
                    p,
                    plan,
                    workspaces,
                    run_id,
                    control,
                    ledger.clone(),
                    forbidden,
                )
                .await
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    report.connectors.extend(results);
    report.connectors.sort_by(|a, b| a.id.cmp(&b.id));
    if forbidden.load(Ordering::Relaxed) {
        return Err("Gradient answered 403 (it detected an anomaly in our usage): the run stopped sending; contact Gradient support before the next run".into());
    }
    Ok(())
}

fn plans_for(
    setup: &Setup,
    connector_ids: &[&str],
    service_ids: &HashMap<String, String>,
) -> HashMap<String, ConnectorPlan> {
    plan::plan_connectors(
        connector_ids,
        &setup.workspaces,
        &setup.counts,
        service_ids,
        &setup.last_known,
    )
}

/// Reads the catalogue with the first accepted token and creates missing services once.
/// Returns module → service id, and the connectors whose token was rejected on the way.
async fn resolve_catalogue(
    ctx: &SyncContext,
    participants: &[Participant],
    control: &RunControl,
) -> Result<(HashMap<String, String>, HashMap<String, GradientError>), String> {
    let mut rejected = HashMap::new();
    let mut reader = None;
    let mut vendor = None;
    for p in participants {
        if control.stop.is_cancelled() {
            return Err("stopped before the catalogue was read".into());
        }
        match p.session.get_vendor().await {
            Ok(v) => {
                vendor = Some(v.value);
                reader = Some(p);
                break;
            }
            Err(e) if e.kind == ErrorKind::Unauthorized => {
                rejected.insert(p.row.id.clone(), e);
            }
            Err(e) => {
                return Err(format!(
                    "the service catalogue could not be read, so nothing was pushed (no service is created without reading the catalogue first): {e}"
                ));
            }
        }
    }
    let (Some(reader), Some(vendor)) = (reader, vendor) else {
        // Every token was rejected: nothing to read with.
        return Ok((HashMap::new(), rejected));
    };
    let resolution = plan::resolve_services(&ctx.config.services, &vendor.skus);
    for name in &resolution.duplicates {
        tracing::warn!(service = %name, "Gradient's catalogue holds this service name more than once; using the first");
    }
    let mut ids: HashMap<String, String> = resolution.found.into_iter().collect();
    for module in &resolution.missing {
        let Some(svc) = ctx.config.service(module) else {
            continue;
        };
        tracing::warn!(service = %svc.name, module = %module, "service not in Gradient's catalogue: creating it once");
        let new = NewService {
            name: svc.name.clone(),
            description: svc.description.clone(),
            category: svc.category.clone(),
            subcategory: svc.subcategory.clone(),
            support_article: svc.support_article.clone(),
            support_contact: svc.support_contact.clone(),
        };
        match reader.session.create_service(&new).await {
            Ok(v) => match v.value.skus.iter().rev().find(|k| k.name == svc.name) {
                Some(k) => {
                    ids.insert(module.clone(), k.id.clone());
                }
                None => {
                    tracing::error!(service = %svc.name, "Gradient created the service but its answer does not list it; its pairs fail this run")
                }
            },
            Err(e) => {
                tracing::error!(service = %svc.name, error = %e, "could not create the service; its pairs fail this run");
            }
        }
    }
    let now = now_ms();
    let to_save: Vec<(String, String, String)> = ctx
        .config
        .services
        .iter()
        .filter_map(|s| {
            ids.get(&s.module)
                .map(|id| (s.module.clone(), s.name.clone(), id.clone()))
        })
        .collect();
    if let Err(e) = ctx
        .store
        .with(move |s| {
            for (m, n, id) in &to_save {
                s.save_service_id(m, n, id, now)?;
            }
            Ok(())
        })
        .await
    {
        tracing::warn!(error = %e, "could not remember Gradient's service ids");
    }
    Ok((ids, rejected))
}

/// Marks a connector `token_rejected` (guarded by its token generation) and builds its report.
async fn reject_connector(
    ctx: &SyncContext,
    row: &ConnectorRow,
    err: &GradientError,
) -> ConnectorReport {
    let (id, gen) = (row.id.clone(), row.token_set_at);
    let reason = format!(
        "Gradient rejected the token (HTTP 401): was a newer partner API key generated? Paste it with `gradient-connector connector add {} --token-file PATH`",
        row.id
    );
    let r = reason.clone();
    let now = now_ms();
    if let Err(e) = ctx
        .store
        .with(move |s| s.set_connector_state(&id, gen, ConnectorState::TokenRejected, &r, now))
        .await
    {
        tracing::error!(connector = %row.id, error = %e, "could not record the rejected token");
    }
    tracing::error!(connector = %row.id, "{reason} ({})", err.message);
    ConnectorReport {
        id: row.id.clone(),
        state: Some(ConnectorState::TokenRejected),
        note: Some(reason),
        ..ConnectorReport::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    ledger: &Sender<LedgerEntry>,
    cr: &mut ConnectorReport,
    run_id: i64,
    connector: &str,
    p: &PlannedPush,
    outcome: PairOutcome,
    status: Option<u16>,
    attempts: u32,
    reason: Option<&str>,
    at: Millis,
) {
    cr.tally.add(outcome);
    match outcome {
        PairOutcome::Unmapped => cr.unmapped.push((p.account_id.clone(), p.module.clone())),
        PairOutcome::Failed => cr.failed.push((
            p.account_id.clone(),
            p.module.clone(),
            reason.unwrap_or("failed").to_string(),
        )),
        _ => {}
    }
    // A send error means the writer stopped; finish() reports why.
    let _ = ledger.send(LedgerEntry {
        run_id,
        connector_id: connector.to_string(),
        account_id: p.account_id.clone(),
        module: p.module.clone(),
        service_id: p.service_id.clone(),
        unit_count: Some(p.unit_count),
        outcome,
        http_status: status,
        attempts,
        reason: reason.map(str::to_string),
        at,
    });
}

/// Records every pair of a plan with one outcome (a connector that could not push at all).
#[allow(clippy::too_many_arguments)]
fn record_all(
    ledger: &Sender<LedgerEntry>,
    cr: &mut ConnectorReport,
    run_id: i64,
    connector: &str,
    pushes: &[PlannedPush],
    outcome: PairOutcome,
    status: Option<u16>,
    reason: &str,
    at: Millis,
) {
    for p in pushes {
        record(
            ledger,
            cr,
            run_id,
            connector,
            p,
            outcome,
            status,
            0,
            Some(reason),
            at,
        );
    }
}

/// Records every push of a connector whose token Gradient rejected: none is sent.
fn record_rejected(
    ledger: &Sender<LedgerEntry>,
    cr: &mut ConnectorReport,
    run_id: i64,
    plan: &ConnectorPlan,
    at: Millis,
) {
    let reason = "not sent: Gradient rejected this connector's token (401)";
    record_all(
        ledger,
        cr,
        run_id,
        &plan.connector_id,
        &plan.pushes,
        PairOutcome::Rejected,
        None,
        reason,
        at,
    );
}

fn record_disabled(
    ledger: &Sender<LedgerEntry>,
    cr: &mut ConnectorReport,
    run_id: i64,
    plan: &ConnectorPlan,
    at: Millis,
) {
    for d in &plan.disabled {
        cr.tally.add(PairOutcome::SkippedDisabled);
        cr.disabled
            .push((d.account_id.clone(), d.module.clone(), d.last_known));
        let _ = ledger.send(LedgerEntry {
            run_id,
            connector_id: plan.connector_id.clone(),
            account_id: d.account_id.clone(),
            module: d.module.clone(),
            service_id: None,
            unit_count: d.last_known,
            outcome: PairOutcome::SkippedDisabled,
            http_status: None,
            attempts: 0,
            reason: Some(
                "module disabled: nothing sent; Gradient keeps the last known value".into(),
            ),
            at,
        });
    }
}

/// One connector's part of a run.
#[allow(clippy::too_many_arguments)]
async fn sync_connector(
    ctx: &SyncContext,
    p: Participant,
    plan: ConnectorPlan,
    workspaces: Vec<WorkspaceRow>,
    run_id: i64,
    control: &RunControl,
    ledger: Sender<LedgerEntry>,
    forbidden: Arc<AtomicBool>,
) -> ConnectorReport {
    let id = p.row.id.clone();
    let mut cr = ConnectorReport {
        id: id.clone(),
        state: Some(p.row.state),
        ..ConnectorReport::default()
    };
    record_disabled(&ledger, &mut cr, run_id, &plan, now_ms());
    // Setup calls: verification (unverified only) and accounts. A failure here decides every pair.
    let setup: Result<(), GradientError> = async {
        if p.row.state == ConnectorState::Unverified {
            verify(&ctx.store, &id, p.row.token_set_at, &p.session).await?;
            cr.state = Some(ConnectorState::Connected);
        }
        let acc = ensure_accounts(&p.session, &id, &workspaces).await?;
        cr.accounts_created = acc.created;
        cr.accounts_renamed = acc.renamed;
        Ok(())
    }
    .await;
    if let Err(e) = setup {
        let now = now_ms();
        if e.kind == ErrorKind::Unauthorized {
            let rejected = reject_connector(ctx, &p.row, &e).await;
            cr.state = rejected.state;
            cr.note = rejected.note;
            record_rejected(&ledger, &mut cr, run_id, &plan, now);
        } else {
            if e.kind == ErrorKind::Forbidden {
                forbidden.store(true, Ordering::Relaxed);
            }
            let reason = format!("not sent: the accounts could not be read or verified: {e}");
            tracing::warn!(connector = %id, "{reason}");
            record_all(
                &ledger,
                &mut cr,
                run_id,
                &id,
                &plan.pushes,
                PairOutcome::Failed,
                e.status,
                &reason,
                now,
            );
        }
        return cr;
    }

    let rejected = AtomicBool::new(false);
    let n = plan.pushes.len();
    let max_in_flight = ctx.config.gradient.client.max_in_flight.max(1);
    let push = |pp: PlannedPush, no_build: bool| {
        let session = &p.session;
        let rejected = &rejected;
        let forbidden = &forbidden;
        async move {
            let outcome = push_pair(session, &pp, no_build, rejected, forbidden, control).await;
            (pp, outcome)
        }
    };
    let mut pushes = plan.pushes.into_iter();
    let last = if n > 0 { pushes.next_back() } else { None };
    let mut first_pushed: Option<PlannedPush> = None;
    {
        let mut results = stream::iter(pushes)
            .map(|pp| push(pp, true))
            .buffer_unordered(max_in_flight);
        while let Some((pp, outcome)) = results.next().await {
            if let Some(o) = outcome {
                if o.outcome == PairOutcome::Pushed && first_pushed.is_none() {
                    first_pushed = Some(pp.clone());
                }
                record_push(&ledger, &mut cr, run_id, &id, &pp, &o);
            }
        }
    }
    if let Some(pp) = last {
        let (pp, outcome) = push(pp, false).await;
        if let Some(o) = outcome {
            let last_ok = o.outcome == PairOutcome::Pushed;
            record_push(&ledger, &mut cr, run_id, &id, &pp, &o);
            // The run's last call must rebuild Gradient's view: re-push a successful pair.
            if !last_ok && !rejected.load(Ordering::Relaxed) && !control.stop.is_cancelled() {
                if let Some(ok) = first_pushed {
                    if let Some(sid) = &ok.service_id {
                        if let Err(e) = p
                            .session
                            .set_unit_count(sid, &ok.account_id, ok.unit_count, false)
                            .await
                        {
                            tracing::warn!(connector = %id, error = %e, "the rebuilding push failed; Gradient rebuilds on its next accepted count");
                        }
                    }
                }
            }
        }
    }
    if rejected.load(Ordering::Relaxed) {
        let err = GradientError {
            kind: ErrorKind::Unauthorized,
            status: Some(401),
            attempts: 1,
            message: String::new(),
        };
        let r = reject_connector(ctx, &p.row, &err).await;
        cr.state = r.state;
        cr.note = r.note;
    } else if cr.tally.failed == 0 && !control.stop.is_cancelled() {
        let (cid, now) = (id.clone(), now_ms());
        let _ = ctx.store.with(move |s| s.mark_success(&cid, now)).await;
    }
    cr
}

/// Records the outcome of a push that was attempted (or refused before sending).
fn record_push(
    ledger: &Sender<LedgerEntry>,
    cr: &mut ConnectorReport,
    run_id: i64,
    connector: &str,
    pp: &PlannedPush,
    o: &PushOutcome,
) {
    record(
        ledger,
        cr,
        run_id,
        connector,
        pp,
        o.outcome,
        o.status,
        o.attempts,
        o.reason.as_deref(),
        now_ms(),
    );
}

/// The outcome of one push.
struct PushOutcome {
    outcome: PairOutcome,
    status: Option<u16>,
    attempts: u32,
    reason: Option<String>,
}

/// The largest count a JSON number carries exactly (2^53): anything above is refused, never rounded.
pub const MAX_EXACT_COUNT: u64 = 1 << 53;

/// Pushes one pair unless the run is stopping (None: not attempted, not recorded).
async fn push_pair(
    session: &PartnerSession,
    pp: &PlannedPush,
    no_build: bool,
    rejected: &AtomicBool,
    forbidden: &AtomicBool,
    control: &RunControl,
) -> Option<PushOutcome> {
    if control.stop.is_cancelled() {
        return None;
    }
    let not_sent = |outcome, reason: &str| {
        Some(PushOutcome {
            outcome,
            status: None,
            attempts: 0,
            reason: Some(reason.to_string()),
        })
    };
    if rejected.load(Ordering::Relaxed) {
        return not_sent(
            PairOutcome::Rejected,
            "not sent: Gradient rejected this connector's token (401) earlier in this run",
        );
    }
    if forbidden.load(Ordering::Relaxed) {
        return not_sent(
            PairOutcome::Failed,
            "not sent: Gradient answered 403 (anomaly) earlier in this run",
        );
    }
    if pp.unit_count > MAX_EXACT_COUNT {
        return not_sent(PairOutcome::Failed, "not sent: the count exceeds 2^53, which a JSON number cannot carry exactly; check the inventory");
    }
    let Some(service_id) = &pp.service_id else {
        return not_sent(
            PairOutcome::Failed,
            "not sent: the service has no Gradient id (it could not be created); see the run's log",
        );
    };
    let call = session.set_unit_count(service_id, &pp.account_id, pp.unit_count, no_build);
    let result = tokio::select! {
        r = call => r,
        _ = control.abort.cancelled() => return None,
    };
    Some(match result {
        Ok(a) => PushOutcome {
            outcome: PairOutcome::Pushed,
            status: Some(a.status),
            attempts: a.attempts,
            reason: None,
        },
        Err(e) => {
            let outcome = match e.kind {
                ErrorKind::NotMapped => PairOutcome::Unmapped,
                ErrorKind::Unauthorized => {
                    rejected.store(true, Ordering::Relaxed);
                    PairOutcome::Rejected
                }
                ErrorKind::Forbidden => {
                    forbidden.store(true, Ordering::Relaxed);
                    PairOutcome::Failed
                }
                _ => PairOutcome::Failed,
            };
            let reason = match outcome {
                PairOutcome::Unmapped => Some(format!("unmapped: {}", e.message)),
                _ => Some(e.to_string()),
            };
            PushOutcome {
                outcome,
                status: e.status,
                attempts: e.attempts,
                reason,
            }
        }
    })
}

/// A dry run's plan: what a run would push now, with no request and no write.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// `daily` or `monthly`.
    pub cadence: Cadence,
    /// Period label.
    pub period: String,
    /// Per connector.
    pub connectors: Vec<DryRunConnector>,
    /// Modules whose Gradient id is not known yet (created by the first real run).
    pub services_not_yet_known: Vec<String>,
}

/// One connector in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunConnector {
    /// State.
    pub state: ConnectorState,
    /// The plan.
    #[serde(flatten)]
    pub plan: ConnectorPlan,
}

/// Computes the plan of a run without contacting Gradient or writing anything.
pub async fn dry_run(config: &Arc<Config>, req: &RunRequest) -> Result<DryRun, SyncError> {
    let now = now_ms();
    let period = request_period(config, req, now);
    let store = store_location(config);
    let setup = read_setup(&store, config, req.connector.clone(), period).await?;
    if let Some(only) = &req.connector {
        if setup.connectors.is_empty() {
            return Err(SyncError::UnknownConnector(only.clone()));
        }
    }
    let listed: Vec<&ConnectorRow> = setup
        .connectors
        .iter()
        .filter(|(row, token)| row.state != ConnectorState::Disconnected && token.is_some())
        .map(|(row, _)| row)
        .collect();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    let mut plans = plans_for(&setup, &ids, &setup.stored_service_ids);
    let connectors = listed
        .into_iter()
        .map(|row| DryRunConnector {
            state: row.state,
            plan: plans.remove(&row.id).unwrap_or_default(),
        })
        .collect();
    let services_not_yet_known = config
        .services
        .iter()
        .filter(|s| !setup.stored_service_ids.contains_key(&s.module))
        .map(|s| s.module.clone())
        .collect();
    Ok(DryRun {
        cadence: cadence_label(&period),
        period: period.label(config.schedule.timezone),
        connectors,
        services_not_yet_known,
    })
}

/// A human timestamp for reports.
pub fn when(ms: Option<Millis>) -> String {
    ms.map(format_ms).unwrap_or_else(|| "-".into())
}
