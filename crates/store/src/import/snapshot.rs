//! Snapshots (`import --snapshot`): the file states the whole current state of every channel it
//! names (a `channel` record names it), as of its header's `at`. What such a channel holds and the
//! file does not list is unprotected, disabled or removed at that instant — through the same
//! history rules as a record, so importing the same snapshot twice changes nothing. Channels the
//! file does not name are untouched.
//!
//! What the file lists is kept in temporary tables of the import's transaction (memory does not
//! grow with the file); the implied changes are found set-based once every line is applied.
//!
//! **Shrink guard:** a snapshot whose implied changes would unprotect more than
//! `max_shrink_percent` of a channel's protected units, or remove more than that share of its
//! workspaces, is refused whole — a truncated export must never zero an MSP's bill. The shares are
//! of what the channel holds after the file's own records, before the implied changes.

use rusqlite::Transaction;

use super::apply::*;
use super::record::*;
use super::*;

/// How a snapshot import is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRules {
    /// The largest share (percent) of a channel's protected units or workspaces a snapshot may
    /// drop (`inventory.max_snapshot_shrink_percent`).
    pub max_shrink_percent: u32,
    /// Accept a snapshot over that share (`--allow-shrink`).
    pub allow_shrink: bool,
}

/// One channel a snapshot would shrink by more than allowed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shrink {
    /// The channel.
    pub channel: String,
    /// Its protected units before the snapshot's implied changes.
    pub units: u64,
    /// Of those, the units the snapshot would unprotect.
    pub units_dropped: u64,
    /// Its workspaces before the snapshot's implied changes.
    pub workspaces: u64,
    /// Of those, the workspaces the snapshot would remove.
    pub workspaces_dropped: u64,
}

impl std::fmt::Display for Shrink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "channel {:?}: {} of {} protected unit(s) and {} of {} workspace(s) would go",
            self.channel, self.units_dropped, self.units, self.workspaces_dropped, self.workspaces
        )
    }
}

/// What a snapshot's implied changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Implied {
    /// Units unprotected because the file did not list them.
    pub unprotected: usize,
    /// Modules disabled because the file did not list them enabled.
    pub disabled: usize,
    /// Workspaces removed because the file did not list them.
    pub removed: usize,
}

/// Creates (or empties) the tables that remember what the file listed.
pub(super) fn start(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS snapshot_channels (id TEXT PRIMARY KEY) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS snapshot_workspaces (id TEXT PRIMARY KEY) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS snapshot_modules (workspace TEXT, module TEXT, PRIMARY KEY (workspace, module)) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS snapshot_units (kind TEXT, id TEXT, PRIMARY KEY (kind, id)) WITHOUT ROWID;
         DELETE FROM snapshot_channels; DELETE FROM snapshot_workspaces;
         DELETE FROM snapshot_modules; DELETE FROM snapshot_units;",
    )
}

/// Remembers what one applied record lists as present.
pub(super) fn note(tx: &Transaction, record: &Record) -> rusqlite::Result<()> {
    match record {
        Record::Channel(r) => tx
            .prepare_cached("INSERT OR IGNORE INTO snapshot_channels (id) VALUES (?1)")?
            .execute([&r.id])
            .map(drop),
        Record::Workspace(r) if r.removed != Some(true) => tx
            .prepare_cached("INSERT OR IGNORE INTO snapshot_workspaces (id) VALUES (?1)")?
            .execute([&r.id])
            .map(drop),
        Record::Module(r) if r.enabled => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO snapshot_modules (workspace, module) VALUES (?1, ?2)",
            )?
            .execute([&r.workspace, &r.module])
            .map(drop),
        Record::User(r) | Record::Device(r) if r.protected => {
            let kind = if matches!(record, Record::User(_)) {
                "users"
            } else {
                "devices"
            };
            tx.prepare_cached("INSERT OR IGNORE INTO snapshot_units (kind, id) VALUES (?1, ?2)")?
                .execute([kind, r.id.as_str()])
                .map(drop)
        }
        _ => Ok(()),
    }
}

/// What one named channel would lose.
struct Losses {
    shrink: Shrink,
    units: Vec<(String, String, String)>,
    modules: Vec<(String, String)>,
    workspaces: Vec<String>,
}

fn losses(tx: &Transaction, channel: &str) -> rusqlite::Result<Losses> {
    let count = |sql: &str| tx.query_row(sql, [channel], |r| r.get::<_, i64>(0));
    let workspaces_now =
        count("SELECT COUNT(*) FROM workspaces WHERE channel_id = ?1 AND removed_at IS NULL")?;
    let units_now = count(
        "SELECT COUNT(*) FROM units u JOIN workspaces w ON w.id = u.workspace_id
         WHERE w.channel_id = ?1 AND w.removed_at IS NULL AND u.protected = 1",
    )?;
    let mut stmt = tx.prepare(
        "SELECT id FROM workspaces w WHERE channel_id = ?1 AND removed_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM snapshot_workspaces s WHERE s.id = w.id) ORDER BY id",
    )?;
    let workspaces = stmt
        .query_map([channel], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let mut stmt = tx.prepare(
        "SELECT u.kind, u.id, u.workspace_id FROM units u JOIN workspaces w ON w.id = u.workspace_id
         WHERE w.channel_id = ?1 AND w.removed_at IS NULL AND u.protected = 1
         AND NOT EXISTS (SELECT 1 FROM snapshot_units s WHERE s.kind = u.kind AND s.id = u.id)
         ORDER BY u.kind, u.id",
    )?;
    let units = stmt
        .query_map([channel], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
    let mut stmt = tx.prepare(
        "SELECT m.workspace_id, m.module FROM modules m JOIN workspaces w ON w.id = m.workspace_id
         WHERE w.channel_id = ?1 AND w.removed_at IS NULL AND m.enabled = 1
         AND NOT EXISTS (SELECT 1 FROM snapshot_modules s
                         WHERE s.workspace = m.workspace_id AND s.module = m.module)
         ORDER BY m.workspace_id, m.module",
    )?;
    let modules = stmt
        .query_map([channel], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
    let wide = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Losses {
        shrink: Shrink {
            channel: channel.to_string(),
            units: wide(units_now),
            units_dropped: units.len() as u64,
            workspaces: wide(workspaces_now),
            workspaces_dropped: workspaces.len() as u64,
        },
        units,
        modules,
        workspaces,
    })
}

/// Whether `dropped` of `before` is more than `percent`.
fn over(dropped: u64, before: u64, percent: u32) -> bool {
    before > 0 && dropped.saturating_mul(100) > before.saturating_mul(u64::from(percent))
}

/// Applies what the file implies for every channel it named, at `at`; refuses (before changing
/// anything) when a channel would shrink by more than the rules allow.
pub(super) fn complete(
    tx: &Transaction,
    seen: &mut Seen,
    at: Millis,
    rules: SnapshotRules,
) -> Result<Implied, ImportError> {
    let channels: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT id FROM snapshot_channels ORDER BY id")
            .map_err(StoreError::from)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(StoreError::from)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(StoreError::from)?
    };
    let mut all = Vec::new();
    for c in &channels {
        all.push(losses(tx, c).map_err(StoreError::from)?);
    }
    let refused: Vec<Shrink> = all
        .iter()
        .map(|l| &l.shrink)
        .filter(|s| {
            over(s.units_dropped, s.units, rules.max_shrink_percent)
                || over(s.workspaces_dropped, s.workspaces, rules.max_shrink_percent)
        })
        .cloned()
        .collect();
    if !refused.is_empty() && !rules.allow_shrink {
        return Err(ImportError::SnapshotShrink {
            channels: refused,
            max_percent: rules.max_shrink_percent,
        });
    }
    let mut implied = Implied::default();
    let mut bad = Vec::new();
    let mut outcome = |what: String, r: Result<Effect, LineError>, n: &mut usize| match r {
        Ok(Effect::Applied) => {
            *n += 1;
            Ok(())
        }
        Ok(Effect::Unchanged) => Ok(()),
        Err(LineError::Store(e)) => Err(ImportError::Store(e)),
        Err(LineError::Bad(reason)) => {
            bad.push(BadLine {
                line: 0,
                reason: format!("the snapshot's implied change of {what}: {reason}"),
            });
            Ok(())
        }
    };
    for l in all {
        for (kind, id, workspace) in l.units {
            let r = UnitRecord {
                workspace,
                id: id.clone(),
                protected: false,
                at: None,
            };
            let applied = apply_unit(tx, seen, &kind, &r, at);
            outcome(format!("{kind} {id:?}"), applied, &mut implied.unprotected)?;
        }
        for (workspace, module) in l.modules {
            let r = ModuleRecord {
                workspace: workspace.clone(),
                module: module.clone(),
                enabled: false,
                at: None,
            };
            let applied = apply_module(tx, seen, &r, at);
            outcome(
                format!("module {module:?} of {workspace:?}"),
                applied,
                &mut implied.disabled,
            )?;
        }
        for id in l.workspaces {
            let r = WorkspaceRecord {
                id: id.clone(),
                channel: None,
                name: None,
                removed: Some(true),
                at: None,
            };
            let applied = apply_workspace(tx, &r, at);
            outcome(format!("workspace {id:?}"), applied, &mut implied.removed)?;
        }
    }
    if !bad.is_empty() {
        let total = bad.len();
        bad.truncate(MAX_LISTED_ERRORS);
        return Err(ImportError::BadLines { lines: bad, total });
    }
    // Keep the transaction's temporary tables small for the next import on this connection.
    tx.execute_batch(
        "DELETE FROM snapshot_channels; DELETE FROM snapshot_workspaces;
         DELETE FROM snapshot_modules; DELETE FROM snapshot_units;",
    )
    .map_err(StoreError::from)?;
    Ok(implied)
}
