//! A run's ledger rows: [`Recorder`] sends one row per pair to the store's writer thread and keeps
//! the connector's report in step; [`Attempt`] is what happened to one pair.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::plan::{ConnectorPlan, PlannedPush};
use super::ConnectorReport;
use crate::domain::PairOutcome;
use crate::store::ledger::LedgerEntry;
use crate::store::LedgerSink;
use crate::time::Millis;

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
    pub(super) fn not_sent(outcome: PairOutcome, reason: &str) -> Attempt {
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
pub(super) fn note(cr: &mut ConnectorReport, p: &PlannedPush, a: &Attempt) {
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
