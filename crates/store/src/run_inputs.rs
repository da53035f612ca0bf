//! What one run reads before it talks to Gradient, read in **one** read transaction so that a run
//! never straddles an import: connectors and their tokens, the inventory's workspaces, the counts
//! for the run's period, the last-known pushed counts and Gradient's service ids.

use std::collections::HashMap;

use secrecy::SecretString;

use super::counting::{count_as_of, count_month, Counts, ServiceUnit};
use super::ledger::{ConnectorRow, LastKnown, WorkspaceRow};
use super::{Store, StoreError};
use crate::domain::MonthlyCount;
use crate::time::Millis;

/// Which figures a run counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountQuestion {
    /// As of one instant (daily cadence).
    AsOf(Millis),
    /// Over `[from, to)` by `how` (monthly cadence).
    Month {
        /// Start of the month.
        from: Millis,
        /// Start of the next month.
        to: Millis,
        /// How the month becomes one figure.
        how: MonthlyCount,
    },
}

/// Everything a run reads from the store, consistent as of one moment.
#[derive(Debug, Default)]
pub struct RunInputs {
    /// Connectors (only the one asked for, when one was) with their tokens.
    pub connectors: Vec<(ConnectorRow, Option<SecretString>)>,
    /// Every workspace of the inventory.
    pub workspaces: Vec<WorkspaceRow>,
    /// The figures for the run's period.
    pub counts: Counts,
    /// The last count Gradient accepted per pair.
    pub last_known: Vec<LastKnown>,
    /// Module → Gradient service id, as stored.
    pub service_ids: HashMap<String, String>,
    /// (connector, account) pairs owed a final zero (offboarded workspaces).
    pub offboarding: Vec<(String, String)>,
}

impl Store {
    /// Reads a run's inputs in one read transaction (an import committing meanwhile is either all
    /// in or all out).
    pub fn load_run_inputs(
        &mut self,
        only: Option<&str>,
        services: &[ServiceUnit],
        question: CountQuestion,
    ) -> Result<RunInputs, StoreError> {
        self.conn_mut().execute_batch("BEGIN DEFERRED")?;
        let read = self.read_run_inputs(only, services, question);
        // A read transaction has nothing to keep: end it either way.
        let _ = self.conn().execute_batch("COMMIT");
        read
    }

    fn read_run_inputs(
        &self,
        only: Option<&str>,
        services: &[ServiceUnit],
        question: CountQuestion,
    ) -> Result<RunInputs, StoreError> {
        let mut connectors = Vec::new();
        for c in self.connectors()? {
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            let token = self.token(&c.id)?;
            connectors.push((c, token));
        }
        let counts = match question {
            CountQuestion::AsOf(at) => count_as_of(self.conn(), services, at)?,
            CountQuestion::Month { from, to, how } => {
                count_month(self.conn(), services, from, to, how)?
            }
        };
        Ok(RunInputs {
            connectors,
            workspaces: self.workspaces()?,
            counts,
            last_known: self.last_known(only)?,
            service_ids: self
                .service_ids()?
                .into_iter()
                .map(|(m, (_, id))| (m, id))
                .collect(),
            offboarding: self
                .offboarding_due()?
                .into_iter()
                .filter(|o| only.is_none_or(|c| c == o.connector_id))
                .map(|o| (o.connector_id, o.account_id))
                .collect(),
        })
    }

    /// The figures for one question (the same statements a run uses).
    pub fn count(
        &self,
        services: &[ServiceUnit],
        question: CountQuestion,
    ) -> Result<Counts, StoreError> {
        match question {
            CountQuestion::AsOf(at) => count_as_of(self.conn(), services, at),
            CountQuestion::Month { from, to, how } => {
                count_month(self.conn(), services, from, to, how)
            }
        }
    }
}

/// How large the inventory is (for the benchmark, `status` and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InventorySize {
    /// Channels (MSPs).
    pub channels: u64,
    /// Workspaces (accounts).
    pub workspaces: u64,
    /// Units (users and devices) ever seen.
    pub units: u64,
    /// Protection intervals.
    pub unit_intervals: u64,
}

impl Store {
    /// Row counts of the inventory's tables.
    pub fn inventory_size(&self) -> Result<InventorySize, StoreError> {
        let n = |table: &str| -> Result<u64, StoreError> {
            let v: i64 =
                self.conn()
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(v.max(0) as u64)
        };
        Ok(InventorySize {
            channels: n("channels")?,
            workspaces: n("workspaces")?,
            units: n("units")?,
            unit_intervals: n("unit_intervals")?,
        })
    }

    /// Every channel id, sorted.
    pub fn channel_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn().prepare("SELECT id FROM channels ORDER BY id")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The figures of one question computed by its single SQL statement (`counting::as_of_query` /
    /// `counting::month_query`) instead of the run's path (the monthly peak's sweep): a cross-check
    /// for tests and the benchmark. Rows: `(workspace, module, count)`, sorted.
    pub fn count_by_statement(
        &self,
        services: &[ServiceUnit],
        question: CountQuestion,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let (sql, params) = statement(services, question);
        let mut st = self.conn().prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        let mut out: Vec<(String, String, u64)> = rows.collect::<Result<_, _>>()?;
        out.sort();
        Ok(out)
    }

    /// SQLite's query plan of a question's single statement, one line per step (for the benchmark).
    pub fn query_plan(
        &self,
        services: &[ServiceUnit],
        question: CountQuestion,
    ) -> Result<Vec<String>, StoreError> {
        let (sql, params) = statement(services, question);
        let mut st = self.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
            Ok(format!(
                "{:>4} {:>4} {}",
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn statement(
    services: &[ServiceUnit],
    question: CountQuestion,
) -> (String, Vec<rusqlite::types::Value>) {
    match question {
        CountQuestion::AsOf(at) => super::counting::as_of_query(services, at),
        CountQuestion::Month { from, to, how } => {
            super::counting::month_query(services, from, to, how)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_store;

    #[test]
    fn a_run_reads_one_consistent_snapshot_and_leaves_no_transaction_open() {
        let (_d, mut s) = temp_store();
        let text = "{\"type\":\"channel\",\"id\":\"c\",\"name\":\"C\"}\n{\"type\":\"workspace\",\"id\":\"w\",\"channel\":\"c\",\"name\":\"W\"}\n";
        crate::import::import(&mut s, text.as_bytes(), 1_000).unwrap();
        let inputs = s
            .load_run_inputs(None, &[], CountQuestion::AsOf(2_000))
            .unwrap();
        assert_eq!(inputs.workspaces.len(), 1);
        assert!(s.conn().is_autocommit(), "the read transaction is closed");
        // Only one connector asked for: none exists.
        let inputs = s
            .load_run_inputs(Some("nope"), &[], CountQuestion::AsOf(2_000))
            .unwrap();
        assert!(inputs.connectors.is_empty());
    }
}
