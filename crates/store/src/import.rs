//! Import: inventory records as JSON Lines, applied to the store in one transaction.
//!
//! The input is streamed line by line (a 500 MB file is never held in memory). Every line is checked;
//! a bad line does not stop the check of later ones, but any bad line rolls the whole import back and
//! every bad line is reported with its number and reason.
//!
//! Each record takes effect at its `at` (default: the import's start). For one entity (a channel, a
//! workspace, a module of a workspace, a unit) the store keeps the time of its last change:
//! - a record at or after it that states what the store already holds changes nothing;
//! - a record after it that states something else is a change from `at` on;
//! - a record at the same instant that states something else is a conflict (rejected);
//! - a record before it is accepted only when it agrees with the history the store holds for that
//!   instant (so re-importing a history file changes nothing), and rejected otherwise.

use std::collections::BTreeMap;
use std::io::BufRead;

use rusqlite::{params, OptionalExtension, Statement, Transaction};
use serde::Deserialize;

use super::{Store, StoreError};
use crate::time::{format_ms, parse_rfc3339, Millis};

/// Longest accepted id (channel, workspace, module, unit), in characters.
pub const MAX_ID_CHARS: usize = 200;
/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 1000;
/// Longest accepted line, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// At most this many bad lines are listed one by one.
pub const MAX_LISTED_ERRORS: usize = 1000;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Some lines are bad: nothing was applied.
    #[error("{} bad line(s); nothing was applied. Fix them and import the file again:\n{}", .total, render_bad(.lines, *.total))]
    BadLines {
        /// The listed bad lines (at most [`MAX_LISTED_ERRORS`]).
        lines: Vec<BadLine>,
        /// How many lines were bad in all.
        total: usize,
    },
    /// The input could not be read.
    #[error("cannot read the import input: {0}")]
    Read(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn render_bad(lines: &[BadLine], total: usize) -> String {
    let mut s: Vec<String> = lines
        .iter()
        .map(|b| format!("  line {}: {}", b.line, b.reason))
        .collect();
    if total > lines.len() {
        s.push(format!("  ... and {} more", total - lines.len()));
    }
    s.join("\n")
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// What an import did, per record type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Non-blank lines read.
    pub lines: usize,
    /// Records that changed the store, per type (`channel`, `workspace`, `module`, `user`, `device`).
    pub applied: BTreeMap<&'static str, usize>,
    /// Records that stated what the store already held.
    pub unchanged: usize,
    /// Modules enabled in the inventory that no `[[service]]` names, so never pushed (filled by the
    /// caller, which knows the configuration: [`Store::unreported_modules`]).
    pub unreported: Vec<UnreportedModule>,
}

/// A module id enabled in the inventory that no configured `[[service]]` names (`EDR` where the
/// configuration says `edr`): its counts are never pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnreportedModule {
    /// The module id as the inventory spells it.
    pub module: String,
    /// Workspaces (not removed) where it is enabled now.
    pub workspaces: usize,
}

impl std::fmt::Display for UnreportedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.workspaces == 1 { "" } else { "s" };
        write!(f, "{:?} ({} workspace{s})", self.module, self.workspaces)
    }
}

/// The line that names unreported modules (`not reported: modules with no [[service]]: "EDR" (3
/// workspaces)`), or `None` when there are none.
pub fn unreported_line(modules: &[UnreportedModule]) -> Option<String> {
    if modules.is_empty() {
        return None;
    }
    let list: Vec<String> = modules.iter().map(|m| m.to_string()).collect();
    Some(format!(
        "not reported: modules with no [[service]]: {}; add a [[service]] with that module id (exact, case-sensitive) or fix the inventory",
        list.join(", ")
    ))
}

impl Store {
    /// Modules enabled now in a workspace that is not removed, whose id is none of `configured`,
    /// with how many workspaces enable each; sorted by module id.
    pub fn unreported_modules(
        &self,
        configured: &[&str],
    ) -> Result<Vec<UnreportedModule>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT m.module, COUNT(*) FROM modules m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.enabled = 1 AND w.removed_at IS NULL GROUP BY m.module ORDER BY m.module",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (module, n) = row?;
            if !configured.contains(&module.as_str()) {
                out.push(UnreportedModule {
                    module,
                    workspaces: usize::try_from(n).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per: Vec<String> = ["channel", "workspace", "module", "user", "device"]
            .iter()
            .map(|t| format!("{} {t}", self.applied.get(t).copied().unwrap_or(0)))
            .collect();
        write!(
            f,
            "imported {} record(s): applied {}; {} unchanged",
            self.lines,
            per.join(", "),
            self.unchanged
        )?;
        if let Some(line) = unreported_line(&self.unreported) {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Record {
    Channel(ChannelRecord),
    Workspace(WorkspaceRecord),
    Module(ModuleRecord),
    User(UnitRecord),
    Device(UnitRecord),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRecord {
    id: String,
    name: String,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceRecord {
    id: String,
    /// Required unless `removed`.
    channel: Option<String>,
    /// Required unless `removed`.
    name: Option<String>,
    /// The workspace left the vendor: its MSP's account gets one final zero per service.
    removed: Option<bool>,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleRecord {
    workspace: String,
    module: String,
    enabled: bool,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitRecord {
    workspace: String,
    id: String,
    protected: bool,
    at: Option<String>,
}

/// What one import keeps between records: the workspace ids known to exist (the store never deletes
/// one), and the two statements of its hot path (a new unit and its interval), prepared once.
struct Seen<'t> {
    workspaces: std::collections::HashSet<String>,
    insert_unit: Statement<'t>,
    open_interval: Statement<'t>,
    /// The ref the next unit protected for the first time gets.
    next_ref: i64,
}

impl<'t> Seen<'t> {
    fn new(tx: &'t Transaction) -> rusqlite::Result<Self> {
        Ok(Seen {
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

    fn workspace_exists(&mut self, tx: &Transaction, id: &str) -> Result<bool, LineError> {
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
enum Effect {
    Applied,
    Unchanged,
}

/// Imports JSON Lines from `input` into the store in one transaction, at import time `now`.
pub fn import<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
) -> Result<ImportSummary, ImportError> {
    // A larger page cache keeps the index pages of a big import in memory (32 MiB at most).
    // The import looks up every reference it writes (a workspace's channel, a unit's or module's
    // workspace) before writing it, so SQLite's own foreign-key check of each row is switched off
    // for the import's transaction (it cannot change inside one) and back on afterwards.
    store
        .conn()
        .execute_batch("PRAGMA cache_size = -32768; PRAGMA foreign_keys = OFF")
        .map_err(StoreError::from)?;
    let result = apply_all(store, input, now);
    let restored = store
        .conn()
        .execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA cache_size = {}",
            super::CACHE_SIZE
        ))
        .map_err(StoreError::from);
    let summary = result?;
    restored?;
    Ok(summary)
}

/// Lines travel from the reading thread to the applying one in batches of this many.
const BATCH_LINES: usize = 1024;
/// At most this many batches wait to be applied (bounds the memory of a fast reader).
const BATCHES_IN_FLIGHT: usize = 16;

/// One non-blank line, as the reading thread parsed it.
struct ReadLine {
    line: usize,
    parsed: Result<ParsedLine, String>,
}

/// Reads, checks and applies every line. Two threads: this one applies records to the store while
/// a second one reads and parses the next lines (about a fifth of an import's work, which needs no
/// store).
fn apply_all<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
) -> Result<ImportSummary, ImportError> {
    let tx = store
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    let mut summary = ImportSummary::default();
    let mut bad: Vec<BadLine> = Vec::new();
    let mut total_bad = 0usize;
    let mut seen = Seen::new(&tx).map_err(StoreError::from)?;
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<ReadLine>>(BATCHES_IN_FLIGHT);
    let read = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("import-reader".into())
            .spawn_scoped(scope, move || read_lines(input, now, send))
            .map_err(|e| ImportError::Read(format!("cannot start the reading thread: {e}")))?;
        for batch in receive {
            for ReadLine { line, parsed } in batch {
                summary.lines += 1;
                let applied = parsed
                    .map_err(LineError::Bad)
                    .and_then(|p| apply_line(&tx, &mut seen, p));
                match applied {
                    Ok((kind, Effect::Applied)) => *summary.applied.entry(kind).or_default() += 1,
                    Ok((_, Effect::Unchanged)) => summary.unchanged += 1,
                    // The store failed: stop now (dropping the transaction rolls everything back).
                    Err(LineError::Store(e)) => return Err(ImportError::Store(e)),
                    Err(LineError::Bad(reason)) => {
                        total_bad += 1;
                        if bad.len() < MAX_LISTED_ERRORS {
                            bad.push(BadLine { line, reason });
                        }
                    }
                }
            }
        }
        reader
            .join()
            .unwrap_or_else(|_| Err(ImportError::Read("the reading thread failed".into())))
    });
    drop(seen);
    // On any error, dropping the transaction rolls it back.
    read?;
    if total_bad > 0 {
        return Err(ImportError::BadLines {
            lines: bad,
            total: total_bad,
        });
    }
    tx.commit().map_err(StoreError::from)?;
    // Keep the query planner's statistics in step with the inventory (SQLite limits the work of
    // `optimize`; a failure here costs only plan quality, never data).
    if let Err(e) = store.conn().execute_batch("PRAGMA optimize") {
        tracing::debug!(error = %e, "PRAGMA optimize after the import failed");
    }
    Ok(summary)
}

/// The reading thread: every non-blank line, parsed, in batches, until the input ends or the
/// applying side stops listening.
fn read_lines<R: BufRead>(
    mut input: R,
    now: Millis,
    send: std::sync::mpsc::SyncSender<Vec<ReadLine>>,
) -> Result<(), ImportError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut line = 0usize;
    let mut batch = Vec::with_capacity(BATCH_LINES);
    loop {
        buf.clear();
        let n = read_line_bounded(&mut input, &mut buf)
            .map_err(|e| ImportError::Read(e.to_string()))?;
        if n == 0 {
            break;
        }
        line += 1;
        let parsed = if n > MAX_LINE_BYTES {
            Err(format!(
                "line is longer than {MAX_LINE_BYTES} bytes ({n} bytes)"
            ))
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Err("not UTF-8 text".to_string()),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(text.trim(), now),
            }
        };
        batch.push(ReadLine { line, parsed });
        if batch.len() == BATCH_LINES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
            if send.send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        // An error here means the applying side has stopped; it reports why.
        let _ = send.send(batch);
    }
    Ok(())
}

/// Reads one line (up to and excluding `\n`), keeping at most `MAX_LINE_BYTES + 1` bytes of it in
/// `buf` while still consuming the rest; returns the line's full length (0 at end of input).
fn read_line_bounded<R: BufRead>(input: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0usize;
    let mut saw_any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if saw_any { total.max(1) } else { 0 });
        }
        saw_any = true;
        let (part, consumed, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        total += part.len();
        input.consume(consumed);
        if done {
            // A blank line still counts as a line.
            return Ok(total.max(1));
        }
    }
}

/// One line, parsed and checked against everything that does not need the store.
pub struct ParsedLine {
    record: Record,
    at: Millis,
}

impl ParsedLine {
    /// The record type (`channel`, `workspace`, `module`, `user`, `device`).
    pub fn kind(&self) -> &'static str {
        match self.record {
            Record::Channel(_) => "channel",
            Record::Workspace(_) => "workspace",
            Record::Module(_) => "module",
            Record::User(_) => "user",
            Record::Device(_) => "device",
        }
    }

    /// When it takes effect.
    pub fn at(&self) -> Millis {
        self.at
    }
}

/// Parses and checks one line (JSON, type, fields, ids, names, time); `now` is the default `at`.
pub fn parse_line(text: &str, now: Millis) -> Result<ParsedLine, String> {
    let record: Record = serde_json::from_str(text).map_err(|e| json_reason(&e, text))?;
    let at = match &record {
        Record::Channel(r) => {
            check_id("id", &r.id)?;
            check_name(&r.name)?;
            at_or(&r.at, now)?
        }
        Record::Workspace(r) => {
            check_id("id", &r.id)?;
            if r.removed != Some(true) {
                let channel = r.channel.as_deref().ok_or("missing field `channel`")?;
                let name = r.name.as_deref().ok_or("missing field `name`")?;
                check_id("channel", channel)?;
                check_name(name)?;
            }
            at_or(&r.at, now)?
        }
        Record::Module(r) => {
            check_id("workspace", &r.workspace)?;
            check_id("module", &r.module)?;
            at_or(&r.at, now)?
        }
        Record::User(r) | Record::Device(r) => {
            check_id("workspace", &r.workspace)?;
            check_id("id", &r.id)?;
            at_or(&r.at, now)?
        }
    };
    Ok(ParsedLine { record, at })
}

fn apply_line(
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
    }?;
    Ok((kind, effect))
}

fn json_reason(e: &serde_json::Error, text: &str) -> String {
    let msg = e.to_string();
    if e.is_syntax() || e.is_eof() {
        return format!("not valid JSON ({msg})");
    }
    if msg.starts_with("unknown variant") || msg.contains("missing field `type`") {
        return format!("{msg}; \"type\" must be one of channel, workspace, module, user, device");
    }
    if !text.starts_with('{') {
        return "each line must be one JSON object".into();
    }
    // serde's own words name the field: "missing field `id`", "invalid type: integer `5`, expected a string".
    msg.split(" at line ").next().unwrap_or(&msg).to_string()
}

fn check_id(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("\"{field}\" must not be empty"));
    }
    if v.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "\"{field}\" is longer than {MAX_ID_CHARS} characters"
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("\"{field}\" contains control characters"));
    }
    if v.trim() != v {
        return Err(format!(
            "\"{field}\" has leading or trailing white space: {v:?}"
        ));
    }
    Ok(())
}

fn check_name(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("\"name\" must not be empty".into());
    }
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "\"name\" is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if v.chars().any(char::is_control) {
        return Err("\"name\" contains control characters (e.g. a line break)".into());
    }
    Ok(())
}

/// How far in the future an `at` may be (clock skew between the vendor's systems and ours).
pub const MAX_FUTURE_MS: Millis = 5 * 60 * 1000;

fn at_or(at: &Option<String>, now: Millis) -> Result<Millis, String> {
    match at {
        None => Ok(now),
        Some(s) => {
            let t = parse_rfc3339(s).map_err(|e| format!("\"at\": {e}"))?;
            // The future is judged by the wall clock (an import's `now` may be set back in tests).
            if t > now.max(crate::time::now_ms()) + MAX_FUTURE_MS {
                return Err(format!(
                    "\"at\" {s} is more than 5 minutes in the future; a record takes effect when it happened — fix the exporter's clock or date"
                ));
            }
            Ok(t)
        }
    }
}

/// A store failure while applying a line: the import stops; it is never a bad line.
fn sql(e: rusqlite::Error) -> LineError {
    LineError::Store(StoreError::from(e))
}

/// Why a line could not be applied: its data (reported with its number), or the store (the import
/// stops and reports the store's failure, exit 1 — never 65).
#[derive(Debug)]
enum LineError {
    Bad(String),
    Store(StoreError),
}

impl From<String> for LineError {
    fn from(s: String) -> Self {
        LineError::Bad(s)
    }
}

fn older(what: &str, at: Millis, last: Millis) -> String {
    format!(
        "{what}: this record (at {}) is older than the last change the store knows ({}) and contradicts it; records for one entity must come in time order",
        format_ms(at),
        format_ms(last)
    )
}

fn conflict(what: &str, at: Millis) -> String {
    format!(
        "{what}: another record for the same instant ({}) says otherwise; give each record its own \"at\"",
        format_ms(at)
    )
}

/// The history rule of the module doc, for a record at `at` about an entity whose last change
/// was at `last`: `Ok(false)` = it states what the store holds (unchanged), `Ok(true)` = apply it as
/// a change, `Err` = reject it. `agrees_then` tells whether an older record matches the history.
fn history_rule(
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

fn apply_channel(tx: &Transaction, r: &ChannelRecord, at: Millis) -> Result<Effect, LineError> {
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

fn exists(tx: &Transaction, sql_text: &str, id: &str) -> Result<bool, LineError> {
    tx.prepare_cached(sql_text)
        .and_then(|mut s| s.exists([id]))
        .map_err(sql)
}

fn apply_workspace(tx: &Transaction, r: &WorkspaceRecord, at: Millis) -> Result<Effect, LineError> {
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
fn remove_workspace(
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

fn owe_final_zero(
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

fn unknown_workspace(kind: &str, ws: &str) -> String {
    format!(
        "{kind} refers to workspace {ws:?}, which is neither in the store nor defined earlier in this file"
    )
}

fn apply_module(
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

fn apply_unit(
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
        seen.open_interval
            .execute(params![unit, at, kind, r.workspace])
            .map_err(sql)?;
    }
    Ok(Effect::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_store;

    fn run(s: &mut Store, text: &str) -> Result<ImportSummary, ImportError> {
        import(
            s,
            text.as_bytes(),
            parse_rfc3339("2026-11-01T00:00:00Z").unwrap(),
        )
    }

    fn count(s: &Store, table: &str) -> i64 {
        s.conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    const GOOD: &str = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso Ltd"}
{"type":"module","workspace":"ws-1","module":"endpoint_security","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-02T09:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":false,"at":"2026-10-20T09:00:00Z"}

{"type":"device","workspace":"ws-1","id":"d-1","protected":false}
"#;

    #[test]
    fn good_file_applies_and_reimport_changes_nothing() {
        let (_d, mut s) = temp_store();
        let sum = run(&mut s, GOOD).unwrap();
        assert_eq!(sum.lines, 6);
        assert_eq!(sum.applied.get("user"), Some(&2));
        assert_eq!(sum.unchanged, 0);
        assert_eq!(count(&s, "unit_intervals"), 1);
        let again = run(&mut s, GOOD).unwrap();
        assert_eq!(again.applied.values().sum::<usize>(), 0, "{again}");
        assert_eq!(again.unchanged, 6);
        assert_eq!(count(&s, "unit_intervals"), 1);
        assert_eq!(count(&s, "channel_names"), 1);
        let (from, to): (i64, Option<i64>) = s
            .conn()
            .query_row("SELECT from_at, to_at FROM unit_intervals", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(format_ms(from), "2026-10-02T09:00:00Z");
        assert_eq!(to.map(format_ms).as_deref(), Some("2026-10-20T09:00:00Z"));
    }

    #[test]
    fn bad_lines_are_all_listed_and_nothing_is_applied() {
        let (_d, mut s) = temp_store();
        let text = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
not json
{"type":"workspace","id":"ws-1","channel":"msp-9","name":"X"}
{"type":"gadget","id":"g"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":"yes"}
{"type":"channel","id":"msp-2"}
{"type":"channel","id":"msp-3","name":"Y","at":"yesterday"}
{"type":"channel","id":"msp-4","name":"Z","colour":"red"}
{"type":"channel","id":5,"name":"Z"}
"#;
        let err = run(&mut s, text).unwrap_err();
        let ImportError::BadLines { lines, total } = &err else {
            panic!("{err}")
        };
        assert_eq!(*total, 8);
        let nums: Vec<usize> = lines.iter().map(|b| b.line).collect();
        assert_eq!(nums, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        let msg = err.to_string();
        assert!(
            msg.contains("line 3: workspace \"ws-1\" refers to channel \"msp-9\""),
            "{msg}"
        );
        assert!(msg.contains("line 6: missing field `name`"), "{msg}");
        assert!(msg.contains("line 7: \"at\""), "{msg}");
        assert!(msg.contains("line 8: unknown field `colour`"), "{msg}");
        assert!(
            msg.contains("line 4") && msg.contains("must be one of channel"),
            "{msg}"
        );
        // Line 1 was good but nothing was applied.
        assert_eq!(count(&s, "channels"), 0);
    }

    #[test]
    fn a_unit_gets_its_ref_when_first_protected_and_keeps_it() {
        let (_d, mut s) = temp_store();
        run(&mut s, GOOD).unwrap();
        let refs = |s: &Store| -> Vec<(String, Option<i64>)> {
            s.conn()
                .prepare("SELECT id, ref FROM units ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        // u-1 was protected (then not); d-1 never was.
        assert_eq!(
            refs(&s),
            vec![("d-1".to_string(), None), ("u-1".to_string(), Some(1))]
        );
        // A later import: d-1 is protected for the first time, u-1 again, and a new unit arrives.
        run(
            &mut s,
            r#"{"type":"device","workspace":"ws-1","id":"d-1","protected":true,"at":"2026-11-02T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-11-02T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-2","protected":true,"at":"2026-11-02T00:00:00Z"}
"#,
        )
        .unwrap();
        assert_eq!(
            refs(&s),
            vec![
                ("d-1".to_string(), Some(2)),
                ("u-1".to_string(), Some(1)),
                ("u-2".to_string(), Some(3))
            ]
        );
        let intervals = s.unit_intervals_for_test();
        let t = |x: &str| parse_rfc3339(x).unwrap();
        assert_eq!(
            intervals,
            vec![
                (
                    1,
                    t("2026-10-02T09:00:00Z"),
                    Some(t("2026-10-20T09:00:00Z"))
                ),
                (1, t("2026-11-02T00:00:00Z"), None),
                (2, t("2026-11-02T00:00:00Z"), None),
                (3, t("2026-11-02T00:00:00Z"), None),
            ]
        );
    }

    #[test]
    fn references_are_checked_by_the_import_and_foreign_keys_come_back_on() {
        let fk = |s: &Store| -> i64 {
            s.conn()
                .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
                .unwrap()
        };
        let (_d, mut s) = temp_store();
        // SQLite's own check is off during an import, so the import's must catch every dangling
        // reference, in a file of many batches.
        let mut text = String::from(GOOD);
        for i in 0..3000 {
            text += &format!(
                "{{\"type\":\"device\",\"workspace\":\"ws-1\",\"id\":\"bulk-{i}\",\"protected\":true}}\n"
            );
        }
        text += r#"{"type":"device","workspace":"ws-404","id":"d-x","protected":true}
{"type":"module","workspace":"ws-404","module":"edr","enabled":true}
"#;
        let err = run(&mut s, &text).unwrap_err().to_string();
        assert!(err.contains("2 bad line(s)"), "{err}");
        assert!(
            err.contains("device refers to workspace \"ws-404\""),
            "{err}"
        );
        assert!(
            err.contains("module refers to workspace \"ws-404\""),
            "{err}"
        );
        assert_eq!(fk(&s), 1, "foreign keys are on again after a failed import");
        assert_eq!(count(&s, "units"), 0);
        let summary = run(&mut s, GOOD).unwrap();
        assert_eq!(summary.lines, 6);
        assert_eq!(fk(&s), 1, "and after a good one");
        let dangling: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
    }

    #[test]
    fn a_bad_file_after_a_good_one_leaves_the_good_state() {
        let (_d, mut s) = temp_store();
        run(&mut s, GOOD).unwrap();
        let bad = r#"{"type":"workspace","id":"ws-2","channel":"msp-1","name":"Fabrikam"}
{"type":"user","workspace":"ws-2","id":"u-2","protected":true}
{"type":"user","workspace":"ws-3","id":"u-3","protected":true}
"#;
        let err = run(&mut s, bad).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(count(&s, "workspaces"), 1);
        assert_eq!(count(&s, "units"), 2);
    }

    #[test]
    fn older_contradicting_record_is_rejected_but_agreeing_one_is_accepted() {
        let (_d, mut s) = temp_store();
        run(&mut s, GOOD).unwrap();
        // u-1 was protected on 2026-10-10 in ws-1: agreeing, unchanged.
        let ok = r#"{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-10T00:00:00Z"}"#;
        assert_eq!(run(&mut s, ok).unwrap().unchanged, 1);
        // Claiming it was unprotected then contradicts history.
        let bad = r#"{"type":"user","workspace":"ws-1","id":"u-1","protected":false,"at":"2026-10-10T00:00:00Z"}"#;
        let err = run(&mut s, bad).unwrap_err().to_string();
        assert!(err.contains("older than the last change"), "{err}");
    }

    #[test]
    fn same_instant_conflict_is_rejected() {
        let (_d, mut s) = temp_store();
        let text = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"A"}
{"type":"module","workspace":"ws-1","module":"m","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"module","workspace":"ws-1","module":"m","enabled":false,"at":"2026-10-01T00:00:00Z"}
"#;
        let err = run(&mut s, text).unwrap_err().to_string();
        assert!(
            err.contains("line 4") && err.contains("same instant"),
            "{err}"
        );
    }

    #[test]
    fn unit_moves_between_workspaces_close_and_open_intervals() {
        let (_d, mut s) = temp_store();
        let text = r#"{"type":"channel","id":"c","name":"C"}
{"type":"workspace","id":"w1","channel":"c","name":"W1"}
{"type":"workspace","id":"w2","channel":"c","name":"W2"}
{"type":"device","workspace":"w1","id":"d","protected":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w2","id":"d","protected":true,"at":"2026-10-15T00:00:00Z"}
"#;
        run(&mut s, text).unwrap();
        let rows: Vec<(String, Option<i64>)> = s
            .conn()
            .prepare("SELECT workspace_id, to_at FROM unit_intervals ORDER BY from_at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "w1");
        assert!(rows[0].1.is_some());
        assert_eq!(rows[1], ("w2".to_string(), None));
    }

    #[test]
    fn hostile_values_are_rejected_with_reasons() {
        let (_d, mut s) = temp_store();
        let long = "x".repeat(10_000);
        let text = format!(
            "{{\"type\":\"channel\",\"id\":\"c\",\"name\":\"{long}\"}}\n{{\"type\":\"channel\",\"id\":\"c2\",\"name\":\"a\\nb\"}}\n{{\"type\":\"channel\",\"id\":\"../a/b\",\"name\":\"Quote \\\" and ünïcödé\"}}\n"
        );
        let err = run(&mut s, &text).unwrap_err().to_string();
        assert!(err.contains("line 1: \"name\" is longer than"), "{err}");
        assert!(
            err.contains("line 2: \"name\" contains control characters"),
            "{err}"
        );
        assert!(!err.contains("line 3"), "{err}");
    }

    #[test]
    fn overlong_line_is_rejected_without_holding_it() {
        let (_d, mut s) = temp_store();
        let text = format!(
            "{}\n{{\"type\":\"channel\",\"id\":\"c\",\"name\":\"C\"}}\n",
            "x".repeat(MAX_LINE_BYTES * 3)
        );
        let err = run(&mut s, &text).unwrap_err().to_string();
        assert!(err.contains("line 1: line is longer"), "{err}");
        assert!(!err.contains("line 2"), "{err}");
    }
}
