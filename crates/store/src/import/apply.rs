//! Applying one record to the store: the history rules of the import (see the parent module),
//! one entity kind at a time.

use rusqlite::{params, OptionalExtension, Statement, Transaction};

use super::record::*;
use super::*;

/// What one import keeps between records: the workspace ids known to exist (the store never deletes
/// one), and the two statements of its hot path (a new unit and its interval), prepared once.
pub(super) struct Seen<'t> {
    pub(super) workspaces: std::collections::HashSet<String>,
    pub(super) insert_unit: Statement<'t>,
    pub(super) open_interval: Statement<'t>,
    /// The ref the next unit protected for the first time gets.
    pub(super) next_ref: i64,
    /// A snapshot's listed units: the refs of every unit a record of the file lists as protected,
    /// as a bit set (None outside a snapshot). A bit per unit the store ever protected: 2M units
    /// take 250 KB, and marking one costs no write.
    pub(super) listed_units: Option<Vec<u64>>,
}

impl<'t> Seen<'t> {
    /// Remembers that a snapshot lists the unit `unit` as protected.
    fn list_unit(&mut self, unit: i64) {
        let (Some(bits), Ok(i)) = (self.listed_units.as_mut(), usize::try_from(unit)) else {
            return;
        };
        if bits.len() <= i / 64 {
            bits.resize(i / 64 + 1, 0);
        }
        bits[i / 64] |= 1 << (i % 64);
    }

    /// Whether a snapshot listed the unit `unit` as protected.
    pub(super) fn unit_listed(&self, unit: i64) -> bool {
        match (self.listed_units.as_ref(), usize::try_from(unit)) {
            (Some(bits), Ok(i)) => bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0),
            _ => false,
        }
    }

    pub(super) fn new(tx: &'t Transaction) -> rusqlite::Result<Self> {
        Ok(Seen {
            listed_units: None,
            workspaces: Default::default(),
            next_ref: tx.query_row(
                "SELECT COALESCE(MAX(unit), 0) + 1 FROM unit_intervals",
                [],
                |r| r.get(0),
            )?,
            // Most records of a first import are new units: try the insert first, look up only if
            // the unit exists.
            insert_unit: tx.prepare(
                "INSERT INTO units (kind, id, ref, workspace_id, protected, changed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, id) DO NOTHING",
            )?,
            open_interval: tx.prepare(
                "INSERT INTO unit_intervals (unit, from_at, to_at, kind, workspace_id) VALUES (?1, ?2, NULL, ?3, ?4)",
            )?,
        })
    }

    pub(super) fn workspace_exists(
        &mut self,
        tx: &Transaction,
        id: &str,
    ) -> Result<bool, LineError> {
        if self.workspaces.contains(id) {
            return Ok(true);
        }
        let found = exists(tx, "SELECT 1 FROM workspaces WHERE id = ?1", id)?;
        if found {
            self.workspaces.insert(id.to_string());
        }
        Ok(found)
    }
}

/// What applying one record did.
pub(super) enum Effect {
    Applied,
    Unchanged,
}

pub(super) fn apply_line(
    tx: &Transaction,
    seen: &mut Seen,
    line: ParsedLine,
) -> Result<(&'static str, Effect), LineError> {
    let (kind, at) = (line.kind(), line.at);
    let effect = match &line.record {
        Record::Channel(r) => apply_channel(tx, r, at),
        Record::Workspace(r) => apply_workspace(tx, r, at),
        Record::Module(r) => apply_module(tx, seen, r, at),
        Record::User(r) => apply_unit(tx, seen, "users", r, at),
        Record::Device(r) => apply_unit(tx, seen, "devices", r, at),
        Record::Usage(r) => apply_usage(tx, seen, r, at),
        Record::Snapshot(_) => Err(LineError::Bad(
            "a snapshot header is valid only as the first line of a snapshot import (`import --snapshot`)".into(),
        )),
    }?;
    Ok((kind, effect))
}

/// A store failure while applying a line: the import stops; it is never a bad line.
pub(super) fn sql(e: rusqlite::Error) -> LineError {
    LineError::Store(StoreError::from(e))
}

/// Why a line could not be applied: its data (reported with its number), or the store (the import
/// stops and reports the store's failure, exit 1 — never 65).
#[derive(Debug)]
pub(super) enum LineError {
    Bad(String),
    Store(StoreError),
}

impl From<String> for LineError {
    fn from(s: String) -> Self {
        LineError::Bad(s)
    }
}

impl From<RecordProblem> for LineError {
    fn from(p: RecordProblem) -> Self {
        LineError::Bad(p.to_string())
    }
}

pub(super) fn older(what: &str, at: Millis, last: Millis) -> String {
    format!(
        "{what}: this record (at {}) is older than the last change the store knows ({}) and contradicts it; records for one entity must come in time order",
        format_ms(at),
        format_ms(last)
    )
}

pub(super) fn conflict(what: &str, at: Millis) -> String {
    format!(
        "{what}: another record for the same instant ({}) says otherwise; give each record its own \"at\"",
        format_ms(at)
    )
}

/// The history rule of the module doc, for a record at `at` about an entity whose last change
/// was at `last`: `Ok(false)` = it states what the store holds (unchanged), `Ok(true)` = apply it as
/// a change, `Err` = reject it. `agrees_then` tells whether an older record matches the history.
pub(super) fn history_rule(
    what: &str,
    at: Millis,
    last: Millis,
    same_as_now: bool,
    agrees_then: impl FnOnce() -> Result<bool, LineError>,
) -> Result<bool, LineError> {
    if at >= last && same_as_now {
        return Ok(false);
    }
    if at < last {
        return if agrees_then()? {
            Ok(false)
        } else {
            Err(older(what, at, last).into())
        };
    }
    if at == last {
        return Err(conflict(what, at).into());
    }
    Ok(true)
}

pub(super) fn apply_channel(
    tx: &Transaction,
    r: &ChannelRecord,
    at: Millis,
) -> Result<Effect, LineError> {
    let what = format!("channel {:?}", r.id);
    let cur: Option<(String, Millis)> = tx
        .prepare_cached("SELECT name, changed_at FROM channels WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([&r.id], |x| Ok((x.get(0)?, x.get(1)?)))
                .optional()
        })
        .map_err(sql)?;
    match cur {
        None => {
            tx.prepare_cached("INSERT INTO channels (id, name, changed_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![r.id, r.name, at]))
                .map_err(sql)?;
        }
        Some((name, last)) => {
            let change = history_rule(&what, at, last, name == r.name, || {
                let then: Option<String> = tx
                    .prepare_cached("SELECT name FROM channel_names WHERE channel_id = ?1 AND at <= ?2 ORDER BY at DESC LIMIT 1")
                    .and_then(|mut s| s.query_row(params![r.id, at], |x| x.get(0)).optional())
                    .map_err(sql)?;
                Ok(then.as_deref() == Some(r.name.as_str()))
            })?;
            if !change {
                return Ok(Effect::Unchanged);
            }
            tx.prepare_cached("UPDATE channels SET name = ?2, changed_at = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![r.id, r.name, at]))
                .map_err(sql)?;
        }
    }
    tx.prepare_cached("INSERT INTO channel_names (channel_id, at, name) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![r.id, at, r.name]))
        .map_err(sql)?;
    Ok(Effect::Applied)
}

pub(super) fn exists(tx: &Transaction, sql_text: &str, id: &str) -> Result<bool, LineError> {
    tx.prepare_cached(sql_text)
        .and_then(|mut s| s.exists([id]))
        .map_err(sql)
}

pub(super) fn apply_workspace(
    tx: &Transaction,
    r: &WorkspaceRecord,
    at: Millis,
) -> Result<Effect, LineError> {
    let what = format!("workspace {:?}", r.id);
    let (channel_in, name_in) = match (&r.channel, &r.name, r.removed) {
        (_, _, Some(true)) => return remove_workspace(tx, r, at, &what),
        (Some(c), Some(n), _) => (c, n),
        _ => {
            return Err(
                "a workspace needs \"channel\" and \"name\" unless \"removed\": true"
                    .to_string()
                    .into(),
            )
        }
    };
    if !exists(tx, "SELECT 1 FROM channels WHERE id = ?1", channel_in)? {
        return Err(format!(
            "workspace {:?} refers to channel {:?}, which is neither in the store nor defined earlier in this file",
            r.id, channel_in
        )
        .into());
    }
    let cur: Option<(String, String, Millis, Option<Millis>)> = tx
        .prepare_cached(
            "SELECT channel_id, name, changed_at, removed_at FROM workspaces WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&r.id], |x| {
                Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))
            })
            .optional()
        })
        .map_err(sql)?;
    match cur {
        None => {
            tx.prepare_cached(
                "INSERT INTO workspaces (id, channel_id, name, changed_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![r.id, channel_in, name_in, at]))
            .map_err(sql)?;
        }
        Some((channel, name, last, removed)) => {
            let same = channel == *channel_in && name == *name_in && removed.is_none();
            let change = history_rule(&what, at, last, same, || {
                let then: Option<(String, String)> = tx
                    .prepare_cached("SELECT channel_id, name FROM workspace_names WHERE workspace_id = ?1 AND at <= ?2 ORDER BY at DESC LIMIT 1")
                    .and_then(|mut s| s.query_row(params![r.id, at], |x| Ok((x.get(0)?, x.get(1)?))).optional())
                    .map_err(sql)?;
                Ok(then == Some((channel_in.clone(), name_in.clone())))
            })?;
            if !change {
                return Ok(Effect::Unchanged);
            }
            tx.prepare_cached(
                "UPDATE workspaces SET channel_id = ?2, name = ?3, changed_at = ?4, removed_at = NULL WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![r.id, channel_in, name_in, at]))
            .map_err(sql)?;
            if channel != *channel_in && removed.is_none() {
                // Moved: the old MSP's account gets one final zero per service.
                owe_final_zero(tx, &channel, &r.id, at)?;
            }
            // Back with this channel (moved back, or re-added): nothing is owed to it any more.
            tx.prepare_cached(
                "DELETE FROM offboarding WHERE connector_id = ?1 AND account_id = ?2 AND done_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![channel_in, r.id]))
            .map_err(sql)?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO workspace_names (workspace_id, at, channel_id, name) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![r.id, at, channel_in, name_in]))
    .map_err(sql)?;
    Ok(Effect::Applied)
}

/// `{"type":"workspace","id":…,"removed":true}`: the workspace leaves; its MSP is owed a final zero.
pub(super) fn remove_workspace(
    tx: &Transaction,
    r: &WorkspaceRecord,
    at: Millis,
    what: &str,
) -> Result<Effect, LineError> {
    let cur: Option<(String, Millis, Option<Millis>)> = tx
        .prepare_cached("SELECT channel_id, changed_at, removed_at FROM workspaces WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([&r.id], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
                .optional()
        })
        .map_err(sql)?;
    let Some((channel, last, removed)) = cur else {
        return Err(unknown_workspace("removal", &r.id).into());
    };
    if removed.is_some() {
        return Ok(Effect::Unchanged);
    }
    if !history_rule(what, at, last, false, || Ok(false))? {
        return Ok(Effect::Unchanged);
    }
    tx.prepare_cached("UPDATE workspaces SET removed_at = ?2, changed_at = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![r.id, at]))
        .map_err(sql)?;
    owe_final_zero(tx, &channel, &r.id, at)?;
    Ok(Effect::Applied)
}

pub(super) fn owe_final_zero(
    tx: &Transaction,
    channel: &str,
    account: &str,
    at: Millis,
) -> Result<(), LineError> {
    tx.prepare_cached(
        "INSERT INTO offboarding (connector_id, account_id, since, done_at) VALUES (?1, ?2, ?3, NULL)
         ON CONFLICT (connector_id, account_id) DO UPDATE SET since = excluded.since, done_at = NULL",
    )
    .and_then(|mut s| s.execute(params![channel, account, at]))
    .map_err(sql)?;
    Ok(())
}

pub(super) fn unknown_workspace(kind: &str, ws: &str) -> String {
    format!(
        "{kind} refers to workspace {ws:?}, which is neither in the store nor defined earlier in this file"
    )
}

pub(super) fn apply_module(
    tx: &Transaction,
    seen: &mut Seen,
    r: &ModuleRecord,
    at: Millis,
) -> Result<Effect, LineError> {
    if !seen.workspace_exists(tx, &r.workspace)? {
        return Err(unknown_workspace("module", &r.workspace).into());
    }
    let cur: Option<(bool, Millis)> = tx
        .prepare_cached(
            "SELECT enabled, changed_at FROM modules WHERE workspace_id = ?1 AND module = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![r.workspace, r.module], |x| {
                Ok((x.get(0)?, x.get(1)?))
            })
            .optional()
        })
        .map_err(sql)?;
    match cur {
        None => {
            tx.prepare_cached(
                "INSERT INTO modules (workspace_id, module, enabled, changed_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![r.workspace, r.module, r.enabled, at]))
            .map_err(sql)?;
        }
        Some((enabled, last)) => {
            let what = format!("module {:?} of workspace {:?}", r.module, r.workspace);
            let change = history_rule(&what, at, last, enabled == r.enabled, || {
                let then: bool = tx
                    .prepare_cached("SELECT 1 FROM module_intervals WHERE workspace_id = ?1 AND module = ?2 AND from_at <= ?3 AND (to_at IS NULL OR to_at > ?3)")
                    .and_then(|mut s| s.exists(params![r.workspace, r.module, at]))
                    .map_err(sql)?;
                Ok(then == r.enabled)
            })?;
            if !change {
                return Ok(Effect::Unchanged);
            }
            tx.prepare_cached(
                "UPDATE modules SET enabled = ?3, changed_at = ?4 WHERE workspace_id = ?1 AND module = ?2",
            )
            .and_then(|mut s| s.execute(params![r.workspace, r.module, r.enabled, at]))
            .map_err(sql)?;
            if !r.enabled {
                tx.prepare_cached("UPDATE module_intervals SET to_at = ?3 WHERE workspace_id = ?1 AND module = ?2 AND to_at IS NULL")
                    .and_then(|mut s| s.execute(params![r.workspace, r.module, at]))
                    .map_err(sql)?;
            }
        }
    }
    if r.enabled {
        tx.prepare_cached(
            "INSERT INTO module_intervals (workspace_id, module, from_at, to_at) VALUES (?1, ?2, ?3, NULL)",
        )
        .and_then(|mut s| s.execute(params![r.workspace, r.module, at]))
        .map_err(sql)?;
    }
    Ok(Effect::Applied)
}

pub(super) fn apply_unit(
    tx: &Transaction,
    seen: &mut Seen,
    kind: &str,
    r: &UnitRecord,
    at: Millis,
) -> Result<Effect, LineError> {
    let noun = if kind == "users" { "user" } else { "device" };
    if !seen.workspace_exists(tx, &r.workspace)? {
        return Err(unknown_workspace(noun, &r.workspace).into());
    }
    // A unit gets its ref when it is first protected (see the schema's doc).
    let fresh = seen.next_ref;
    let inserted = seen
        .insert_unit
        .execute(params![
            kind,
            r.id,
            r.protected.then_some(fresh),
            r.workspace,
            r.protected,
            at
        ])
        .map_err(sql)?;
    let unit: Option<i64> = if inserted == 1 {
        r.protected.then_some(fresh)
    } else {
        let (unit, ws, protected, last): (Option<i64>, String, bool, Millis) = tx
            .prepare_cached(
                "SELECT ref, workspace_id, protected, changed_at FROM units WHERE kind = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![kind, r.id], |x| {
                    Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))
                })
            })
            .map_err(sql)?;
        let what = format!("{noun} {:?}", r.id);
        let same = ws == r.workspace && protected == r.protected;
        let change = history_rule(&what, at, last, same, || {
            let then: Option<String> = match unit {
                None => None,
                Some(unit) => tx
                    .prepare_cached("SELECT workspace_id FROM unit_intervals WHERE unit = ?1 AND from_at <= ?2 AND (to_at IS NULL OR to_at > ?2)")
                    .and_then(|mut s| s.query_row(params![unit, at], |x| x.get(0)).optional())
                    .map_err(sql)?,
            };
            Ok(match then {
                Some(w) => r.protected && w == r.workspace,
                None => !r.protected,
            })
        })?;
        if !change {
            if let (true, Some(unit)) = (r.protected, unit) {
                seen.list_unit(unit);
            }
            return Ok(Effect::Unchanged);
        }
        let unit = unit.or(r.protected.then_some(fresh));
        tx.prepare_cached(
            "UPDATE units SET workspace_id = ?3, protected = ?4, changed_at = ?5, ref = ?6 WHERE kind = ?1 AND id = ?2",
        )
        .and_then(|mut s| s.execute(params![kind, r.id, r.workspace, r.protected, at, unit]))
        .map_err(sql)?;
        if let (true, Some(unit)) = (protected, unit) {
            // Close the open interval: the unit stopped being protected there, or moved.
            tx.prepare_cached(
                "UPDATE unit_intervals SET to_at = ?2 WHERE unit = ?1 AND to_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![unit, at]))
            .map_err(sql)?;
        }
        unit
    };
    if let (true, Some(unit)) = (r.protected, unit) {
        if unit == fresh {
            seen.next_ref += 1;
        }
        seen.list_unit(unit);
        seen.open_interval
            .execute(params![unit, at, kind, r.workspace])
            .map_err(sql)?;
    }
    Ok(Effect::Applied)
}

/// A usage record: one sample of a workspace's module's quantity. The same sample again is
/// unchanged; another quantity at the same instant is a conflict. Samples may come in any order
/// (each is in force until the next one in time).
pub(super) fn apply_usage(
    tx: &Transaction,
    seen: &mut Seen,
    r: &UsageRecord,
    at: Millis,
) -> Result<Effect, LineError> {
    if !seen.workspace_exists(tx, &r.workspace)? {
        return Err(unknown_workspace("usage", &r.workspace).into());
    }
    let quantity = r.quantity()?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO usage (workspace_id, module, at, quantity) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (workspace_id, module, at) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.workspace,
                r.module,
                at,
                i64::try_from(quantity.millionths()).unwrap_or(i64::MAX)
            ])
        })
        .map_err(sql)?;
    if inserted == 1 {
        return Ok(Effect::Applied);
    }
    let held: i64 = tx
        .prepare_cached(
            "SELECT quantity FROM usage WHERE workspace_id = ?1 AND module = ?2 AND at = ?3",
        )
        .and_then(|mut s| s.query_row(params![r.workspace, r.module, at], |x| x.get(0)))
        .map_err(sql)?;
    if u64::try_from(held).ok() == Some(quantity.millionths()) {
        Ok(Effect::Unchanged)
    } else {
        Err(conflict(
            &format!("usage of {:?} in workspace {:?}", r.module, r.workspace),
            at,
        )
        .into())
    }
}
