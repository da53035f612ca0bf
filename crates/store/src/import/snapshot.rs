//! Snapshots (`import --snapshot`): the file states the whole current state of every channel it
//! names (a `channel` record names it), as of its header's `at`. What such a channel holds and the
//! file does not list is unprotected, disabled or removed at that instant — through the same
//! history rules as a record, so importing the same snapshot twice changes nothing. Channels the
//! file does not name are untouched.
//!
//! What the file lists is kept in temporary tables of the import's transaction — its channels,
//! workspaces and enabled modules — and, for its units, as a bit per unit ref in memory (250 KB
//! for 2M units; no write per unit); the implied changes are found in one pass over each table
//! once every line is applied.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
         DELETE FROM snapshot_channels; DELETE FROM snapshot_workspaces;
         DELETE FROM snapshot_modules;",
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
        // Units listed as protected are remembered by their ref as they are applied
        // (`Seen::listed_units`): no write per unit.
        _ => Ok(()),
    }
}

/// What one named channel would lose.
#[derive(Default)]
struct Losses {
    shrink: Shrink,
    units: Vec<(String, String, String)>,
    modules: Vec<(String, String)>,
    workspaces: Vec<String>,
}

/// What every named channel would lose, in one pass over each table: units are read in their own
/// order (`CROSS JOIN` keeps SQLite from driving the join from the workspaces, which would scan
/// the units once per workspace: there is no index of units by workspace), and each unit's
/// workspace is found by its key (`+w.channel_id` keeps SQLite from seeking the channel index
/// once per named channel for every unit).
fn losses(tx: &Transaction, seen: &Seen) -> rusqlite::Result<Vec<Losses>> {
    let mut by: std::collections::BTreeMap<String, Losses> = std::collections::BTreeMap::new();
    {
        let mut stmt = tx.prepare("SELECT id FROM snapshot_channels ORDER BY id")?;
        for id in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let id = id?;
            let l = by.entry(id.clone()).or_default();
            l.shrink.channel = id;
        }
    }
    // Workspaces: how many each channel holds now, and those the file did not list.
    let mut stmt = tx.prepare(
        "SELECT w.channel_id, w.id, EXISTS (SELECT 1 FROM snapshot_workspaces s WHERE s.id = w.id)
         FROM snapshot_channels c JOIN workspaces w ON w.channel_id = c.id
         WHERE w.removed_at IS NULL ORDER BY w.channel_id, w.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    for row in rows {
        let (channel, id, listed) = row?;
        if let Some(l) = by.get_mut(&channel) {
            l.shrink.workspaces += 1;
            if !listed {
                l.workspaces.push(id);
            }
        }
    }
    // Protected units: one pass over the units.
    let mut stmt = tx.prepare(
        "SELECT w.channel_id, u.kind, u.id, u.workspace_id, u.ref
         FROM units u CROSS JOIN workspaces w ON w.id = u.workspace_id
         WHERE u.protected = 1 AND w.removed_at IS NULL
           AND +w.channel_id IN (SELECT id FROM snapshot_channels)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (channel, kind, id, workspace, unit) = row?;
        let listed = unit.is_some_and(|u| seen.unit_listed(u));
        if let Some(l) = by.get_mut(&channel) {
            l.shrink.units += 1;
            if !listed {
                l.units.push((kind, id, workspace));
            }
        }
    }
    // Enabled modules the file did not list.
    let mut stmt = tx.prepare(
        "SELECT w.channel_id, m.workspace_id, m.module
         FROM modules m CROSS JOIN workspaces w ON w.id = m.workspace_id
         WHERE m.enabled = 1 AND w.removed_at IS NULL
           AND +w.channel_id IN (SELECT id FROM snapshot_channels)
           AND NOT EXISTS (SELECT 1 FROM snapshot_modules s
                           WHERE s.workspace = m.workspace_id AND s.module = m.module)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (channel, workspace, module) = row?;
        if let Some(l) = by.get_mut(&channel) {
            l.modules.push((workspace, module));
        }
    }
    Ok(by
        .into_values()
        .map(|mut l| {
            l.units.sort();
            l.modules.sort();
            l.shrink.units_dropped = l.units.len() as u64;
            l.shrink.workspaces_dropped = l.workspaces.len() as u64;
            l
        })
        .collect())
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
    let all = losses(tx, seen).map_err(StoreError::from)?;
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
         DELETE FROM snapshot_modules;",
    )
    .map_err(StoreError::from)?;
    Ok(implied)
}
