//! Schema: numbered migrations, applied in order at open and recorded in `PRAGMA user_version`.
//!
//! A migration is never edited once released; a change is a new entry at the end of [`MIGRATIONS`].
//!
//! Data model (times are milliseconds since the epoch, UTC; intervals are half-open `[from_at, to_at)`,
//! `to_at` NULL while open):
//! - `channels`, `workspaces`: current state; `channel_names`, `workspace_names`: their history.
//! - `modules`: current enablement per (workspace, module); `module_intervals`: when it was enabled.
//! - `units`: current state per (kind, unit id); `unit_intervals`: when it was protected, and where.
//!   One unit never has two intervals that overlap (import closes the open one before opening another).
//! - `connectors`: one per channel, with its partner token; `services`: Gradient's ids for our modules.
//! - `runs`, `ledger` (one row per pair per run), `last_known` (last pushed count per pair),
//!   `daemon_state` (schedule bookkeeping).

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Every migration, in order; `user_version` is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: inventory.
    "CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        changed_at INTEGER NOT NULL
     );
     CREATE TABLE channel_names (
        channel_id TEXT NOT NULL REFERENCES channels(id),
        at INTEGER NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (channel_id, at)
     ) WITHOUT ROWID;
     CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        channel_id TEXT NOT NULL REFERENCES channels(id),
        name TEXT NOT NULL,
        changed_at INTEGER NOT NULL
     );
     CREATE INDEX workspaces_channel ON workspaces(channel_id, id);
     CREATE TABLE workspace_names (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        at INTEGER NOT NULL,
        channel_id TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (workspace_id, at)
     ) WITHOUT ROWID;
     CREATE TABLE modules (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        module TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        changed_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, module)
     ) WITHOUT ROWID;
     CREATE TABLE module_intervals (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        module TEXT NOT NULL,
        from_at INTEGER NOT NULL,
        to_at INTEGER,
        PRIMARY KEY (workspace_id, module, from_at)
     ) WITHOUT ROWID;
     CREATE INDEX module_intervals_by_module ON module_intervals(module, from_at, to_at);
     CREATE TABLE units (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        protected INTEGER NOT NULL,
        changed_at INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;
     CREATE TABLE unit_intervals (
        kind TEXT NOT NULL,
        unit_id TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        from_at INTEGER NOT NULL,
        to_at INTEGER,
        PRIMARY KEY (kind, unit_id, from_at)
     ) WITHOUT ROWID;
     CREATE INDEX unit_intervals_by_workspace
        ON unit_intervals(workspace_id, kind, from_at, to_at, unit_id);",
    // 2: connectors, services, runs, ledger.
    "CREATE TABLE connectors (
        id TEXT PRIMARY KEY,
        token TEXT,
        state TEXT NOT NULL CHECK (state IN ('unverified', 'connected', 'token_rejected', 'disconnected')),
        state_reason TEXT,
        gradient_status TEXT,
        organization_name TEXT,
        token_set_at INTEGER,
        verified_at INTEGER,
        last_success_at INTEGER,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE services (
        module TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        gradient_id TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        trigger TEXT NOT NULL,
        cadence TEXT NOT NULL,
        period TEXT NOT NULL,
        slot_at INTEGER,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        outcome TEXT CHECK (outcome IN ('ok', 'partial', 'failed', 'interrupted')),
        pushed INTEGER NOT NULL DEFAULT 0,
        unmapped INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        skipped_disabled INTEGER NOT NULL DEFAULT 0,
        message TEXT
     );
     CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        connector_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        module TEXT NOT NULL,
        service_id TEXT,
        unit_count INTEGER,
        outcome TEXT NOT NULL CHECK (outcome IN ('pushed', 'unmapped', 'failed', 'rejected', 'skipped_disabled')),
        http_status INTEGER,
        attempts INTEGER NOT NULL,
        reason TEXT,
        at INTEGER NOT NULL
     );
     CREATE INDEX ledger_by_pair ON ledger(connector_id, account_id, module, id);
     CREATE INDEX ledger_by_run ON ledger(run_id, id);
     CREATE TABLE last_known (
        connector_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        module TEXT NOT NULL,
        unit_count INTEGER NOT NULL,
        pushed_at INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        PRIMARY KEY (connector_id, account_id, module)
     ) WITHOUT ROWID;
     CREATE TABLE daemon_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );",
];

/// Applies every migration newer than the store's `user_version`, each in its own transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Re-check inside the write lock: another process may have migrated meanwhile.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = crate::store::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        let v: i64 = store
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(store);
        // Re-opening applies nothing and keeps data.
        let store = crate::store::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM channels", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn store_file_is_private_and_wal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = crate::store::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let jm: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "wal");
        let fk: i64 = store
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = crate::store::Store::open(&path, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("upgrade gradient-connector"),
            "{err}"
        );
    }
}
