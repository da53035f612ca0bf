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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store;

    #[test]
    fn a_run_reads_one_consistent_snapshot_and_leaves_no_transaction_open() {
        let (_d, mut s) = temp_store();
        let text = "{\"type\":\"channel\",\"id\":\"c\",\"name\":\"C\"}\n{\"type\":\"workspace\",\"id\":\"w\",\"channel\":\"c\",\"name\":\"W\"}\n";
        crate::store::import::import(&mut s, text.as_bytes(), 1_000).unwrap();
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
