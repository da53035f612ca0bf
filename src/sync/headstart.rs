//! The headstart of a connector's pushes at a distant Gradient. A connector's set-up (its
//! integration and accounts, and the run's catalogue) takes one round trip in which the pacer
//! would idle — half a second of a 20 s run at 500 ms. When the set-up has not answered after
//! [`HEADSTART_AFTER`], the pairs Gradient accepted before ([`may_lead`]: a count accepted in an
//! earlier run, under a service id the store holds) leave without waiting for it.
//!
//! What this run has not checked yet — the token (the MSP may have rotated it), the vendor key, the
//! service ids (a service may have been re-created) — decides what an early refusal means. An
//! accepted early count stands at once (Gradient holds it); any other early answer is read only
//! once the set-up has answered ([`Gate::verdict`]):
//! - the set-up succeeded: the answer counts as any other, unless the catalogue now names another
//!   service id for the module, and then the pair is pushed again under that id;
//! - the set-up failed: the answer is dropped, and the pair is decided with the rest by the
//!   set-up's failure — a 404 under a wrong vendor key never reads as "unmapped", a 401 never
//!   rejects a token the set-up did not reject.
//!
//! An early count that is not accepted ends the headstart: no further count leaves before the
//! set-up answers (a set-up that never answers does not hold accepted ones back). A count is
//! admitted before the pacer's queue, so as it leaves it is checked again ([`Gate::at_departure`]):
//! once the headstart is over and the set-up did not confirm its service id, it is withdrawn
//! unsent and admitted again. A connector whose token is not verified yet, a final zero, a pair never accepted
//! and the connector's last (rebuilding) push never lead. At a nearby Gradient (the set-up answers
//! within [`HEADSTART_AFTER`]) nothing leaves early: the run sends what it sent before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::plan::PlannedPush;
use super::tail::TAIL_FROM;
use crate::domain::ConnectorState;

/// How long a connector's set-up may take before its known pairs leave without it: a round trip
/// this long or longer is a distant Gradient (as for [`super::tail`]).
pub const HEADSTART_AFTER: Duration = TAIL_FROM;

/// Module → Gradient service id, as this run's catalogue has it.
pub type ServiceIds = Arc<HashMap<String, String>>;

/// Whether a pair of a connector in `state` may leave before the set-up answers: Gradient
/// accepted a count for it before, under the service id the store holds, and it is neither a
/// final zero nor the connector's `last` push. Pure.
pub fn may_lead(state: ConnectorState, pp: &PlannedPush, last: bool) -> bool {
    state == ConnectorState::Connected
        && !last
        && !pp.final_zero
        && pp.previous.is_some()
        && pp.service_id.is_some()
}

/// The pairs that may lead first, each group in the plan's order (the order in which pushes
/// reach the pacer). Pure.
pub fn leaders_first(state: ConnectorState, pushes: &mut [PlannedPush]) {
    // Stable: a connector none of whose pairs may lead keeps the plan's order.
    pushes.sort_by_key(|pp| !may_lead(state, pp, false));
}

#[derive(Debug, Clone)]
enum Opening {
    /// The set-up has not answered: every push waits.
    Pending,
    /// The set-up is slow: pairs that may lead leave.
    Headstart,
    /// The set-up succeeded: every push leaves, under this run's service ids.
    Open(ServiceIds),
    /// The set-up failed: no push leaves.
    Closed,
}

/// When a push may leave.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Before the set-up answered, under the pair's stored service id; its answer is read once
    /// the set-up has answered.
    Early,
    /// After a set-up that succeeded, under this run's service ids.
    Open(ServiceIds),
    /// The set-up failed: the push does not leave.
    Closed,
}

/// What a count admitted early finds as it leaves the pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDeparture {
    /// The headstart lasts: it leaves early.
    Early,
    /// The set-up succeeded and names the same service id: it leaves as any count.
    Confirmed,
    /// The headstart is over (an early count was refused, the set-up failed or names another
    /// service id): it does not leave, and is admitted again.
    Withdrawn,
}

/// One connector's gate: what its pushes wait for before they leave.
#[derive(Debug)]
pub struct Gate {
    state: watch::Sender<Opening>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: watch::Sender::new(Opening::Pending),
        }
    }
}

impl Gate {
    /// The set-up is slow: the pairs that may lead leave now.
    pub fn lead(&self) {
        self.state.send_if_modified(|s| {
            let pending = matches!(s, Opening::Pending);
            if pending {
                *s = Opening::Headstart;
            }
            pending
        });
    }

    /// An early count was not accepted: nothing more leaves before the set-up answers.
    pub fn refused(&self) {
        self.state.send_if_modified(|s| {
            let leading = matches!(s, Opening::Headstart);
            if leading {
                *s = Opening::Pending;
            }
            leading
        });
    }

    /// The set-up succeeded: every push leaves, under `ids`.
    pub fn open(&self, ids: ServiceIds) {
        self.state.send_replace(Opening::Open(ids));
    }

    /// The set-up failed: no push leaves any more.
    pub fn close(&self) {
        self.state.send_replace(Opening::Closed);
    }

    /// What a count admitted early under `service_id` finds as it leaves the pacer. Admission
    /// comes before the pacer's queue, so the gate may have moved on meanwhile.
    pub fn at_departure(&self, module: &str, service_id: &str) -> AtDeparture {
        match &*self.state.borrow() {
            Opening::Headstart => AtDeparture::Early,
            Opening::Open(ids) if ids.get(module).map(String::as_str) == Some(service_id) => {
                AtDeparture::Confirmed
            }
            Opening::Pending | Opening::Open(_) | Opening::Closed => AtDeparture::Withdrawn,
        }
    }

    /// Waits until a push may leave (`leads`: it may leave before the set-up answers).
    pub async fn admit(&self, leads: bool) -> Admission {
        let mut rx = self.state.subscribe();
        let seen = rx
            .wait_for(|s| match s {
                Opening::Pending => false,
                Opening::Headstart => leads,
                Opening::Open(_) | Opening::Closed => true,
            })
            .await;
        // The sender lives as long as `self`: the wait cannot fail.
        match seen.as_deref() {
            Ok(Opening::Headstart) => Admission::Early,
            Ok(Opening::Open(ids)) => Admission::Open(ids.clone()),
            Ok(Opening::Pending | Opening::Closed) | Err(_) => Admission::Closed,
        }
    }

    /// Waits until the set-up has answered: this run's service ids when it succeeded, None when
    /// it failed.
    pub async fn verdict(&self) -> Option<ServiceIds> {
        let mut rx = self.state.subscribe();
        let seen = rx
            .wait_for(|s| matches!(s, Opening::Open(_) | Opening::Closed))
            .await;
        match seen.as_deref() {
            Ok(Opening::Open(ids)) => Some(ids.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UnitCount;

    fn pair(account: &str, previous: bool, service: bool) -> PlannedPush {
        PlannedPush {
            account_id: account.into(),
            module: "edr".into(),
            service_id: service.then(|| "svc-1".into()),
            unit_count: UnitCount::whole(3),
            previous: previous.then(|| UnitCount::whole(2)),
            final_zero: false,
        }
    }

    #[test]
    fn only_pairs_gradient_accepted_before_lead_and_never_the_last() {
        let known = pair("a", true, true);
        assert!(may_lead(ConnectorState::Connected, &known, false));
        assert!(!may_lead(ConnectorState::Connected, &known, true));
        assert!(!may_lead(ConnectorState::Unverified, &known, false));
        assert!(!may_lead(
            ConnectorState::Connected,
            &pair("b", false, true),
            false
        ));
        assert!(!may_lead(
            ConnectorState::Connected,
            &pair("c", true, false),
            false
        ));
        let zero = PlannedPush {
            final_zero: true,
            ..known.clone()
        };
        assert!(!may_lead(ConnectorState::Connected, &zero, false));
        let mut pushes = vec![
            pair("new", false, true),
            known.clone(),
            pair("x", true, true),
        ];
        leaders_first(ConnectorState::Connected, &mut pushes);
        let order: Vec<&str> = pushes.iter().map(|p| p.account_id.as_str()).collect();
        assert_eq!(order, ["a", "x", "new"]);
        let mut pushes = vec![
            pair("new", false, true),
            known.clone(),
            pair("x", true, true),
        ];
        leaders_first(ConnectorState::Unverified, &mut pushes);
        let order: Vec<&str> = pushes.iter().map(|p| p.account_id.as_str()).collect();
        assert_eq!(
            order,
            ["new", "a", "x"],
            "an unverified connector keeps the plan's order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_set_up_lets_leaders_go_and_the_verdict_waits_for_its_answer() {
        let gate = Gate::default();
        let (lead, follow, verdict) = (gate.admit(true), gate.admit(false), gate.verdict());
        tokio::pin!(lead, follow, verdict);
        assert!(futures::poll!(lead.as_mut()).is_pending());
        gate.lead();
        assert!(matches!(
            futures::poll!(lead.as_mut()),
            std::task::Poll::Ready(Admission::Early)
        ));
        assert_eq!(gate.at_departure("edr", "svc-1"), AtDeparture::Early);
        assert!(futures::poll!(follow.as_mut()).is_pending());
        assert!(futures::poll!(verdict.as_mut()).is_pending());
        // A refused early count ends the headstart.
        gate.refused();
        assert!(futures::poll!(Box::pin(gate.admit(true))).is_pending());
        // Admitted early but still in the pacer's queue: withdrawn as it leaves.
        assert_eq!(gate.at_departure("edr", "svc-1"), AtDeparture::Withdrawn);
        let ids: ServiceIds = Arc::new(HashMap::from([("edr".into(), "svc-2".into())]));
        gate.open(ids);
        assert_eq!(gate.at_departure("edr", "svc-2"), AtDeparture::Confirmed);
        assert_eq!(gate.at_departure("edr", "svc-1"), AtDeparture::Withdrawn);
        assert!(matches!(
            futures::poll!(follow.as_mut()),
            std::task::Poll::Ready(Admission::Open(i)) if i["edr"] == "svc-2"
        ));
        assert!(matches!(
            futures::poll!(verdict.as_mut()),
            std::task::Poll::Ready(Some(_))
        ));
        // Opening is final: a late `lead` or `refused` changes nothing.
        gate.lead();
        gate.refused();
        assert!(matches!(gate.admit(false).await, Admission::Open(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_set_up_closes_the_gate_for_every_push() {
        let gate = Gate::default();
        gate.lead();
        gate.close();
        assert_eq!(gate.at_departure("edr", "svc-1"), AtDeparture::Withdrawn);
        assert!(matches!(gate.admit(true).await, Admission::Closed));
        assert!(matches!(gate.admit(false).await, Admission::Closed));
        assert!(gate.verdict().await.is_none());
    }
}
