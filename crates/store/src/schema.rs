//! Schema: numbered migrations, applied in order at open and recorded in `PRAGMA user_version`.
//!
//! A migration is never edited once released; a change is a new entry at the end of [`MIGRATIONS`].
//!
//! Data model (times are milliseconds since the epoch, UTC; intervals are half-open `[from_at, to_at)`,
//! `to_at` NULL while open):
//! - `channels`, `workspaces`: current state; `channel_names`, `workspace_names`: their history.
//! - `modules`: current enablement per (workspace, module); `module_intervals`: when it was enabled.
//! - `units`: current state per (kind, unit id); `unit_intervals`: when it was protected, and where,
//!   keyed by (`unit`, `from_at`). `unit` is the unit's integer `ref` (migration 3), which a unit gets
//!   when it is first protected: refs are handed out in increasing order, and interval rows are never
//!   deleted, so the next ref is always `MAX(unit) + 1`. A unit never protected has no ref.
//!   One unit never has two intervals that overlap (import closes the open one before opening another).
//! - `connectors`: one per channel, with its partner token; `services`: Gradient's ids for our modules.
//! - `runs`, `ledger` (one row per pair per run), `last_known` (last pushed count per pair),
//!   `daemon_state` (schedule bookkeeping).
//! - `events` (the webhook outbox: id, kind, body as sent) and `event_deliveries` (one per event and
//!   webhook url: attempts, next attempt, delivered or given up, last error) — migration 5.
//! - `connectors.token_key_id` (migration 6): the id of the store key the token is sealed with.

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
    // 3: units get an integer key (`ref`), and their intervals refer to it: a new unit's interval is
    // appended at the end of its tree instead of being placed among text keys, which halves the
    // B-tree work of an import.
    "DROP INDEX unit_intervals_by_workspace;
     ALTER TABLE units RENAME TO units_v2;
     ALTER TABLE unit_intervals RENAME TO unit_intervals_v2;
     CREATE TABLE units (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        ref INTEGER,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        protected INTEGER NOT NULL,
        changed_at INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;
     CREATE TABLE unit_intervals (
        unit INTEGER NOT NULL,
        from_at INTEGER NOT NULL,
        to_at INTEGER,
        kind TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        PRIMARY KEY (unit, from_at)
     ) WITHOUT ROWID;
     INSERT INTO units (kind, id, ref, workspace_id, protected, changed_at)
        SELECT u.kind, u.id,
               CASE WHEN EXISTS (SELECT 1 FROM unit_intervals_v2 i WHERE i.kind = u.kind AND i.unit_id = u.id)
                    THEN ROW_NUMBER() OVER (ORDER BY u.kind, u.id) END,
               u.workspace_id, u.protected, u.changed_at
        FROM units_v2 u ORDER BY u.kind, u.id;
     INSERT INTO unit_intervals (unit, from_at, to_at, kind, workspace_id)
        SELECT u.ref, i.from_at, i.to_at, i.kind, i.workspace_id
        FROM unit_intervals_v2 i JOIN units u ON u.kind = i.kind AND u.id = i.unit_id
        ORDER BY u.ref, i.from_at;
     DROP TABLE unit_intervals_v2;
     DROP TABLE units_v2;
     CREATE INDEX unit_intervals_by_workspace
        ON unit_intervals(workspace_id, kind, from_at, to_at, unit);",
    // 4: whose token is it (the Gradient organization a connector's token belongs to), vendor-key
    // faults (a keyed fingerprint of the vendor key a rejection happened with, never the key), and
    // offboarding (a workspace removed or moved owes its old MSP one final zero per service).
    "ALTER TABLE connectors ADD COLUMN organization_id TEXT;
     ALTER TABLE connectors ADD COLUMN rejected_key_fp TEXT;
     ALTER TABLE connectors ADD COLUMN gradient_synced_at INTEGER;
     ALTER TABLE connectors ADD COLUMN unmapped_accounts TEXT;
     ALTER TABLE workspaces ADD COLUMN removed_at INTEGER;
     CREATE TABLE offboarding (
        connector_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        since INTEGER NOT NULL,
        done_at INTEGER,
        PRIMARY KEY (connector_id, account_id)
     ) WITHOUT ROWID;",
    // 5: the outbox of webhook events: each event once (its body is sent byte for byte on every
    // attempt), and one delivery per (event, webhook url) with its own attempts and schedule.
    "CREATE TABLE events (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX events_by_created ON events(created_at);
     CREATE TABLE event_deliveries (
        event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        delivered_at INTEGER,
        failed_at INTEGER,
        last_error TEXT,
        PRIMARY KEY (event_id, url)
     ) WITHOUT ROWID;
     CREATE INDEX event_deliveries_due ON event_deliveries(next_attempt_at)
        WHERE delivered_at IS NULL AND failed_at IS NULL;",
    // 6: a run's rows by connector and outcome: a run's tally per connector, and one connector's
    // part of a run (`GET /v1/connectors/{id}` during a 40,000-pair run), read from the index alone.
    "DROP INDEX ledger_by_run;
     CREATE INDEX ledger_by_run ON ledger(run_id, connector_id, outcome);",
    // 7: partner tokens sealed at rest: `token` holds base64(nonce ‖ ciphertext) and
    // `token_key_id` the id of the store key it was sealed with (NULL: plain text left by an older
    // build, sealed by the next open that has the key).
    "ALTER TABLE connectors ADD COLUMN token_key_id TEXT;",
    // 8: at most one ledger row per (run, connector, account, service). Duplicates an older build
    // may have written are dropped first, keeping a `pushed` row over any other, then the first.
    "DELETE FROM ledger WHERE id IN (
        SELECT id FROM (
            SELECT id, row_number() OVER (
                PARTITION BY run_id, connector_id, account_id, module
                ORDER BY outcome = 'pushed' DESC, id) AS n
            FROM ledger)
        WHERE n > 1);
     CREATE UNIQUE INDEX ledger_one_per_pair ON ledger(run_id, connector_id, account_id, module);",
    // 9: a disconnected connector can be forgotten (`connector remove`): gone from every list, its
    // ledger kept; a new paste under its id brings it back as a new connector.
    "ALTER TABLE connectors ADD COLUMN forgotten_at INTEGER;",
    // 10: what the console was last told needs mapping (`connector.mapping_needed`), as JSON
    // `{"accounts": [ids], "services": [modules]}`: only what is new is told again.
    "ALTER TABLE connectors ADD COLUMN mapping_told TEXT;",
    // 11: metered usage (`{"type":"usage"}`): each sample of a workspace's module's quantity, in
    // millionths, in force from `at` until the next sample of the pair.
    "CREATE TABLE usage (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        module TEXT NOT NULL,
        at INTEGER NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity >= 0),
        PRIMARY KEY (workspace_id, module, at)
     ) WITHOUT ROWID;",
    // 12: pull sources (`[[source]]`): each source's last pull and its last successful one; whether
    // the console was told its inventory is stale (`inventory.stale`, once per stale spell).
    "CREATE TABLE source_pulls (
        name TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        records INTEGER NOT NULL,
        message TEXT,
        last_success_at INTEGER,
        stale_told INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;",
    // 13: who at the MSP is mailed about a connector (`[email]`): one row per address. Mail goes
    // through the outbox: a delivery per (event, recipient) keyed `mailto:ADDRESS`.
    "CREATE TABLE connector_contacts (
        connector_id TEXT NOT NULL,
        email TEXT NOT NULL,
        PRIMARY KEY (connector_id, email)
     ) WITHOUT ROWID;",
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

    /// The first column of the first row of `sql`.
    fn value<T: rusqlite::types::FromSql>(store: &crate::Store, sql: &str) -> T {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = crate::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(
            value::<i64>(&store, "PRAGMA user_version"),
            MIGRATIONS.len() as i64
        );
        drop(store);
        // Re-opening applies nothing and keeps data.
        let store = crate::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(value::<i64>(&store, "SELECT count(*) FROM channels"), 0);
    }

    #[test]
    fn store_file_is_private_and_wal() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = crate::temp_store();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(value::<String>(&store, "PRAGMA journal_mode"), "wal");
        assert_eq!(value::<i64>(&store, "PRAGMA foreign_keys"), 1);
        assert_eq!(value::<i64>(&store, "PRAGMA page_size"), 16384);
    }

    #[test]
    fn migration_3_gives_units_integer_keys_and_keeps_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            // A store as version 2 left it: text-keyed units and intervals.
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.execute_batch(MIGRATIONS[1]).unwrap();
            tx.execute_batch(
                "INSERT INTO channels VALUES ('c', 'C', 0);
                 INSERT INTO workspaces VALUES ('w1', 'c', 'W1', 0), ('w2', 'c', 'W2', 0);
                 INSERT INTO units VALUES ('devices', 'd1', 'w2', 1, 20), ('users', 'd1', 'w1', 0, 30),
                    ('users', 'u0', 'w1', 0, 40);
                 INSERT INTO unit_intervals VALUES
                    ('devices', 'd1', 'w1', 10, 20), ('devices', 'd1', 'w2', 20, NULL),
                    ('users', 'd1', 'w1', 5, 30);",
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 2).unwrap();
            tx.commit().unwrap();
        }
        let store = crate::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        let rows: Vec<(String, String, String, i64, Option<i64>)> = store
            .conn()
            .prepare(
                "SELECT u.kind, u.id, i.workspace_id, i.from_at, i.to_at
                 FROM unit_intervals i JOIN units u ON u.ref = i.unit AND u.kind = i.kind
                 ORDER BY u.kind, u.id, i.from_at",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |k: &str, w: &str, f: i64, t: Option<i64>| {
            (k.to_string(), "d1".to_string(), w.to_string(), f, t)
        };
        assert_eq!(
            rows,
            vec![
                row("devices", "w1", 10, Some(20)),
                row("devices", "w2", 20, None),
                row("users", "w1", 5, Some(30)),
            ]
        );
        // Same text id, two kinds: two units; a unit never protected has no ref. The old tables are
        // gone; the counting index is back.
        let n = |q: &str| value::<i64>(&store, q);
        assert_eq!(n("SELECT count(DISTINCT ref) FROM units"), 2);
        assert_eq!(
            n("SELECT count(*) FROM units WHERE id = 'u0' AND ref IS NULL"),
            1
        );
        assert_eq!(
            n("SELECT count(*) FROM sqlite_master WHERE name IN ('units_v2', 'unit_intervals_v2')"),
            0
        );
        assert_eq!(
            n("SELECT count(*) FROM sqlite_master WHERE name = 'unit_intervals_by_workspace'"),
            1
        );
        assert_eq!(
            n("SELECT count(*) FROM pragma_foreign_key_check"),
            0,
            "no dangling reference"
        );
    }

    #[test]
    fn migration_8_keeps_one_row_per_pair_of_a_run_preferring_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for m in &MIGRATIONS[..7] {
                tx.execute_batch(m).unwrap();
            }
            tx.execute_batch(
                "INSERT INTO runs (id, trigger, cadence, period, started_at) VALUES (1, 'cli', 'daily', 'p', 0);
                 INSERT INTO ledger (run_id, connector_id, account_id, module, outcome, attempts, at) VALUES
                    (1, 'c', 'a', 'm', 'pushed', 1, 1), (1, 'c', 'a', 'm', 'failed', 0, 2),
                    (1, 'c', 'b', 'm', 'failed', 0, 3), (1, 'c', 'b', 'm', 'pushed', 1, 4),
                    (1, 'c', 'd', 'm', 'unmapped', 1, 5);",
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 7).unwrap();
            tx.commit().unwrap();
        }
        let store = crate::Store::open(&path, std::time::Duration::from_secs(1)).unwrap();
        let rows: Vec<(String, String)> = store
            .conn()
            .prepare("SELECT account_id, outcome FROM ledger ORDER BY account_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let pair = |a: &str, o: &str| (a.to_string(), o.to_string());
        assert_eq!(
            rows,
            vec![
                pair("a", "pushed"),
                pair("b", "pushed"),
                pair("d", "unmapped")
            ]
        );
        // The schema itself now refuses a second row for a pair of a run.
        let again = store.conn().execute(
            "INSERT INTO ledger (run_id, connector_id, account_id, module, outcome, attempts, at)
             VALUES (1, 'c', 'a', 'm', 'failed', 0, 9)",
            [],
        );
        assert!(again.is_err());
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = crate::Store::open(&path, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("upgrade gradient-connector"),
            "{err}"
        );
    }
}
