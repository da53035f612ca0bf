//! Planning: pure functions that decide what a run sends — which services exist in Gradient, which
//! accounts to create or rename, which (account, service, unit count) pairs to push, and how a run's
//! outcomes add up. No I/O here.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::UnitCount;
use crate::domain::{Cadence, RunOutcome, Tally};
use crate::store::counting::Counts;
use crate::store::ledger::WorkspaceRow;
use crate::time::{Millis, Month, Period};

/// One push to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPush {
    /// Account (workspace) id.
    pub account_id: String,
    /// Module (our name for the service).
    pub module: String,
    /// Gradient's service id, when known.
    pub service_id: Option<String>,
    /// The count to set.
    pub unit_count: UnitCount,
    /// The count last accepted by Gradient for this pair, if any.
    pub previous: Option<UnitCount>,
    /// A final zero for an account whose workspace left this MSP (removed or moved).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub final_zero: bool,
}

/// A pair whose module is disabled: nothing is sent; Gradient keeps the last value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisabledPair {
    /// Account id.
    pub account_id: String,
    /// Module.
    pub module: String,
    /// Last count Gradient accepted, which it keeps showing.
    pub last_known: Option<UnitCount>,
}

/// What one connector's part of a run sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorPlan {
    /// Connector (channel) id.
    pub connector_id: String,
    /// Pushes, ordered by account then module.
    pub pushes: Vec<PlannedPush>,
    /// Disabled pairs.
    pub disabled: Vec<DisabledPair>,
}

/// Builds a connector's plan from the counts of all workspaces.
pub fn plan_connector(
    connector_id: &str,
    workspaces: &[WorkspaceRow],
    counts: &Counts,
    service_ids: &HashMap<String, String>,
    last_known: &HashMap<(String, String), UnitCount>,
) -> ConnectorPlan {
    let lk = HashMap::from([(connector_id.to_string(), last_known.clone())]);
    plan_connectors(&[connector_id], workspaces, counts, service_ids, &lk)
        .remove(connector_id)
        .unwrap_or_default()
}

/// Builds the plans of several connectors in one pass over the counts.
/// `last_known` is per connector: (account, module) → last count Gradient accepted.
pub fn plan_connectors(
    connector_ids: &[&str],
    workspaces: &[WorkspaceRow],
    counts: &Counts,
    service_ids: &HashMap<String, String>,
    last_known: &HashMap<String, HashMap<(String, String), UnitCount>>,
) -> HashMap<String, ConnectorPlan> {
    let mut plans: HashMap<String, ConnectorPlan> = connector_ids
        .iter()
        .map(|id| {
            (
                id.to_string(),
                ConnectorPlan {
                    connector_id: id.to_string(),
                    ..ConnectorPlan::default()
                },
            )
        })
        .collect();
    let channel_of: HashMap<&str, &str> = workspaces
        .iter()
        .map(|w| (w.id.as_str(), w.channel_id.as_str()))
        .collect();
    let previous = |channel: &str, a: &str, m: &str| {
        last_known
            .get(channel)
            .and_then(|lk| lk.get(&(a.to_string(), m.to_string())))
            .copied()
    };
    for f in &counts.figures {
        let Some(channel) = channel_of.get(f.workspace_id.as_str()) else {
            continue;
        };
        if let Some(plan) = plans.get_mut(*channel) {
            plan.pushes.push(PlannedPush {
                account_id: f.workspace_id.clone(),
                module: f.module.clone(),
                service_id: service_ids.get(&f.module).cloned(),
                unit_count: f.unit_count,
                previous: previous(channel, &f.workspace_id, &f.module),
                final_zero: false,
            });
        }
    }
    for (w, m) in &counts.disabled {
        let Some(channel) = channel_of.get(w.as_str()) else {
            continue;
        };
        if let Some(plan) = plans.get_mut(*channel) {
            plan.disabled.push(DisabledPair {
                account_id: w.clone(),
                module: m.clone(),
                last_known: previous(channel, w, m),
            });
        }
    }
    for plan in plans.values_mut() {
        plan.pushes
            .sort_by(|a, b| (&a.account_id, &a.module).cmp(&(&b.account_id, &b.module)));
        plan.disabled
            .sort_by(|a, b| (&a.account_id, &a.module).cmp(&(&b.account_id, &b.module)));
    }
    plans
}

/// Adds the final zeros owed to MSPs whose workspaces left them (removed, or moved to another
/// channel): one push of 0 per service Gradient holds a non-zero value for (its last-known count),
/// to the old MSP's account. Pure.
pub fn add_final_zeros(
    plans: &mut HashMap<String, ConnectorPlan>,
    due: &[(String, String)],
    service_ids: &HashMap<String, String>,
    last_known: &HashMap<String, HashMap<(String, String), UnitCount>>,
) {
    for (connector, account) in due {
        let (Some(plan), Some(lk)) = (plans.get_mut(connector), last_known.get(connector)) else {
            continue;
        };
        let mut owed: Vec<(&String, UnitCount)> = lk
            .iter()
            .filter(|((a, _), n)| a == account && **n > UnitCount::ZERO)
            .map(|((_, m), n)| (m, *n))
            .collect();
        owed.sort();
        for (module, n) in owed {
            plan.pushes.push(PlannedPush {
                account_id: account.clone(),
                module: module.clone(),
                service_id: service_ids.get(module).cloned(),
                unit_count: UnitCount::ZERO,
                previous: Some(n),
                final_zero: true,
            });
        }
    }
}

/// The outcome of a run from its tally: `failed` when it was aborted or nothing got through while
/// something failed, `partial` when some pairs failed or were rejected, else `ok`.
pub fn run_outcome(tally: &Tally, aborted: bool, interrupted: bool) -> RunOutcome {
    if interrupted {
        return RunOutcome::Interrupted;
    }
    let bad = tally.failed + tally.rejected;
    let good = tally.pushed + tally.unmapped;
    if aborted || (bad > 0 && good == 0) {
        RunOutcome::Failed
    } else if bad > 0 {
        RunOutcome::Partial
    } else {
        RunOutcome::Ok
    }
}

/// One connector's own outcome in a run (`connector.synced`): interrupted with the run; failed
/// when its token was rejected or nothing it sent went through; partial when some pairs failed or
/// were rejected; else ok.
pub fn connector_outcome(tally: &Tally, token_rejected: bool, interrupted: bool) -> RunOutcome {
    if token_rejected && !interrupted {
        return RunOutcome::Failed;
    }
    run_outcome(tally, false, interrupted)
}

/// The period a run counts: an explicit month, or by cadence relative to `reference` (the slot of a
/// scheduled run, else now): daily → as of now; monthly → the month before the reference's month.
pub fn period_for(
    explicit: Option<Month>,
    cadence: Cadence,
    tz: chrono_tz::Tz,
    reference: Millis,
    now: Millis,
) -> Period {
    match (explicit, cadence) {
        (Some(m), _) => Period::Month(m),
        (None, Cadence::Daily) => Period::AsOf(now),
        (None, Cadence::Monthly) => Period::Month(Month::containing(reference, tz).previous()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::counting::Figure;

    fn ws(id: &str, ch: &str, name: &str) -> WorkspaceRow {
        WorkspaceRow {
            id: id.into(),
            channel_id: ch.into(),
            name: name.into(),
        }
    }

    #[test]
    fn plan_takes_only_the_channels_workspaces_and_keeps_disabled_aside() {
        let workspaces = vec![ws("a", "c1", "A"), ws("b", "c1", "B"), ws("x", "c2", "X")];
        let counts = Counts {
            figures: vec![
                Figure {
                    workspace_id: "b".into(),
                    module: "m".into(),
                    unit_count: 0.into(),
                },
                Figure {
                    workspace_id: "a".into(),
                    module: "m".into(),
                    unit_count: 3.into(),
                },
                Figure {
                    workspace_id: "x".into(),
                    module: "m".into(),
                    unit_count: 9.into(),
                },
            ],
            disabled: vec![("a".into(), "n".into())],
        };
        let ids = HashMap::from([("m".to_string(), "sid".to_string())]);
        let lk = HashMap::from([
            (("a".to_string(), "m".to_string()), 2u64.into()),
            (("a".to_string(), "n".to_string()), 7u64.into()),
        ]);
        let p = plan_connector("c1", &workspaces, &counts, &ids, &lk);
        let got: Vec<(&str, u64, Option<u64>)> = p
            .pushes
            .iter()
            .map(|p| {
                let previous = p.previous.map(UnitCount::whole_part);
                (p.account_id.as_str(), p.unit_count.whole_part(), previous)
            })
            .collect();
        assert_eq!(got, vec![("a", 3, Some(2)), ("b", 0, None)]);
        assert_eq!(p.pushes[0].service_id.as_deref(), Some("sid"));
        assert_eq!(
            p.disabled,
            vec![DisabledPair {
                account_id: "a".into(),
                module: "n".into(),
                last_known: Some(7.into())
            }]
        );
    }

    #[test]
    fn outcomes() {
        let t = |pushed, failed, rejected| Tally {
            pushed,
            failed,
            rejected,
            ..Tally::default()
        };
        assert_eq!(run_outcome(&t(3, 0, 0), false, false), RunOutcome::Ok);
        assert_eq!(run_outcome(&t(0, 0, 0), false, false), RunOutcome::Ok);
        assert_eq!(run_outcome(&t(3, 1, 0), false, false), RunOutcome::Partial);
        assert_eq!(run_outcome(&t(0, 0, 2), false, false), RunOutcome::Failed);
        assert_eq!(run_outcome(&t(3, 0, 0), true, false), RunOutcome::Failed);
        assert_eq!(
            run_outcome(&t(3, 0, 0), false, true),
            RunOutcome::Interrupted
        );
        // A connector's own outcome: a rejected token fails it even with nothing planned.
        assert_eq!(
            connector_outcome(&t(0, 0, 0), true, false),
            RunOutcome::Failed
        );
        assert_eq!(connector_outcome(&t(0, 0, 0), false, false), RunOutcome::Ok);
        assert_eq!(
            connector_outcome(&t(2, 0, 1), false, false),
            RunOutcome::Partial
        );
        assert_eq!(
            connector_outcome(&t(2, 1, 0), false, false),
            RunOutcome::Partial
        );
        assert_eq!(
            connector_outcome(&t(0, 1, 0), false, false),
            RunOutcome::Failed
        );
        assert_eq!(
            connector_outcome(&t(2, 0, 0), true, true),
            RunOutcome::Interrupted
        );
    }

    #[test]
    fn monthly_period_is_the_month_before_the_slot() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let slot = crate::time::parse_rfc3339("2026-11-01T12:00:00Z").unwrap();
        assert_eq!(
            period_for(None, Cadence::Monthly, ny, slot, slot + 86_400_000),
            Period::Month(Month {
                year: 2026,
                month: 10
            })
        );
        assert_eq!(
            period_for(None, Cadence::Daily, ny, slot, slot + 5),
            Period::AsOf(slot + 5)
        );
    }
}

#[cfg(test)]
mod final_zero_tests {
    use super::*;

    fn plans(ids: &[&str]) -> HashMap<String, ConnectorPlan> {
        ids.iter()
            .map(|id| {
                (
                    id.to_string(),
                    ConnectorPlan {
                        connector_id: id.to_string(),
                        ..ConnectorPlan::default()
                    },
                )
            })
            .collect()
    }

    fn known(
        entries: &[(&str, &str, &str, u64)],
    ) -> HashMap<String, HashMap<(String, String), UnitCount>> {
        let mut out: HashMap<String, HashMap<(String, String), UnitCount>> = HashMap::new();
        for (c, a, m, n) in entries {
            out.entry(c.to_string())
                .or_default()
                .insert((a.to_string(), m.to_string()), (*n).into());
        }
        out
    }

    #[test]
    fn a_leaving_account_gets_one_zero_per_service_gradient_holds_a_non_zero_for() {
        let mut p = plans(&["old", "other"]);
        let services: HashMap<String, String> = [("edr".to_string(), "sku-edr".to_string())].into();
        let lk = known(&[
            ("old", "ws-1", "edr", 7),
            ("old", "ws-1", "mail", 3),
            ("old", "ws-1", "backup", 0), // Gradient holds 0 already: nothing owed
            ("old", "ws-2", "edr", 5),    // another account: untouched
            ("other", "ws-1", "edr", 9),  // the same id under another MSP: untouched
        ]);
        add_final_zeros(
            &mut p,
            &[("old".to_string(), "ws-1".to_string())],
            &services,
            &lk,
        );
        let pushes = &p["old"].pushes;
        type Row<'a> = (&'a str, &'a str, u64, Option<u64>, Option<&'a str>, bool);
        let got: Vec<Row> = pushes
            .iter()
            .map(|x| {
                (
                    x.account_id.as_str(),
                    x.module.as_str(),
                    x.unit_count.whole_part(),
                    x.previous.map(UnitCount::whole_part),
                    x.service_id.as_deref(),
                    x.final_zero,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("ws-1", "edr", 0, Some(7), Some("sku-edr"), true),
                ("ws-1", "mail", 0, Some(3), None, true),
            ]
        );
        assert!(p["other"].pushes.is_empty());
    }

    #[test]
    fn nothing_is_owed_to_a_connector_not_in_the_run_or_without_known_counts() {
        let mut p = plans(&["a"]);
        let lk = known(&[("b", "ws", "edr", 4)]);
        add_final_zeros(
            &mut p,
            &[
                ("b".to_string(), "ws".to_string()),
                ("a".to_string(), "ws".to_string()),
            ],
            &HashMap::new(),
            &lk,
        );
        assert!(p["a"].pushes.is_empty());
        assert!(!p.contains_key("b"));
    }
}
