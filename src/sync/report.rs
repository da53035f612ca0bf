//! What a run tells: its report (per connector and in all) and the `connector.synced` events
//! its close writes.

use super::*;

/// One connector's part of a run.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    pub disabled: Vec<(String, String, Option<UnitCount>)>,
    /// Anything the operator should know.
    pub note: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// The run was closed by its deadline (`[gradient] run_deadline_secs`).
    #[serde(default)]
    pub deadline_passed: bool,
    /// What stopped the run before its end, if anything did.
    #[serde(default)]
    pub stopped_by: Option<StopKind>,
}

impl RunReport {
    /// Whether the run's failures are worth retrying at the next run (failed or rejected pairs)
    /// rather than a reason the message explains (the catalogue could not be read, 403, ...).
    pub fn is_transient(&self) -> bool {
        match self.outcome {
            RunOutcome::Ok => false,
            RunOutcome::Interrupted | RunOutcome::Partial => true,
            RunOutcome::Failed => match self.stopped_by {
                // Nothing was tried: the next pull may make the inventory fresh again.
                Some(StopKind::StaleInventory) => true,
                other => {
                    self.tally.failed + self.tally.rejected > 0
                        && other.is_none_or(StopKind::is_transient)
                }
            },
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

/// One connector's part of a run, as `connector.synced` tells it.
#[derive(Debug, Clone)]
pub struct SyncedPart {
    /// Connector id.
    pub connector: String,
    /// Its counts (from the ledger).
    pub tally: Tally,
    /// Its own outcome ([`plan::connector_outcome`]).
    pub outcome: RunOutcome,
}

/// The `data` of each `connector.synced` event of run `run_id` (pure): connector, run, outcome,
/// counts (as in `/v1/runs`) and `pushed` — what Gradient accepted, each service by its configured
/// name (`names`: module → name; the module id when not configured), a quantity with its unit name
/// (`quantities`: module → `GB`; null for unit services).
pub fn synced_events(
    run_id: i64,
    parts: &[SyncedPart],
    pushed: &[(String, String, String, UnitCount)],
    names: &HashMap<String, String>,
    quantities: &HashMap<String, String>,
) -> Vec<serde_json::Value> {
    parts
        .iter()
        .map(|p| {
            let accepted: Vec<serde_json::Value> = pushed
                .iter()
                .filter(|(c, _, _, _)| *c == p.connector)
                .map(|(_, account, module, count)| {
                    serde_json::json!({
                        "account": account,
                        "service": names.get(module).unwrap_or(module),
                        "module": module,
                        "unit_count": count,
                        "quantity_name": quantities.get(module),
                    })
                })
                .collect();
            serde_json::json!({
                "connector": p.connector,
                "run": run_id,
                "outcome": p.outcome,
                "counts": p.tally,
                "pushed": accepted,
            })
        })
        .collect()
}
