//! One connector's part of a run: set-up calls (verify an unverified token, reconcile accounts),
//! then every planned push concurrently through the client's pacer — all but the rebuilding tail
//! with `no_build=true` ([`super::tail`]) — and a ledger row for every pair.
//!
//! [`Scope`] is what every connector of a run shares (context, run id, stop control, the ledger
//! writer's [`Recorder`], the run-wide [`Halt`]); [`ConnectorRun`] is one connector's state, whose
//! own [`Halt`] says whether its token was rejected.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};

use super::plan::{ConnectorPlan, PlannedPush};
use super::tail::{Leg, Tail};
use super::{reject_connector, ConnectorReport, Participant, RunControl, SyncContext};
use crate::connector::{ensure_accounts, verify};
use crate::domain::{ConnectorState, PairOutcome};
use crate::gradient::{ErrorKind, GradientError};
use crate::store::ledger::{LedgerEntry, WorkspaceRow};
use crate::store::LedgerSink;
use crate::time::{now_ms, Millis};

/// The largest count a JSON number carries exactly (2^53): anything above is refused, never rounded.
pub const MAX_EXACT_COUNT: u64 = 1 << 53;

/// Why sending stops (for a connector, or for the whole run). Ordered: a later one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Halt {
    /// Keep sending.
    Sending = 0,
    /// Gradient answered 401: this connector's token is rejected.
    TokenRejected = 1,
    /// Gradient answered 403 (anomaly): the whole run stops sending.
    Forbidden = 2,
}

/// A [`Halt`] shared by concurrent pushes.
#[derive(Debug, Default)]
pub struct HaltFlag(AtomicU8);

impl HaltFlag {
    /// The current state.
    pub fn get(&self) -> Halt {
        match self.0.load(Ordering::Relaxed) {
            0 => Halt::Sending,
            1 => Halt::TokenRejected,
            _ => Halt::Forbidden,
        }
    }

    /// Raises the state to `h` (never lowers it).
    pub fn raise(&self, h: Halt) {
        self.0.fetch_max(h as u8, Ordering::Relaxed);
    }
}

/// A pair as the ledger knows it within one run: (connector, account, module).
pub type PairKey = (String, String, String);

/// Writes a run's ledger rows (through the writer thread) and keeps the connector's report in step.
/// It remembers which pairs it recorded, so that a run stopped by its deadline can record every
/// other planned pair `failed` ([`Recorder::recorded`]).
#[derive(Clone)]
pub struct Recorder {
    /// The store's writer thread.
    pub ledger: LedgerSink,
    /// The run.
    pub run_id: i64,
    recorded: Arc<Mutex<HashSet<PairKey>>>,
}

/// What happened to one pair.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Outcome.
    pub outcome: PairOutcome,
    /// Gradient's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Requests made.
    pub attempts: u32,
    /// Why, for anything but pushed.
    pub reason: Option<String>,
}

impl Attempt {
    fn not_sent(outcome: PairOutcome, reason: &str) -> Attempt {
        Attempt {
            outcome,
            status: None,
            attempts: 0,
            reason: Some(reason.to_string()),
        }
    }
}

fn pair_key(connector: &str, account: &str, module: &str) -> PairKey {
    (
        connector.to_string(),
        account.to_string(),
        module.to_string(),
    )
}

impl Recorder {
    /// A recorder for run `run_id`.
    pub fn new(ledger: LedgerSink, run_id: i64) -> Recorder {
        Recorder {
            ledger,
            run_id,
            recorded: Arc::default(),
        }
    }

    /// Whether a row for this pair was sent in this run.
    pub fn recorded(&self, connector: &str, account: &str, module: &str) -> bool {
        self.pairs().contains(&pair_key(connector, account, module))
    }

    fn remember(&self, connector: &str, account: &str, module: &str) {
        self.pairs().insert(pair_key(connector, account, module));
    }

    /// The pairs recorded so far (a poisoned lock still holds a usable set).
    fn pairs(&self) -> std::sync::MutexGuard<'_, HashSet<PairKey>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one pair: its ledger row and its place in the connector's report.
    pub fn pair(&self, cr: &mut ConnectorReport, p: &PlannedPush, a: &Attempt, at: Millis) {
        self.row(&cr.id, p, a, at);
        note(cr, p, a);
    }

    /// Sends one pair's ledger row to the writer (a send error means the writer stopped; its
    /// `finish()` reports why).
    pub fn row(&self, connector: &str, p: &PlannedPush, a: &Attempt, at: Millis) {
        metrics::counter!("gradient_connector_pushes_total", "outcome" => a.outcome.as_str())
            .increment(1);
        self.remember(connector, &p.account_id, &p.module);
        self.ledger.send(LedgerEntry {
            run_id: self.run_id,
            connector_id: connector.to_string(),
            account_id: p.account_id.clone(),
            module: p.module.clone(),
            service_id: p.service_id.clone(),
            unit_count: Some(p.unit_count),
            outcome: a.outcome,
            http_status: a.status,
            attempts: a.attempts,
            reason: a.reason.clone().or_else(|| {
                p.final_zero
                    .then(|| "final zero: the workspace left this MSP (removed or moved)".into())
            }),
            at,
        });
    }

    /// Records every pair of a plan with one outcome (a connector that could not push at all).
    pub fn all(&self, cr: &mut ConnectorReport, plan: &ConnectorPlan, a: &Attempt, at: Millis) {
        for p in &plan.pushes {
            self.pair(cr, p, a, at);
        }
    }

    /// Records every push of a connector whose token Gradient rejected: none is sent.
    pub fn rejected(&self, cr: &mut ConnectorReport, plan: &ConnectorPlan, at: Millis) {
        let a = Attempt::not_sent(
            PairOutcome::Rejected,
            "not sent: Gradient rejected this connector's token (401)",
        );
        self.all(cr, plan, &a, at);
    }

    /// Records the pairs whose module is disabled: nothing is sent, Gradient keeps its value.
    pub fn disabled(&self, cr: &mut ConnectorReport, plan: &ConnectorPlan, at: Millis) {
        for d in &plan.disabled {
            metrics::counter!("gradient_connector_pushes_total", "outcome" => PairOutcome::SkippedDisabled.as_str())
                .increment(1);
            cr.tally.add(PairOutcome::SkippedDisabled);
            cr.disabled
                .push((d.account_id.clone(), d.module.clone(), d.last_known));
            self.remember(&plan.connector_id, &d.account_id, &d.module);
            self.ledger.send(LedgerEntry {
                run_id: self.run_id,
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
}

/// Counts one pair in the connector's report (and lists it when unmapped or failed).
fn note(cr: &mut ConnectorReport, p: &PlannedPush, a: &Attempt) {
    cr.tally.add(a.outcome);
    match a.outcome {
        PairOutcome::Unmapped => cr.unmapped.push((p.account_id.clone(), p.module.clone())),
        PairOutcome::Failed => cr.failed.push((
            p.account_id.clone(),
            p.module.clone(),
            a.reason.clone().unwrap_or_else(|| "failed".into()),
        )),
        _ => {}
    }
}

/// What a connector's set-up found: run while the catalogue is read, before any push.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// An unverified token was verified now.
    verified: bool,
    /// The integration's status as Gradient shows it.
    status: Option<String>,
    /// Accounts created in Gradient.
    accounts_created: usize,
    /// Accounts renamed in Gradient.
    accounts_renamed: usize,
}

/// A connector's set-up calls: verification (unverified only) or a read of the integration (its
/// status as Gradient shows it now) together with the account reconciliation — one round trip for
/// a connected connector — then what Gradient showed is recorded. A failure decides every pair.
pub async fn prepare(
    ctx: &SyncContext,
    who: &Participant,
    workspaces: &[WorkspaceRow],
) -> Result<Prepared, GradientError> {
    let id = who.row.id.clone();
    let (verified, status, synced_at, acc) = if who.row.state == ConnectorState::Unverified {
        let st = verify(
            &ctx.store,
            &ctx.config.audience(),
            &id,
            who.row.token_set_at,
            &who.session,
        )
        .await?;
        let acc = ensure_accounts(&who.session, &id, workspaces).await?;
        (true, Some(st), None, acc)
    } else {
        let (integration, acc) = futures::join!(
            who.session.get_integration(),
            ensure_accounts(&who.session, &id, workspaces)
        );
        let i = integration?.value;
        (false, i.status, i.last_synced_at, acc?)
    };
    let (created, renamed) = (acc.created, acc.renamed);
    let (now, shown) = (now_ms(), status.clone());
    let recorded = ctx
        .store
        .write(move |s| {
            s.record_gradient_view(
                &id,
                shown.as_deref(),
                synced_at,
                acc.unmapped.as_deref(),
                now,
            )
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(connector = %who.row.id, error = %e, "could not record Gradient's view of the integration");
    }
    Ok(Prepared {
        verified,
        status,
        accounts_created: created,
        accounts_renamed: renamed,
    })
}

/// What every connector of one run shares.
pub struct Scope<'a> {
    /// Configuration, store and client.
    pub ctx: &'a SyncContext,
    /// Stop control.
    pub control: &'a RunControl,
    /// The ledger.
    pub recorder: Recorder,
    /// Run-wide halt (403).
    pub halt: &'a HaltFlag,
}

/// One connector's part of a run.
pub struct ConnectorRun<'a> {
    scope: &'a Scope<'a>,
    who: Participant,
    plan: ConnectorPlan,
    halt: HaltFlag,
    report: ConnectorReport,
    /// The integration's status as Gradient showed it at this run's set-up.
    gradient_status: Option<String>,
}

impl<'a> ConnectorRun<'a> {
    /// A connector about to take part.
    pub fn new(scope: &'a Scope<'a>, who: Participant, plan: ConnectorPlan) -> Self {
        let report = ConnectorReport {
            id: who.row.id.clone(),
            state: Some(who.row.state),
            ..ConnectorReport::default()
        };
        ConnectorRun {
            scope,
            who,
            plan,
            halt: HaltFlag::default(),
            report,
            gradient_status: None,
        }
    }

    /// Runs the connector's part after its set-up ([`prepare`], which ran while the catalogue
    /// was read); returns its report.
    pub async fn run(mut self, prepared: Result<Prepared, GradientError>) -> ConnectorReport {
        let rec = self.scope.recorder.clone();
        rec.disabled(&mut self.report, &self.plan, now_ms());
        match prepared {
            Err(e) => {
                self.set_up_failed(&e).await;
                return self.report;
            }
            Ok(p) => {
                if p.verified {
                    self.report.state = Some(ConnectorState::Connected);
                }
                self.gradient_status = p.status;
                self.report.accounts_created = p.accounts_created;
                self.report.accounts_renamed = p.accounts_renamed;
            }
        }
        self.push_all().await;
        self.activate().await;
        if self.halt.get() == Halt::TokenRejected {
            let mut err = GradientError::new(ErrorKind::Unauthorized, Some(401), "");
            err.attempts = 1;
            let r = reject_connector(self.scope.ctx, &self.who.row, &err).await;
            self.report.state = r.state;
            self.report.note = r.note;
        } else if self.report.tally.failed == 0 && !self.scope.control.stop.is_cancelled() {
            let (cid, now) = (self.report.id.clone(), now_ms());
            let marked = self
                .scope
                .ctx
                .store
                .write(move |s| s.mark_success(&cid, now))
                .await;
            if let Err(e) = marked {
                tracing::error!(connector = %self.report.id, error = %e, "the connector's last success could not be recorded (status and the last-success metric lag behind)");
            }
        }
        self.report
    }

    /// Sets the integration `active` once this run pushed a count Gradient accepted, unless
    /// Gradient already showed it `active` at set-up ("set as pending when ready for initial
    /// mapping, as active when ready for sync": Gradient's newer spec; nothing turns it active for
    /// us). Best effort: a failure is logged and the next run tries again.
    async fn activate(&mut self) {
        let pushed = self.report.tally.pushed > 0;
        if !pushed || self.gradient_status.as_deref() == Some("active") {
            return;
        }
        if self.halt.get() != Halt::Sending || self.scope.halt.get() != Halt::Sending {
            return;
        }
        let id = self.report.id.clone();
        match self
            .who
            .session
            .set_integration_status(crate::gradient::IntegrationStatus::Active)
            .await
        {
            Ok(_) => {
                tracing::info!(connector = %id, was = ?self.gradient_status, "integration set active in Gradient");
                self.gradient_status = Some("active".into());
                let now = now_ms();
                let cid = id.clone();
                let recorded = self
                    .scope
                    .ctx
                    .store
                    .write(move |s| s.set_gradient_status(&cid, "active", now))
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(connector = %id, error = %e, "could not record the integration's status");
                }
            }
            Err(e) => {
                tracing::warn!(connector = %id, error = %e, "the integration could not be set active; the next run tries again")
            }
        }
    }

    async fn set_up_failed(&mut self, e: &GradientError) {
        let now = now_ms();
        let rec = self.scope.recorder.clone();
        if e.kind == ErrorKind::Unauthorized {
            let rejected = reject_connector(self.scope.ctx, &self.who.row, e).await;
            self.report.state = rejected.state;
            self.report.note = rejected.note;
            rec.rejected(&mut self.report, &self.plan, now);
            return;
        }
        if e.kind == ErrorKind::Forbidden {
            self.scope.halt.raise(Halt::Forbidden);
        }
        // The ledger keeps Gradient's text as received; the log line escapes it.
        let reason = format!(
            "not sent: the accounts could not be read or verified: {}",
            e.text()
        );
        tracing::warn!(connector = %self.report.id, "not sent: the accounts could not be read or verified: {e}");
        let a = Attempt {
            outcome: PairOutcome::Failed,
            status: e.status,
            attempts: 0,
            reason: Some(reason),
        };
        rec.all(&mut self.report, &self.plan, &a, now);
    }

    /// Every pair concurrently through the pacer, the last ones rebuilding ([`Tail`]): all but the
    /// rebuilding tail with `no_build`, and the last one only after every `no_build` push was
    /// answered. A run that no accepted rebuilding push sealed re-pushes one accepted pair.
    async fn push_all(&mut self) {
        let rec = self.scope.recorder.clone();
        let client = &self.scope.ctx.config.gradient.client;
        let max_in_flight = client.max_in_flight.max(1);
        let pushes = std::mem::take(&mut self.plan.pushes);
        let tail = Tail::new(pushes.len(), client.requests_per_second, max_in_flight);
        let last = pushes.len().saturating_sub(1);
        let mut first_pushed: Option<PlannedPush> = None;
        let mut done = Vec::new();
        {
            let (this, tail) = (&*self, &tail);
            let id = this.report.id.clone();
            let mut results = stream::iter(pushes.into_iter().enumerate())
                .map(|(i, pp)| async move {
                    let a = this.push(&pp, tail, i == last).await;
                    (pp, a)
                })
                .buffer_unordered(max_in_flight);
            while let Some((pp, attempt)) = results.next().await {
                if let Some(a) = attempt {
                    if a.outcome == PairOutcome::Pushed && first_pushed.is_none() {
                        first_pushed = Some(pp.clone());
                    }
                    // Rows go to the writer as they complete (a crash loses only the last few).
                    rec.row(&id, &pp, &a, now_ms());
                    done.push((pp, a));
                }
            }
        }
        for (pp, a) in &done {
            note(&mut self.report, pp, a);
        }
        // The run's last call must rebuild Gradient's view: re-push a successful pair.
        if tail.sealed()
            || self.halt.get() != Halt::Sending
            || self.scope.control.stop.is_cancelled()
        {
            return;
        }
        let Some(ok) = first_pushed else { return };
        let Some(sid) = &ok.service_id else { return };
        if let Err(e) = self
            .who
            .session
            .set_unit_count(sid, &ok.account_id, ok.unit_count, false)
            .await
        {
            tracing::warn!(connector = %self.report.id, error = %e, "the rebuilding push failed; Gradient rebuilds on its next accepted count");
        }
    }

    /// Pushes one pair unless the run is stopping (None: not attempted, not recorded); the
    /// connector's `last` push first waits for the drain. The tail decides `no_build`; a push
    /// not attempted settles its leg when the leg is dropped.
    async fn push(&self, pp: &PlannedPush, tail: &Tail, last: bool) -> Option<Attempt> {
        let leg = tail.leg();
        let attempt = self.push_leg(pp, &leg, tail, last).await;
        if let Some(a) = &attempt {
            leg.settle(a.outcome == PairOutcome::Pushed, a.attempts);
        }
        attempt
    }

    async fn push_leg(
        &self,
        pp: &PlannedPush,
        leg: &Leg<'_>,
        tail: &Tail,
        last: bool,
    ) -> Option<Attempt> {
        let control = self.scope.control;
        if last {
            tokio::select! {
                () = tail.drained() => {}
                () = control.stop.cancelled() => return None,
            }
        }
        // A ledger row that could not be written stops every push not sent yet.
        if control.stop.is_cancelled() || self.scope.recorder.ledger.failure().is_some() {
            return None;
        }
        match self.halt.get().max(self.scope.halt.get()) {
            Halt::Sending => {}
            Halt::TokenRejected => {
                return Some(Attempt::not_sent(
                    PairOutcome::Rejected,
                    "not sent: Gradient rejected this connector's token (401) earlier in this run",
                ))
            }
            Halt::Forbidden => {
                return Some(Attempt::not_sent(
                    PairOutcome::Failed,
                    "not sent: Gradient answered 403 (anomaly) earlier in this run",
                ))
            }
        }
        if pp.unit_count.whole_part() >= MAX_EXACT_COUNT {
            return Some(Attempt::not_sent(PairOutcome::Failed, "not sent: the count exceeds 2^53, which a JSON number cannot carry exactly; check the inventory"));
        }
        let Some(service_id) = &pp.service_id else {
            return Some(Attempt::not_sent(
                PairOutcome::Failed,
                "not sent: the service has no Gradient id (it could not be created); see the run's log",
            ));
        };
        let call = self
            .who
            .session
            .set_unit_count(service_id, &pp.account_id, pp.unit_count, leg);
        let result = tokio::select! {
            r = call => r,
            _ = control.abort.cancelled() => return None,
        };
        Some(match result {
            Ok(a) => Attempt {
                outcome: PairOutcome::Pushed,
                status: Some(a.status),
                attempts: a.attempts,
                reason: None,
            },
            Err(e) => {
                let outcome = match e.kind {
                    ErrorKind::NotMapped => PairOutcome::Unmapped,
                    ErrorKind::Unauthorized => {
                        self.halt.raise(Halt::TokenRejected);
                        PairOutcome::Rejected
                    }
                    ErrorKind::Forbidden => {
                        self.scope.halt.raise(Halt::Forbidden);
                        PairOutcome::Failed
                    }
                    _ => PairOutcome::Failed,
                };
                let reason = match outcome {
                    PairOutcome::Unmapped => format!("unmapped: {}", e.message),
                    _ => e.text(),
                };
                Attempt {
                    outcome,
                    status: e.status,
                    attempts: e.attempts,
                    reason: Some(reason),
                }
            }
        })
    }
}
