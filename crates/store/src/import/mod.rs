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

use super::{Store, StoreError};
use crate::count::UnitCount;
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
    /// A snapshot would drop more than the allowed share of a channel: nothing was applied.
    #[error("the snapshot was refused, nothing was applied: it would drop more than {max_percent}% of a channel's protected units or workspaces ({}); a truncated export must never zero an MSP's bill. If the customers really left, import it again with --allow-shrink (API: allow_shrink=true), or raise inventory.max_snapshot_shrink_percent", .channels.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    SnapshotShrink {
        /// Each channel over the share, with its figures.
        channels: Vec<Shrink>,
        /// The share allowed (`inventory.max_snapshot_shrink_percent`).
        max_percent: u32,
    },
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
    /// A snapshot's implied changes (None for a records import).
    pub snapshot: Option<Implied>,
}

/// A module id enabled in the inventory that no configured `[[service]]` names (`EDR` where the
/// configuration says `edr`): its counts are never pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
        if let Some(i) = &self.snapshot {
            write!(
                f,
                "\nsnapshot: {} unit(s) unprotected, {} module(s) disabled, {} workspace(s) removed that the file did not list",
                i.unprotected, i.disabled, i.removed
            )?;
        }
        if let Some(line) = unreported_line(&self.unreported) {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}

mod apply;
mod record;
mod snapshot;
#[cfg(test)]
mod tests;

use apply::*;
pub use record::{parse_line, ParsedLine, RecordProblem, MAX_FUTURE_MS};
pub use snapshot::{Implied, Shrink, SnapshotRules};

/// Imports JSON Lines from `input` into the store in one transaction, at import time `now`.
pub fn import<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
) -> Result<ImportSummary, ImportError> {
    import_with(store, input, now, None)
}

/// Imports a snapshot (see [`snapshot`](self::snapshot)): the file states the whole state of every
/// channel it names, as of its header's `at` (default `now`).
pub fn import_snapshot<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
    rules: SnapshotRules,
) -> Result<ImportSummary, ImportError> {
    import_with(store, input, now, Some(rules))
}

fn import_with<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
    snapshot: Option<SnapshotRules>,
) -> Result<ImportSummary, ImportError> {
    // A larger page cache keeps the index pages of a big import in memory (32 MiB at most).
    // The import looks up every reference it writes (a workspace's channel, a unit's or module's
    // workspace) before writing it, so SQLite's own foreign-key check of each row is switched off
    // for the import's transaction (it cannot change inside one) and back on afterwards.
    store
        .conn()
        .execute_batch("PRAGMA cache_size = -32768; PRAGMA foreign_keys = OFF")
        .map_err(StoreError::from)?;
    // Every statement of the import's hot path stays prepared (a snapshot adds four to the
    // records' own: past the default 16, statements would be evicted and prepared again per line).
    store.conn().set_prepared_statement_cache_capacity(64);
    let result = apply_all(store, input, now, snapshot);
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
    parsed: Result<ParsedLine, RecordProblem>,
}

/// Reads, checks and applies every line. Two threads: this one applies records to the store while
/// a second one reads and parses the next lines (about a fifth of an import's work, which needs no
/// store).
fn apply_all<R: BufRead + Send>(
    store: &mut Store,
    input: R,
    now: Millis,
    snapshot: Option<SnapshotRules>,
) -> Result<ImportSummary, ImportError> {
    let tx = store
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    let mut summary = ImportSummary::default();
    let mut bad: Vec<BadLine> = Vec::new();
    let mut total_bad = 0usize;
    let mut seen = Seen::new(&tx).map_err(StoreError::from)?;
    if snapshot.is_some() {
        seen.listed_units = Some(Vec::new());
    }
    if snapshot.is_some() {
        snapshot::start(&tx).map_err(StoreError::from)?;
    }
    // The snapshot's instant: its header's `at`, else the import's.
    let mut snapshot_at = now;
    let mut first = true;
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<ReadLine>>(BATCHES_IN_FLIGHT);
    let read = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("import-reader".into())
            .spawn_scoped(scope, move || {
                read_lines(input, now, snapshot.is_some(), send)
            })
            .map_err(|e| ImportError::Read(format!("cannot start the reading thread: {e}")))?;
        for batch in receive {
            for ReadLine { line, parsed } in batch {
                summary.lines += 1;
                let is_first = std::mem::take(&mut first);
                if let Ok(p) = &parsed {
                    if matches!(p.record, record::Record::Snapshot(_))
                        && snapshot.is_some()
                        && is_first
                    {
                        snapshot_at = p.at;
                        continue;
                    }
                    if snapshot.is_some() {
                        snapshot::note(&tx, &p.record).map_err(StoreError::from)?;
                    }
                }
                let applied = parsed
                    .map_err(LineError::from)
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
    // On any error, dropping the transaction rolls it back.
    read?;
    if total_bad > 0 {
        return Err(ImportError::BadLines {
            lines: bad,
            total: total_bad,
        });
    }
    if let Some(rules) = snapshot {
        summary.snapshot = Some(snapshot::complete(&tx, &mut seen, snapshot_at, rules)?);
    }
    drop(seen);
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
    mut now: Millis,
    snapshot: bool,
    send: std::sync::mpsc::SyncSender<Vec<ReadLine>>,
) -> Result<(), ImportError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut line = 0usize;
    let mut batch = Vec::with_capacity(BATCH_LINES);
    let mut first = true;
    loop {
        buf.clear();
        let n = read_line_bounded(&mut input, &mut buf)
            .map_err(|e| ImportError::Read(e.to_string()))?;
        if n == 0 {
            break;
        }
        line += 1;
        let parsed = if n > MAX_LINE_BYTES {
            Err(RecordProblem::TooLong {
                max: MAX_LINE_BYTES,
                len: n,
            })
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Err(RecordProblem::NotUtf8),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(text.trim(), now),
            }
        };
        // A snapshot's header (its first record) sets the default `at` of every line after it.
        if std::mem::take(&mut first) && snapshot {
            if let Ok(p) = &parsed {
                if p.kind() == "snapshot" {
                    now = p.at();
                }
            }
        }
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
