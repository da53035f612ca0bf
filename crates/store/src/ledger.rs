//! Ledger: what the connector did and knows — connectors and their tokens, Gradient's service ids,
//! runs, one ledger row per (run, connector, account, service), the last-known pushed counts, and
//! small daemon bookkeeping (schedule slots).
//!
//! Tokens are written here and read back only as [`SecretString`]; no row type carries a token.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use secrecy::SecretString;
use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::{Cadence, ConnectorState, PairOutcome, RunOutcome, Tally, Trigger};
use crate::time::Millis;

/// One connector, without its token.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorRow {
    /// Channel id.
    pub id: String,
    /// State.
    pub state: ConnectorState,
    /// Why it is in that state (e.g. Gradient's answer).
    pub state_reason: Option<String>,
    /// Integration status Gradient last reported (`pending`, `active`, ...).
    pub gradient_status: Option<String>,
    /// Organisation name Gradient reported.
    pub organization_name: Option<String>,
    /// When the current token was stored: identifies the token generation.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub token_set_at: Option<Millis>,
    /// When Gradient last accepted the token.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub verified_at: Option<Millis>,
    /// End of the last run in which this connector pushed without failures.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub last_success_at: Option<Millis>,
    /// Whether a token is stored.
    pub has_token: bool,
    /// The Gradient organization the token belongs to (one connector per organization).
    pub organization_id: Option<String>,
    /// A keyed fingerprint of the vendor key Gradient rejected this token with (never the key).
    #[serde(skip)]
    pub rejected_key_fp: Option<String>,
    /// When Gradient last saw a sync (`lastSyncedAt`; its 1900 sentinel is stored as never).
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub gradient_synced_at: Option<Millis>,
    /// Accounts Gradient says the MSP has not mapped yet (`isMapped: false`), as last read.
    pub unmapped_accounts: Vec<String>,
}

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

/// One ledger row to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub unit_count: Option<u64>,
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
            unit_count: Some(1),
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
pub struct LedgerRow {
    /// Row id (increasing).
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// The previous pushed count of the same pair before this row, when asked for.
    pub previous_count: Option<u64>,
}

/// The last count Gradient accepted for a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastKnown {
    /// Connector.
    pub connector_id: String,
    /// Account.
    pub account: String,
    /// Module (service).
    pub service: String,
    /// Count.
    pub unit_count: u64,
    /// When it was pushed.
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
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

const CONNECTOR_COLUMNS: &str = "id, state, state_reason, gradient_status, organization_name, token_set_at, verified_at, last_success_at, token IS NOT NULL, organization_id, rejected_key_fp, gradient_synced_at, unmapped_accounts";

fn connector_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConnectorRow> {
    Ok(ConnectorRow {
        id: r.get(0)?,
        state: r.get(1)?,
        state_reason: r.get(2)?,
        gradient_status: r.get(3)?,
        organization_name: r.get(4)?,
        token_set_at: r.get(5)?,
        verified_at: r.get(6)?,
        last_success_at: r.get(7)?,
        has_token: r.get(8)?,
        organization_id: r.get(9)?,
        rejected_key_fp: r.get(10)?,
        gradient_synced_at: r.get(11)?,
        unmapped_accounts: r
            .get::<_, Option<String>>(12)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    })
}

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

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
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
            unit_count: opt_u64(r.get(6)?),
            outcome: r.get(7)?,
            http_status: r.get::<_, Option<i64>>(8)?.map(|s| s as u16),
            attempts: r.get::<_, i64>(9)?.max(0) as u32,
            reason: r.get(10)?,
            at: r.get(11)?,
        },
        previous_count: opt_u64(r.get(12)?),
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

    // ---- connectors ----

    /// Stores (or replaces) a connector's token; the connector becomes `unverified`.
    /// The token is sealed with the store key ([`super::key`]).
    pub fn set_token(&self, id: &str, token: &SecretString, now: Millis) -> Result<(), StoreError> {
        let (sealed, key_id) = self.seal_token(id, token)?;
        self.conn().execute(
            "INSERT INTO connectors (id, token, token_key_id, state, state_reason, token_set_at, updated_at)
             VALUES (?1, ?2, ?4, 'unverified', 'token stored, not yet verified', ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, token_key_id = excluded.token_key_id,
                state = 'unverified',
                state_reason = excluded.state_reason, token_set_at = excluded.token_set_at,
                updated_at = excluded.updated_at",
            params![id, sealed, now, key_id],
        )?;
        Ok(())
    }

    /// A connector's token, if one is stored, opened with the store key.
    pub fn token(&self, id: &str) -> Result<Option<SecretString>, StoreError> {
        let t: Option<(Option<String>, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT token, token_key_id FROM connectors WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((stored, key_id)) = t else {
            return Ok(None);
        };
        super::key::unseal(self.key(), id, stored, key_id)
    }

    /// One connector.
    pub fn connector(&self, id: &str) -> Result<Option<ConnectorRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = ?1"),
                [id],
                connector_row,
            )
            .optional()?)
    }

    /// Every connector, by id.
    pub fn connectors(&self) -> Result<Vec<ConnectorRow>, StoreError> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors ORDER BY id"
        ))?;
        let rows = stmt.query_map([], connector_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records Gradient's acceptance of the token generation `token_set_at`: state `connected`.
    pub fn mark_connected(
        &self,
        id: &str,
        token_set_at: Option<Millis>,
        gradient_status: Option<&str>,
        organization_name: Option<&str>,
        organization_id: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET state = 'connected', state_reason = NULL, rejected_key_fp = NULL,
                gradient_status = COALESCE(?3, gradient_status),
                organization_name = COALESCE(?4, organization_name),
                organization_id = COALESCE(organization_id, ?6),
                verified_at = ?5, updated_at = ?5
             WHERE id = ?1 AND token IS NOT NULL AND token_set_at IS ?2",
            params![id, token_set_at, gradient_status, organization_name, now, organization_id],
        )?;
        Ok(n > 0)
    }

    /// Sets a connector's state and reason, but only while it still holds token generation
    /// `token_set_at` (a token pasted meanwhile is never marked by an older token's failure).
    pub fn set_connector_state(
        &self,
        id: &str,
        token_set_at: Option<Millis>,
        state: ConnectorState,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET state = ?3, state_reason = ?4, updated_at = ?5
             WHERE id = ?1 AND token_set_at IS ?2",
            params![id, token_set_at, state.as_str(), reason, now],
        )?;
        Ok(n > 0)
    }

    /// Records the integration status Gradient last reported.
    pub fn set_gradient_status(
        &self,
        id: &str,
        status: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE connectors SET gradient_status = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, status, now],
        )?;
        Ok(())
    }

    /// Records a run in which the connector pushed without failures.
    pub fn mark_success(&self, id: &str, now: Millis) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE connectors SET last_success_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Forgets the token and marks the connector `disconnected`; the ledger stays.
    pub fn disconnect(&self, id: &str, reason: &str, now: Millis) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET token = NULL, token_key_id = NULL, state = 'disconnected', state_reason = ?2,
                gradient_status = 'inactive', updated_at = ?3 WHERE id = ?1",
            params![id, reason, now],
        )?;
        Ok(n > 0)
    }

    // ---- services ----

    /// Gradient service ids we know, by module.
    pub fn service_ids(&self) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT module, name, gradient_id FROM services")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remembers a service's Gradient id.
    pub fn save_service_id(
        &self,
        module: &str,
        name: &str,
        gradient_id: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO services (module, name, gradient_id, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (module) DO UPDATE SET name = excluded.name,
                gradient_id = excluded.gradient_id, updated_at = excluded.updated_at",
            params![module, name, gradient_id, now],
        )?;
        Ok(())
    }

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
                let count = e.unit_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
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
                unit_count: r.get::<_, i64>(3)?.max(0) as u64,
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
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT connector_id, account_id, module, unit_count FROM ledger
             WHERE run_id = ?1 AND outcome = 'pushed' AND unit_count IS NOT NULL
             ORDER BY connector_id, account_id, module, id",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)?.max(0) as u64,
            ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_store;

    fn entry(run: i64, acct: &str, n: u64, o: PairOutcome) -> LedgerEntry {
        LedgerEntry {
            run_id: run,
            connector_id: "c".into(),
            account_id: acct.into(),
            module: "m".into(),
            service_id: Some("s".into()),
            unit_count: Some(n),
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
            .map(|r| (r.entry.run_id, r.entry.unit_count, r.previous_count))
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
