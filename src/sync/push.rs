//! One connector's part of a run: its set-up ([`super::set_up`]) and every planned push
//! concurrently through the client's pacer — waiting for the set-up at the connector's
//! [`Gate`], except the pairs that lead at a distant Gradient ([`super::headstart`]); all but the
//! rebuilding tail with `no_build=true` ([`super::tail`]) — and a ledger row for every pair
//! ([`super::record`]).
//!
//! [`Scope`] is what every connector of a run shares (context, run id, stop control, the ledger
//! writer's [`Recorder`], the run-wide [`Halt`]); [`ConnectorRun`] is one connector's state, whose
//! own [`Halt`] says whether its token was rejected.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use futures::stream::{self, StreamExt};

use super::headstart::{self, Admission, AtDeparture, Gate, ServiceIds, HEADSTART_AFTER};
use super::plan::{ConnectorPlan, PlannedPush};
use super::record::note;
pub use super::record::{Attempt, PairKey, Recorder};
use super::set_up::Prepared;
use super::tail::{Leg, Tail};
use super::{reject_connector, ConnectorReport, Participant, RunControl, SyncContext};
use crate::domain::{ConnectorState, PairOutcome};
use crate::gradient::{Answer, BuildChoice, ErrorKind, GradientError};
use crate::time::now_ms;

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

    /// Runs the connector's part: its set-up (`opening`: [`prepare`] and the run's catalogue) and
    /// its pushes, which wait for the set-up at the [`Gate`] — or at a distant Gradient, for the
    /// pairs that may lead, not ([`super::headstart`]). Returns its report; None when the run's
    /// catalogue could not be read and nothing of this connector was recorded.
    pub async fn run(mut self, opening: impl Future<Output = Opened>) -> Option<ConnectorReport> {
        let mut pushes = std::mem::take(&mut self.plan.pushes);
        headstart::leaders_first(self.who.row.state, &mut pushes);
        let client = &self.scope.ctx.config.gradient.client;
        let tail = Tail::new(
            pushes.len(),
            client.requests_per_second,
            client.max_in_flight.max(1),
        );
        let gate = Gate::default();
        let (opened, mut pushed) = {
            let this = &self;
            futures::join!(
                this.open(opening, &gate),
                this.push_all(pushes, &tail, &gate)
            )
        };
        for (pp, a) in &pushed.done {
            note(&mut self.report, pp, a);
        }
        let failure = match opened {
            // The run fails at its catalogue: of this connector, only what it pushed early is
            // recorded (and rebuilt).
            Err(SetUpFailure::Catalogue) => {
                self.rebuild_unless_sealed(&tail, pushed.first_accepted())
                    .await;
                return (!pushed.done.is_empty()).then_some(self.report);
            }
            Err(SetUpFailure::Connector(e)) => Some(e),
            Ok((p, _)) => {
                if p.verified {
                    self.report.state = Some(ConnectorState::Connected);
                }
                self.gradient_status = p.status;
                self.report.accounts_created = p.accounts_created;
                self.report.accounts_renamed = p.accounts_renamed;
                None
            }
        };
        let rec = self.scope.recorder.clone();
        rec.disabled(&mut self.report, &self.plan, now_ms());
        if let Some(e) = failure {
            // The pairs that did not leave are decided by the set-up's failure.
            self.plan.pushes = std::mem::take(&mut pushed.left);
            self.set_up_failed(&e).await;
            self.rebuild_unless_sealed(&tail, pushed.first_accepted())
                .await;
            return Some(self.report);
        }
        self.rebuild_unless_sealed(&tail, pushed.first_accepted())
            .await;
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
        Some(self.report)
    }

    /// Waits for the set-up; when it has not answered after [`HEADSTART_AFTER`], lets the pairs
    /// that may lead go. Then opens or closes the gate.
    async fn open(&self, opening: impl Future<Output = Opened>, gate: &Gate) -> Opened {
        tokio::pin!(opening);
        let opened = tokio::select! {
            opened = &mut opening => opened,
            () = tokio::time::sleep(HEADSTART_AFTER) => {
                gate.lead();
                opening.await
            }
        };
        match &opened {
            Ok((_, ids)) => gate.open(ids.clone()),
            Err(_) => gate.close(),
        }
        opened
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
            self.halt.raise(Halt::TokenRejected);
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
    /// answered. Rows go to the ledger as pushes complete (a crash loses only the last few).
    async fn push_all(&self, pushes: Vec<PlannedPush>, tail: &Tail, gate: &Gate) -> Pushes {
        let rec = self.scope.recorder.clone();
        let max_in_flight = self.scope.ctx.config.gradient.client.max_in_flight.max(1);
        let last = pushes.len().saturating_sub(1);
        let mut out = Pushes::default();
        let mut results = stream::iter(pushes.into_iter().enumerate())
            .map(|(i, mut pp)| async move {
                let a = self.push(&mut pp, tail, gate, i == last).await;
                (pp, a)
            })
            .buffer_unordered(max_in_flight);
        while let Some((pp, attempt)) = results.next().await {
            let Some(a) = attempt else {
                out.left.push(pp);
                continue;
            };
            rec.row(&self.report.id, &pp, &a, now_ms());
            out.done.push((pp, a));
        }
        out
    }

    /// The run's last call must rebuild Gradient's view: unless a rebuilding push sealed the run,
    /// re-push a pair Gradient accepted, rebuilding.
    async fn rebuild_unless_sealed(&self, tail: &Tail, accepted: Option<&PlannedPush>) {
        if tail.sealed()
            || self.halt.get().max(self.scope.halt.get()) != Halt::Sending
            || self.scope.control.stop.is_cancelled()
        {
            return;
        }
        let Some(ok) = accepted else { return };
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

    /// Pushes one pair unless the run is stopping or the set-up failed (None: not recorded here);
    /// the connector's `last` push first waits for the drain. The tail decides `no_build`; a
    /// push not attempted settles its leg when the leg is dropped.
    async fn push(
        &self,
        pp: &mut PlannedPush,
        tail: &Tail,
        gate: &Gate,
        last: bool,
    ) -> Option<Attempt> {
        let leg = tail.leg();
        let attempt = self.push_leg(pp, &leg, tail, gate, last).await;
        if let Some(a) = &attempt {
            leg.settle(a.outcome == PairOutcome::Pushed, a.attempts);
        }
        attempt
    }

    async fn push_leg(
        &self,
        pp: &mut PlannedPush,
        leg: &Leg<'_>,
        tail: &Tail,
        gate: &Gate,
        last: bool,
    ) -> Option<Attempt> {
        let control = self.scope.control;
        let leads = headstart::may_lead(self.who.row.state, pp, last);
        loop {
            let admitted_early = tokio::select! {
                admission = gate.admit(leads) => match admission {
                    Admission::Closed => return None,
                    Admission::Early => true,
                    Admission::Open(ids) => {
                        pp.service_id = ids.get(&pp.module).cloned();
                        false
                    }
                },
                () = control.stop.cancelled() => return None,
            };
            if last {
                tokio::select! {
                    () = tail.drained() => {}
                    () = control.stop.cancelled() => return None,
                }
            }
            if let Err(held) = self.may_send(pp) {
                return held;
            }
            let Some(service_id) = pp.service_id.clone() else {
                return Some(no_service_id());
            };
            let leaving = Leaving {
                leg,
                gate,
                module: &pp.module,
                early: admitted_early.then_some(service_id.as_str()),
                left_early: AtomicBool::new(false),
            };
            let sent = self.send(&service_id, pp, &leaving).await?;
            if sent.as_ref().is_err_and(|e| e.kind == ErrorKind::Withdrawn) {
                // Admitted early, and by the time it left the pacer the headstart was over:
                // admitted again, under what the set-up said.
                continue;
            }
            if !leaving.left_early.load(Ordering::Relaxed) {
                return Some(self.judge(sent));
            }
            return self.read_early(pp, &service_id, sent, leg, gate).await;
        }
    }

    /// Why a pair is not sent now: Err(None) when the run is stopping (not recorded here),
    /// Err(Some) with what to record.
    fn may_send(&self, pp: &PlannedPush) -> Result<(), Option<Attempt>> {
        // A ledger row that could not be written stops every push not sent yet.
        if self.scope.control.stop.is_cancelled() || self.scope.recorder.ledger.failure().is_some()
        {
            return Err(None);
        }
        match self.halt.get().max(self.scope.halt.get()) {
            Halt::Sending => {}
            Halt::TokenRejected => {
                return Err(Some(Attempt::not_sent(
                    PairOutcome::Rejected,
                    "not sent: Gradient rejected this connector's token (401) earlier in this run",
                )))
            }
            Halt::Forbidden => {
                return Err(Some(Attempt::not_sent(
                    PairOutcome::Failed,
                    "not sent: Gradient answered 403 (anomaly) earlier in this run",
                )))
            }
        }
        if pp.unit_count.whole_part() >= MAX_EXACT_COUNT {
            return Err(Some(Attempt::not_sent(PairOutcome::Failed, "not sent: the count exceeds 2^53, which a JSON number cannot carry exactly; check the inventory")));
        }
        Ok(())
    }

    /// A count that left before the set-up answered ([`super::headstart`]): accepted, it stands
    /// (Gradient holds it); any other answer is read only once the set-up has answered. None: the
    /// set-up failed, and its failure decides the pair.
    async fn read_early(
        &self,
        pp: &mut PlannedPush,
        service_id: &str,
        sent: Result<Answer<()>, GradientError>,
        leg: &Leg<'_>,
        gate: &Gate,
    ) -> Option<Attempt> {
        if sent.is_ok() {
            return Some(self.judge(sent));
        }
        leg.answered();
        gate.refused();
        let verdict = tokio::select! {
            v = gate.verdict() => v,
            () = self.scope.control.abort.cancelled() => return None,
        };
        // The set-up failed: a refusal under an unchecked token, vendor key or service id means
        // nothing on its own.
        let ids = verdict?;
        let current = ids.get(&pp.module).cloned();
        if current.as_deref() == Some(service_id) {
            return Some(self.judge(sent));
        }
        // The catalogue names another service for the module now: push again under it, with
        // the `no_build` the count left with.
        let before = sent.as_ref().err().map_or(0, |e| e.attempts);
        pp.service_id = current;
        let Some(service_id) = pp.service_id.clone() else {
            return Some(no_service_id());
        };
        let again = self.send(&service_id, pp, leg.left_with_no_build()).await?;
        let mut a = self.judge(again);
        a.attempts = a.attempts.saturating_add(before);
        Some(a)
    }

    /// One count to Gradient; None when the run was aborted before the answer.
    async fn send(
        &self,
        service_id: &str,
        pp: &PlannedPush,
        no_build: impl BuildChoice,
    ) -> Option<Result<Answer<()>, GradientError>> {
        let call =
            self.who
                .session
                .set_unit_count(service_id, &pp.account_id, pp.unit_count, no_build);
        tokio::select! {
            r = call => Some(r),
            _ = self.scope.control.abort.cancelled() => None,
        }
    }

    /// What Gradient's answer to a count means for the pair (a 401 or a 403 also halts sending).
    fn judge(&self, sent: Result<Answer<()>, GradientError>) -> Attempt {
        match sent {
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
        }
    }
}

/// How one push leaves the pacer: the tail decides `no_build`; a count admitted before the set-up
/// answered is withdrawn when, as it leaves, the headstart is over and the set-up did not confirm
/// its service id ([`Gate::at_departure`]).
struct Leaving<'a> {
    leg: &'a Leg<'a>,
    gate: &'a Gate,
    module: &'a str,
    /// Admitted early, under this service id.
    early: Option<&'a str>,
    /// It left while the headstart lasted: its answer waits for the set-up's.
    left_early: AtomicBool,
}

impl BuildChoice for Leaving<'_> {
    fn withdrawn(&self) -> bool {
        let Some(service_id) = self.early else {
            return false;
        };
        match self.gate.at_departure(self.module, service_id) {
            AtDeparture::Early => {
                self.left_early.store(true, Ordering::Relaxed);
                false
            }
            AtDeparture::Confirmed => false,
            AtDeparture::Withdrawn => true,
        }
    }

    fn no_build(&self) -> bool {
        self.leg.no_build()
    }
}

fn no_service_id() -> Attempt {
    Attempt::not_sent(
        PairOutcome::Failed,
        "not sent: the service has no Gradient id (it could not be created); see the run's log",
    )
}

/// Why a connector's set-up failed.
#[derive(Debug)]
pub enum SetUpFailure {
    /// The run's catalogue could not be read: the run fails (its stop says why).
    Catalogue,
    /// The connector's own set-up calls.
    Connector(GradientError),
}

/// What a connector's set-up found, with the run's service ids.
pub type Opened = Result<(Prepared, ServiceIds), SetUpFailure>;

/// What a connector's pushes came to.
#[derive(Default)]
struct Pushes {
    /// Pairs recorded, with what happened.
    done: Vec<(PlannedPush, Attempt)>,
    /// Pairs not recorded: they did not leave (the set-up failed, or the run stopped).
    left: Vec<PlannedPush>,
}

impl Pushes {
    /// The first pair Gradient accepted (in the order the answers came).
    fn first_accepted(&self) -> Option<&PlannedPush> {
        self.done
            .iter()
            .find(|(_, a)| a.outcome == PairOutcome::Pushed)
            .map(|(pp, _)| pp)
    }
}
