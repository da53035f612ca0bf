//! Runs: one record per sync run (opened, closed with its outcome and counts, or closed
//! `interrupted` after a crash), the run lock that keeps one run at a time per store, and the
//! daemon's small bookkeeping (the last scheduled slot).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::{Cadence, RunOutcome, Tally, Trigger};
use crate::time::Millis;

/// A run record.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// What started it: `cli`, `schedule`, `signal`, `catch_up`.
    pub trigger: String,
    /// `daily` or `monthly`.
    pub cadence: String,
    /// Period label (`2026-11-22` or `2026-10`).
    pub period: String,
    /// The scheduled slot it ran for, if any.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub slot_at: Option<Millis>,
    /// Start.
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub started_at: Millis,
    /// End (None while running).
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub finished_at: Option<Millis>,
    /// Outcome (None while running).
    pub outcome: Option<RunOutcome>,
    /// Counts per outcome.
    pub tally: Tally,
    /// Summary or failure reason.
    pub message: Option<String>,
}

/// An exclusive lock that makes sure only one run writes at a time (daemon or `sync`).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the run lock next to the store, or says who holds it.
    pub fn try_acquire(store_path: &Path) -> Result<RunLock, StoreError> {
        let path = lock_path(store_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::RunInProgress),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Open {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether some process holds the lock now (for `status`).
    pub fn is_held(store_path: &Path) -> bool {
        let Ok(file) = File::open(lock_path(store_path)) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_path(store_path: &Path) -> PathBuf {
    let mut p = store_path.as_os_str().to_owned();
    p.push(".run-lock");
    PathBuf::from(p)
}

/// Closes every run left unfinished (a crash, a kill, an abandoned shutdown) as `interrupted`, with
/// the counts its ledger rows hold.
const INTERRUPT_UNFINISHED: &str = "UPDATE runs SET finished_at = ?1, outcome = 'interrupted',
    message = COALESCE(message, 'the run stopped before it finished (crash or shutdown)'),
    pushed = (SELECT count(*) FROM ledger l WHERE l.run_id = runs.id AND l.outcome = 'pushed'),
    unmapped = (SELECT count(*) FROM ledger l WHERE l.run_id = runs.id AND l.outcome = 'unmapped'),
    failed = (SELECT count(*) FROM ledger l WHERE l.run_id = runs.id AND l.outcome = 'failed'),
    rejected = (SELECT count(*) FROM ledger l WHERE l.run_id = runs.id AND l.outcome = 'rejected'),
    skipped_disabled = (SELECT count(*) FROM ledger l WHERE l.run_id = runs.id AND l.outcome = 'skipped_disabled')
 WHERE finished_at IS NULL";

/// `daemon_state` key: the latest scheduled slot a run was started for (milliseconds).
const LAST_SLOT: &str = "last_slot";

const RUN_COLUMNS: &str = "id, trigger, cadence, period, slot_at, started_at, finished_at, outcome, pushed, unmapped, failed, rejected, skipped_disabled, message";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        cadence: r.get(2)?,
        period: r.get(3)?,
        slot_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        outcome: r.get(7)?,
        tally: Tally {
            pushed: n(8)?,
            unmapped: n(9)?,
            failed: n(10)?,
            rejected: n(11)?,
            skipped_disabled: n(12)?,
        },
        message: r.get(13)?,
    })
}

impl Store {
    // ---- runs ----

    /// Opens a run record and returns its id.
    /// Marks runs left unfinished by a crash `interrupted`, opens a run and, for a scheduled slot,
    /// records the slot as taken — in one transaction, so a slot is taken exactly when its run
    /// starts. Returns the run id and how many earlier runs were marked interrupted.
    pub fn open_run(
        &mut self,
        trigger: Trigger,
        cadence: Cadence,
        period: &str,
        slot_at: Option<Millis>,
        now: Millis,
    ) -> Result<(i64, usize), StoreError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let interrupted = tx.execute(INTERRUPT_UNFINISHED, [now])?;
        tx.execute(
            "INSERT INTO runs (trigger, cadence, period, slot_at, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![trigger, cadence, period, slot_at, now],
        )?;
        let id = tx.last_insert_rowid();
        if let Some(slot) = slot_at {
            tx.execute(
                "INSERT INTO daemon_state (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                params![LAST_SLOT, slot],
            )?;
        }
        tx.commit()?;
        Ok((id, interrupted))
    }

    /// Closes a run with its outcome and counts.
    pub fn finish_run(
        &self,
        id: i64,
        outcome: RunOutcome,
        tally: &Tally,
        message: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, pushed = ?4, unmapped = ?5, failed = ?6,
                rejected = ?7, skipped_disabled = ?8, message = ?9 WHERE id = ?1",
            params![
                id,
                now,
                outcome.as_str(),
                tally.pushed as i64,
                tally.unmapped as i64,
                tally.failed as i64,
                tally.rejected as i64,
                tally.skipped_disabled as i64,
                message
            ],
        )?;
        Ok(())
    }

    /// Marks every unfinished run as interrupted (call only while holding the [`RunLock`]); their
    /// counts are taken from the ledger rows they wrote. Returns their ids, oldest first.
    pub fn mark_unfinished_interrupted(&self, now: Millis) -> Result<Vec<i64>, StoreError> {
        let ids = {
            let mut st = self
                .conn()
                .prepare("SELECT id FROM runs WHERE finished_at IS NULL ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<Vec<i64>, _>>()?
        };
        if !ids.is_empty() {
            self.conn().execute(INTERRUPT_UNFINISHED, [now])?;
        }
        Ok(ids)
    }

    /// The newest run.
    pub fn last_run(&self) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT 1"),
                [],
                run_row,
            )
            .optional()?)
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()?)
    }

    /// Newest runs first.
    pub fn runs(&self, limit: u32) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit], run_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- daemon state ----

    /// The latest scheduled slot a run was started for (None on a fresh store).
    pub fn last_slot(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self
            .state_get(LAST_SLOT)?
            .and_then(|v| v.parse::<Millis>().ok()))
    }

    /// A fresh store: remember where the schedule stands, so a slot missed later is known.
    pub fn anchor_schedule(&self, slot: Millis) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO daemon_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![LAST_SLOT, slot],
        )?;
        Ok(())
    }

    /// A bookkeeping value.
    pub fn state_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM daemon_state WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets a bookkeeping value.
    pub fn state_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO daemon_state (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}
