//! The ledger: one row per (run, connector, account, service) — what was pushed, and what happened
//! to every other pair — the last-known pushed counts, history, and the inventory reads a run needs.
//! Connectors live in [`super::connectors`], runs and the run lock in [`super::runs`]; their row
//! types are re-exported here, where the rest of the product has always found them.

use std::collections::HashMap;

use rusqlite::params;
use serde::Serialize;

pub use super::connectors::ConnectorRow;
pub use super::runs::{RunLock, RunRow};
use super::{Store, StoreError};
use crate::count::UnitCount;
use crate::domain::{PairOutcome, Tally};
use crate::time::Millis;

/// One ledger row to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    /// Run.
    pub run_id: i64,
    /// Connector (channel).
    pub connector_id: String,
    /// Account (workspace).
    pub account_id: String,
    /// Module (service).
    pub module: String,
    /// Gradient's service id, when known.
    pub service_id: Option<String>,
    /// The count sent (or that would have been sent); None when none applies.
    pub unit_count: Option<UnitCount>,
    /// Outcome.
    pub outcome: PairOutcome,
    /// Gradient's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Requests made for this pair.
    pub attempts: u32,
    /// Why, for failures.
    pub reason: Option<String>,
    /// When (RFC 3339 UTC in JSON).
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
}

impl LedgerEntry {
    /// A row for unit tests: pair (`connector`, `account`, module `m`, service `s`), count 1,
    /// one attempt answered 200.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_test(
        run: i64,
        connector: &str,
        account: &str,
        outcome: PairOutcome,
        at: Millis,
    ) -> LedgerEntry {
        LedgerEntry {
            run_id: run,
            connector_id: connector.into(),
            account_id: account.into(),
            module: "m".into(),
            service_id: Some("s".into()),
            unit_count: Some(UnitCount::whole(1)),
            outcome,
            http_status: Some(200),
            attempts: 1,
            reason: None,
            at,
        }
    }
}

/// A ledger row read back.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerRow {
    /// Row id (increasing).
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// The previous pushed count of the same pair before this row, when asked for.
    pub previous_count: Option<UnitCount>,
}

/// The last count Gradient accepted for a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastKnown {
    /// Connector.
    pub connector_id: String,
    /// Account.
    pub account: String,
    /// Module (service).
    pub service: String,
    /// Count.
    pub unit_count: UnitCount,
    /// When it was pushed.
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub pushed_at: Millis,
}

/// A workspace of the inventory (= a Gradient account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    /// Id (= account id).
    pub id: String,
    /// Its channel.
    pub channel_id: String,
    /// Name (= account name).
    pub name: String,
}

/// Filter for [`Store::history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only this connector.
    pub connector: Option<String>,
    /// Only this run.
    pub run: Option<i64>,
    /// Only pushed rows whose count differs from the pair's previous pushed count.
    pub changes: bool,
    /// At most this many rows.
    pub limit: u32,
}

fn ledger_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        id: r.get(0)?,
        entry: LedgerEntry {
            run_id: r.get(1)?,
            connector_id: r.get(2)?,
            account_id: r.get(3)?,
            module: r.get(4)?,
            service_id: r.get(5)?,
            unit_count: r.get(6)?,
            outcome: r.get(7)?,
            http_status: r.get::<_, Option<i64>>(8)?.map(|s| s as u16),
            attempts: r.get::<_, i64>(9)?.max(0) as u32,
            reason: r.get(10)?,
            at: r.get(11)?,
        },
        previous_count: r.get(12)?,
    })
}

impl Store {
    // ---- inventory reads used by sync ----

    /// Every workspace with its channel and current name, ordered by channel then id.
    pub fn workspaces(&self) -> Result<Vec<WorkspaceRow>, StoreError> {
        self.workspaces_where("", [])
    }

    /// The workspaces of one channel (its connector's accounts), by id.
    pub fn channel_workspaces(&self, channel: &str) -> Result<Vec<WorkspaceRow>, StoreError> {
        self.workspaces_where("AND channel_id = ?1", [channel])
    }

    fn workspaces_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<WorkspaceRow>, StoreError> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT id, channel_id, name FROM workspaces WHERE removed_at IS NULL {filter} ORDER BY channel_id, id"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok(WorkspaceRow {
                id: r.get(0)?,
                channel_id: r.get(1)?,
                name: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether the inventory knows this channel.
    pub fn channel_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM channels WHERE id = ?1")?
            .exists([id])?)
    }

    // ---- ledger ----

    /// Writes ledger rows in one transaction and updates the last-known count of every pushed pair.
    pub fn record(&mut self, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        let tx = self.conn_mut().transaction()?;
        {
            // One row per pair of a run (the schema's `ledger_one_per_pair`): a second row for a
            // pair is a bug upstream; the first row, written when Gradient answered, stands.
            let mut insert = tx.prepare_cached(
                "INSERT INTO ledger (run_id, connector_id, account_id, module, service_id, unit_count,
                    outcome, http_status, attempts, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (run_id, connector_id, account_id, module) DO NOTHING",
            )?;
            let mut last = tx.prepare_cached(
                "INSERT INTO last_known (connector_id, account_id, module, unit_count, pushed_at, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (connector_id, account_id, module) DO UPDATE SET
                    unit_count = excluded.unit_count, pushed_at = excluded.pushed_at, run_id = excluded.run_id",
            )?;
            for e in entries {
                let count = e.unit_count;
                let written = insert.execute(params![
                    e.run_id,
                    e.connector_id,
                    e.account_id,
                    e.module,
                    e.service_id,
                    count,
                    e.outcome.as_str(),
                    e.http_status,
                    e.attempts,
                    e.reason,
                    e.at
                ])?;
                if written == 0 {
                    tracing::error!(
                        run_id = e.run_id,
                        connector = %e.connector_id,
                        account = %crate::domain::escape(&e.account_id),
                        module = %e.module,
                        "a second ledger row for a pair of this run was refused; the first stands"
                    );
                    continue;
                }
                if e.outcome == PairOutcome::Pushed {
                    if let Some(c) = count {
                        last.execute(params![
                            e.connector_id,
                            e.account_id,
                            e.module,
                            c,
                            e.at,
                            e.run_id
                        ])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Last-known pushed counts, for one connector or all.
    pub fn last_known(&self, connector: Option<&str>) -> Result<Vec<LastKnown>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT connector_id, account_id, module, unit_count, pushed_at FROM last_known
             WHERE ?1 IS NULL OR connector_id = ?1 ORDER BY connector_id, account_id, module",
        )?;
        let rows = stmt.query_map([connector], |r| {
            Ok(LastKnown {
                connector_id: r.get(0)?,
                account: r.get(1)?,
                service: r.get(2)?,
                unit_count: r.get(3)?,
                pushed_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pairs whose latest ledger row has one of `outcomes` (e.g. the unmapped or failing pairs now).
    pub fn latest_with_outcome(
        &self,
        outcomes: &[PairOutcome],
        connector: Option<&str>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let list: Vec<String> = outcomes
            .iter()
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        // One connector: its pairs' newest rows come straight off `ledger_by_pair`.
        let only = if connector.is_some() {
            "WHERE connector_id = ?1"
        } else {
            ""
        };
        let sql = format!(
            "WITH latest AS (SELECT MAX(id) AS id FROM ledger {only} GROUP BY connector_id, account_id, module)
             SELECT l.id, l.run_id, l.connector_id, l.account_id, l.module, l.service_id, l.unit_count,
                    l.outcome, l.http_status, l.attempts, l.reason, l.at, NULL
             FROM ledger l JOIN latest USING (id)
             JOIN connectors c ON c.id = l.connector_id AND c.state != 'disconnected'
             WHERE l.outcome IN ({})
             ORDER BY l.connector_id, l.account_id, l.module",
            list.join(", ")
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = match connector {
            Some(id) => stmt.query_map([id], ledger_row)?,
            None => stmt.query_map([], ledger_row)?,
        };
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One connector's counts per outcome in one run.
    pub fn run_tally_of(&self, run_id: i64, connector: &str) -> Result<Tally, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT outcome, count(*) FROM ledger WHERE connector_id = ?1 AND run_id = ?2 GROUP BY outcome",
        )?;
        let rows = stmt.query_map(rusqlite::params![connector, run_id], |r| {
            Ok((r.get::<_, PairOutcome>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Tally::default();
        for row in rows {
            let (o, n) = row?;
            out.add_n(o, n.max(0) as u64);
        }
        Ok(out)
    }

    /// Ledger rows, newest first.
    pub fn history(&self, f: &HistoryFilter) -> Result<Vec<LedgerRow>, StoreError> {
        // previous_count: the count of the same pair's previous *pushed* row.
        let sql = "WITH rows AS (
                SELECT l.*, (SELECT p.unit_count FROM ledger p
                             WHERE p.connector_id = l.connector_id AND p.account_id = l.account_id
                               AND p.module = l.module AND p.id < l.id AND p.outcome = 'pushed'
                             ORDER BY p.id DESC LIMIT 1) AS previous_count
                FROM ledger l
                WHERE (?1 IS NULL OR l.connector_id = ?1) AND (?2 IS NULL OR l.run_id = ?2)
                  AND (?3 = 0 OR l.outcome = 'pushed')
             )
             SELECT id, run_id, connector_id, account_id, module, service_id, unit_count, outcome,
                    http_status, attempts, reason, at, previous_count
             FROM rows
             WHERE ?3 = 0 OR previous_count IS NULL OR previous_count != unit_count
             ORDER BY id DESC LIMIT ?4";
        let mut stmt = self.conn().prepare(sql)?;
        let rows = stmt.query_map(
            params![f.connector, f.run, f.changes as i64, f.limit],
            ledger_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What Gradient accepted in one run: (connector, account, module, count) of every pushed
    /// ledger row, by connector, account and module.
    pub fn pushed_in_run(
        &self,
        run_id: i64,
    ) -> Result<Vec<(String, String, String, UnitCount)>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT connector_id, account_id, module, unit_count FROM ledger
             WHERE run_id = ?1 AND outcome = 'pushed' AND unit_count IS NOT NULL
             ORDER BY connector_id, account_id, module, id",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per-connector counts per outcome of one run.
    pub fn run_tally_by_connector(
        &self,
        run_id: i64,
    ) -> Result<HashMap<String, Tally>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT connector_id, outcome, count(*) FROM ledger WHERE run_id = ?1 GROUP BY connector_id, outcome",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, PairOutcome>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out: HashMap<String, Tally> = HashMap::new();
        for row in rows {
            let (c, o, n) = row?;
            out.entry(c).or_default().add_n(o, n.max(0) as u64);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cadence, ConnectorState, RunOutcome, Trigger};
    use crate::temp_store;
    use secrecy::SecretString;

    fn entry(run: i64, acct: &str, n: u64, o: PairOutcome) -> LedgerEntry {
        LedgerEntry {
            run_id: run,
            connector_id: "c".into(),
            account_id: acct.into(),
            module: "m".into(),
            service_id: Some("s".into()),
            unit_count: Some(UnitCount::whole(n)),
            outcome: o,
            http_status: Some(201),
            attempts: 1,
            reason: None,
            at: run * 1000,
        }
    }

    #[test]
    fn token_state_is_guarded_by_token_generation() {
        let (_d, s) = temp_store();
        s.set_token("c", &SecretString::from("old".to_string()), 1)
            .unwrap();
        s.set_token("c", &SecretString::from("new".to_string()), 2)
            .unwrap();
        // A failure seen with the old token (generation 1) does not touch the new one.
        assert!(!s
            .set_connector_state("c", Some(1), ConnectorState::TokenRejected, "401", 3)
            .unwrap());
        assert_eq!(
            s.connector("c").unwrap().unwrap().state,
            ConnectorState::Unverified
        );
        assert!(s
            .mark_connected("c", Some(2), Some("pending"), None, None, 4)
            .unwrap());
        let row = s.connector("c").unwrap().unwrap();
        assert_eq!(row.state, ConnectorState::Connected);
        assert!(!format!("{row:?}").contains("new"));
        s.disconnect("c", "by operator", 5).unwrap();
        assert!(s.token("c").unwrap().is_none());
    }

    #[test]
    fn ledger_updates_last_known_only_for_pushed_and_history_shows_changes() {
        let (_d, mut s) = temp_store();
        for run in 1..=3 {
            s.open_run(Trigger::Cli, Cadence::Daily, "p", None, run)
                .unwrap();
        }
        s.record(&[
            entry(1, "a", 5, PairOutcome::Pushed),
            entry(1, "b", 1, PairOutcome::Unmapped),
        ])
        .unwrap();
        s.record(&[entry(2, "a", 5, PairOutcome::Pushed)]).unwrap();
        s.record(&[
            entry(3, "a", 7, PairOutcome::Pushed),
            entry(3, "b", 1, PairOutcome::Failed),
        ])
        .unwrap();
        let lk = s.last_known(None).unwrap();
        assert_eq!(lk.len(), 1);
        assert_eq!(lk[0].unit_count, 7);
        let all = s
            .history(&HistoryFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].entry.run_id, 3, "newest first");
        let changes = s
            .history(&HistoryFilter {
                changes: true,
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        let counts: Vec<(i64, Option<u64>, Option<u64>)> = changes
            .iter()
            .map(|r| {
                let whole = |c: Option<UnitCount>| c.map(UnitCount::whole_part);
                (
                    r.entry.run_id,
                    whole(r.entry.unit_count),
                    whole(r.previous_count),
                )
            })
            .collect();
        assert_eq!(counts, vec![(3, Some(7), Some(5)), (1, Some(5), None)]);
    }

    #[test]
    fn unfinished_runs_become_interrupted_with_their_counts() {
        let (_d, mut s) = temp_store();
        let (id, _) = s
            .open_run(Trigger::Schedule, Cadence::Daily, "p", Some(10), 1)
            .unwrap();
        s.record(&[entry(id, "a", 5, PairOutcome::Pushed)]).unwrap();
        assert_eq!(s.mark_unfinished_interrupted(2).unwrap().len(), 1);
        let r = s.last_run().unwrap().unwrap();
        assert_eq!(r.outcome, Some(RunOutcome::Interrupted));
        assert_eq!(r.tally.pushed, 1);
        assert!(s.mark_unfinished_interrupted(3).unwrap().is_empty());
    }

    #[test]
    fn run_lock_is_exclusive() {
        let (d, _s) = temp_store();
        let p = d.path().join("s.db");
        let lock = RunLock::try_acquire(&p).unwrap();
        assert!(RunLock::is_held(&p));
        assert!(matches!(
            RunLock::try_acquire(&p),
            Err(StoreError::RunInProgress)
        ));
        drop(lock);
        assert!(!RunLock::is_held(&p));
        RunLock::try_acquire(&p).unwrap();
    }
}
