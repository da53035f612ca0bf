//! The store's lifecycle: an online backup ([`Store::backup_to`]), the ledger's size
//! ([`Store::ledger_stats`]), ledger retention ([`Store::prune_ledger`]) and the repair of
//! inventory history dated in the future by older builds ([`Store::redate_future`]).
//! (`PRAGMA integrity_check` is [`Store::integrity_check`].)

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{Store, StoreError};
use crate::time::Millis;

/// How far in the future a stored time may lie before it counts as future-dated (the import's
/// own tolerance for clock skew).
pub const FUTURE_TOLERANCE_MS: Millis = 5 * 60 * 1000;

/// The tables and columns that hold inventory times (what a future-dated record left behind).
const DATED: &[(&str, &str)] = &[
    ("unit_intervals", "from_at"),
    ("unit_intervals", "to_at"),
    ("module_intervals", "from_at"),
    ("module_intervals", "to_at"),
    ("channel_names", "at"),
    ("workspace_names", "at"),
    ("channels", "changed_at"),
    ("workspaces", "changed_at"),
    ("workspaces", "removed_at"),
    ("modules", "changed_at"),
    ("units", "changed_at"),
    ("offboarding", "since"),
];

/// How long a backup waits for a writer that holds the store.
const BACKUP_PATIENCE: Duration = Duration::from_secs(30);

/// The ledger's size, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerStats {
    /// Ledger rows.
    pub rows: u64,
    /// When the oldest row was written (None: empty).
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub oldest_at: Option<Millis>,
    /// The store file's size in bytes, its WAL included.
    pub store_bytes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ledger rows.
    pub ledger_rows: usize,
    /// Finished runs.
    pub runs: usize,
}

impl Store {
    /// Copies the store to `dest` with SQLite's online backup: a consistent snapshot even while
    /// the daemon writes, pages copied as they are (tokens stay sealed), a new file of mode 0600
    /// (an existing `dest` is refused), one self-contained file (no `-wal`).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dest.to_path_buf(),
            reason,
        };
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|e| {
                open_err(format!(
                    "{e}; a backup never overwrites a file: choose a new path"
                ))
            })?;
        let result = (|| {
            let mut out = Connection::open(dest)?;
            {
                use rusqlite::backup::StepResult;
                let b = rusqlite::backup::Backup::new(self.conn(), &mut out)?;
                // All pages in one step (-1): one read snapshot of the source, hence consistent
                // while the daemon writes.
                let mut waited = Duration::ZERO;
                loop {
                    match b.step(-1)? {
                        StepResult::Done => break,
                        StepResult::More => {}
                        StepResult::Busy | StepResult::Locked if waited < BACKUP_PATIENCE => {
                            std::thread::sleep(Duration::from_millis(50));
                            waited += Duration::from_millis(50);
                        }
                        _ => return Err(StoreError::Busy),
                    }
                }
            }
            let _: String = out.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
            let check: String = out.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if check != "ok" {
                return Err(StoreError::Damaged(format!(
                    "the backup does not pass SQLite's check: {check}"
                )));
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    /// The ledger's row count, its oldest row and the store's size.
    pub fn ledger_stats(&self) -> Result<LedgerStats, StoreError> {
        let (rows, oldest_at): (i64, Option<Millis>) =
            self.conn()
                .query_row("SELECT count(*), min(at) FROM ledger", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path().as_os_str().to_owned();
        wal.push("-wal");
        Ok(LedgerStats {
            rows: rows.max(0) as u64,
            oldest_at,
            store_bytes: size(self.path()) + size(Path::new(&wal)),
        })
    }

    /// Ledger retention: removes ledger rows written before `before`, except each pair's newest
    /// `pushed` row, then finished runs started before `before` that no ledger row or last-known
    /// count refers to (the newest run always stays). `last_known` is never touched. One
    /// transaction.
    pub fn prune_ledger(&mut self, before: Millis) -> Result<Pruned, StoreError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let ledger_rows = tx.execute(
            "DELETE FROM ledger WHERE at < ?1 AND id NOT IN (
                SELECT max(id) FROM ledger WHERE outcome = 'pushed'
                GROUP BY connector_id, account_id, module)",
            [before],
        )?;
        let runs = tx.execute(
            "DELETE FROM runs WHERE finished_at IS NOT NULL AND started_at < ?1
                AND id != (SELECT max(id) FROM runs)
                AND NOT EXISTS (SELECT 1 FROM ledger WHERE ledger.run_id = runs.id)
                AND id NOT IN (SELECT run_id FROM last_known)",
            [before],
        )?;
        tx.commit()?;
        Ok(Pruned { ledger_rows, runs })
    }

    /// How many inventory times lie more than [`FUTURE_TOLERANCE_MS`] after `now` (records dated
    /// in the future, accepted by older builds).
    pub fn future_dated(&self, now: Millis) -> Result<u64, StoreError> {
        let limit = now + FUTURE_TOLERANCE_MS;
        let mut n = 0u64;
        for (table, column) in DATED {
            let c: i64 = self.conn().query_row(
                &format!("SELECT count(*) FROM {table} WHERE {column} > ?1"),
                [limit],
                |r| r.get(0),
            )?;
            n += c.max(0) as u64;
        }
        Ok(n)
    }

    /// Re-dates every inventory time later than `now` to `now`, in one transaction: a record from
    /// the future takes effect now (the current state already shows it). An interval that would
    /// become empty goes; of several future names of one channel or workspace the latest stays.
    /// Returns how many times were changed or removed.
    pub fn redate_future(&mut self, now: Millis) -> Result<usize, StoreError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        for table in ["unit_intervals", "module_intervals"] {
            // Wholly in the future: empty once re-dated.
            n += tx.execute(
                &format!("DELETE FROM {table} WHERE from_at > ?1 AND to_at IS NOT NULL"),
                [now],
            )?;
            n += tx.execute(
                &format!("UPDATE {table} SET to_at = ?1 WHERE to_at > ?1"),
                [now],
            )?;
            tx.execute(
                &format!("DELETE FROM {table} WHERE to_at IS NOT NULL AND from_at >= to_at"),
                [],
            )?;
            n += tx.execute(
                &format!("UPDATE OR REPLACE {table} SET from_at = ?1 WHERE from_at > ?1"),
                [now],
            )?;
        }
        for (table, owner) in [
            ("channel_names", "channel_id"),
            ("workspace_names", "workspace_id"),
        ] {
            n += tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE at > ?1 AND EXISTS (
                        SELECT 1 FROM {table} later WHERE later.{owner} = {table}.{owner}
                        AND later.at > {table}.at)"
                ),
                [now],
            )?;
            n += tx.execute(
                &format!("UPDATE OR REPLACE {table} SET at = ?1 WHERE at > ?1"),
                [now],
            )?;
        }
        for (table, column) in DATED.iter().skip(6) {
            n += tx.execute(
                &format!("UPDATE {table} SET {column} = ?1 WHERE {column} > ?1"),
                params![now],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cadence, PairOutcome, Trigger};
    use crate::ledger::LedgerEntry;

    fn entry(run: i64, account: &str, outcome: PairOutcome, at: Millis) -> LedgerEntry {
        LedgerEntry::for_test(run, "c", account, outcome, at)
    }

    #[test]
    fn retention_keeps_each_pairs_newest_push_and_last_known() {
        let (_d, mut s) = crate::temp_store();
        let day = 86_400_000;
        let mut runs = Vec::new();
        for i in 0..3 {
            let (run, _) = s
                .open_run(Trigger::Cli, Cadence::Daily, "p", None, i * day)
                .unwrap();
            runs.push(run);
        }
        // Old run 0: a1 pushed (a1's newest push), a2 pushed (superseded), a3 failed.
        s.record(&[
            entry(runs[0], "a1", PairOutcome::Pushed, 0),
            entry(runs[0], "a2", PairOutcome::Pushed, 0),
            entry(runs[0], "a3", PairOutcome::Failed, 1),
        ])
        .unwrap();
        // Run 1 (also old): a2 pushed again; run 2 (new) has nothing.
        s.record(&[entry(runs[1], "a2", PairOutcome::Pushed, day)])
            .unwrap();
        let stats = s.ledger_stats().unwrap();
        assert_eq!((stats.rows, stats.oldest_at), (4, Some(0)));
        let last_known_before = s.last_known(None).unwrap();
        let pruned = s.prune_ledger(2 * day).unwrap();
        assert_eq!(
            pruned.ledger_rows, 2,
            "a2's superseded push and a3's failure"
        );
        let left: Vec<(String, PairOutcome)> = s
            .conn()
            .prepare("SELECT account_id, outcome FROM ledger ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, String>(1)?.parse().unwrap()))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            left,
            vec![
                ("a1".into(), PairOutcome::Pushed),
                ("a2".into(), PairOutcome::Pushed)
            ]
        );
        assert_eq!(s.last_known(None).unwrap(), last_known_before);
        assert!(!last_known_before.is_empty());
    }

    #[test]
    fn future_dated_history_is_redated_to_now() {
        let (_d, mut s) = crate::temp_store();
        let now = 1_000_000;
        let far: i64 = 253_402_214_400_000; // 9999-12-31
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO channels VALUES ('c', 'C', {far});
                 INSERT INTO channel_names VALUES ('c', 10, 'C0'), ('c', {far}, 'C'), ('c', {}, 'C2');
                 INSERT INTO workspaces (id, channel_id, name, changed_at) VALUES ('w', 'c', 'W', 10);
                 INSERT INTO unit_intervals VALUES (1, 10, {far}, 'devices', 'w'), (1, {far}, NULL, 'devices', 'w'),
                    (2, {far}, {}, 'devices', 'w');",
                far - 1,
                far + 5
            ))
            .unwrap();
        assert!(s.future_dated(now).unwrap() >= 5);
        assert!(s.redate_future(now).unwrap() > 0);
        assert_eq!(s.future_dated(now).unwrap(), 0);
        let iv = s.unit_intervals_for_test();
        assert_eq!(iv, vec![(1, 10, Some(now)), (1, now, None)]);
        let names: Vec<(i64, String)> = s
            .conn()
            .prepare("SELECT at, name FROM channel_names ORDER BY at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, vec![(10, "C0".into()), (now, "C".into())]);
    }

    #[test]
    fn a_backup_is_private_whole_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let (d, s) = crate::temp_store();
        s.conn()
            .execute("INSERT INTO channels VALUES ('c', 'C', 1)", [])
            .unwrap();
        let dest = d.path().join("b.db");
        s.backup_to(&dest).unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Store::open(&dest, Duration::from_secs(1)).unwrap();
        assert!(b.channel_exists("c").unwrap());
        assert!(s.backup_to(&dest).is_err());
    }
}
