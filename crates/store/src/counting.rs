//! Counting: the billable unit count of every (workspace, service), as set-based SQL over the
//! inventory's intervals. These functions only read.
//!
//! Rule: the number of distinct units of the service's unit kind that are protected in the workspace
//! while the service's module is enabled there. A pair whose module is not enabled gets **no figure**
//! (never zero); such pairs are reported separately as *disabled* when the module was enabled before.
//!
//! - [`count_as_of`]: the state at one instant (daily cadence).
//! - [`count_month`]: a `[start, end)` window (a calendar month in the schedule's zone) reduced by
//!   [`MonthlyCount`]: `peak` (highest count at any instant while enabled), `end` (as of the last
//!   instant), `distinct` (units protected at any time while enabled).
//!
//! `peak` streams the window's intervals out of the covering index, one (workspace, kind) at a time,
//! into the pure sweep [`peak_in`]; the other figures are one SQL statement each. [`month_query`]
//! states `peak` as one SQL statement too: the benchmark hands it to the sqlite3 shell, and the
//! property tests check that both give the same figures.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::StoreError;
use crate::count::UnitCount;
use crate::domain::{MonthlyCount, UnitKind};
use crate::metered::{usage_as_of, usage_month};
use crate::time::Millis;

/// A service to count: its module and what it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    /// Module id in the inventory.
    pub module: String,
    /// Unit kind (`quantity`: a metered service, counted by [`crate::metered`]).
    pub unit: UnitKind,
    /// Its own monthly rule, overriding the one a monthly run asks for.
    pub monthly: Option<MonthlyCount>,
    /// Decimals a quantity is rounded up to (unit counts are whole).
    pub decimals: u8,
}

impl ServiceUnit {
    /// A service of `unit`s of `module`, with the run's monthly rule and no decimals.
    pub fn new(module: impl Into<String>, unit: UnitKind) -> Self {
        ServiceUnit {
            module: module.into(),
            unit,
            monthly: None,
            decimals: if unit == UnitKind::Quantity { 2 } else { 0 },
        }
    }
}

/// One billable figure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Figure {
    /// Workspace (= Gradient account id).
    pub workspace_id: String,
    /// Module (= service).
    pub module: String,
    /// Distinct protected units, or the metered quantity.
    pub unit_count: UnitCount,
}

/// What counting found: figures for enabled pairs, and pairs whose module is disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Enabled pairs with their count, ordered by workspace then module.
    pub figures: Vec<Figure>,
    /// (workspace, module) pairs whose module was enabled before but is not now (or not in the month).
    pub disabled: Vec<(String, String)>,
}

/// `WITH svc(module, kind) AS (VALUES ...)` for the configured services, and the statement's
/// parameters: the instants `leading` (`?1`, `?2`, ...), then the services'.
pub(crate) fn services_cte(
    services: &[ServiceUnit],
    leading: &[Millis],
) -> (String, Vec<SqlValue>) {
    let mut rows = Vec::new();
    let mut values: Vec<SqlValue> = leading.iter().map(|t| SqlValue::Integer(*t)).collect();
    for (i, s) in services.iter().enumerate() {
        let p = leading.len() + 1 + 2 * i;
        rows.push(format!("(?{p}, ?{})", p + 1));
        values.push(SqlValue::Text(s.module.clone()));
        values.push(SqlValue::Text(s.unit.as_str().to_string()));
    }
    (
        format!("svc(module, kind) AS (VALUES {})", rows.join(", ")),
        values,
    )
}

fn collect_figures(
    conn: &Connection,
    sql: &str,
    params: Vec<SqlValue>,
) -> Result<Vec<Figure>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok(Figure {
            workspace_id: r.get(0)?,
            module: r.get(1)?,
            unit_count: UnitCount::whole(u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0)),
        })
    })?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    out.sort();
    Ok(out)
}

fn collect_pairs(
    conn: &Connection,
    sql: &str,
    params: Vec<SqlValue>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    out.sort();
    Ok(out)
}

/// The statement (and its parameters) that yields `(workspace, module, count)` for every enabled
/// pair as of `at`: one set-based query over the interval tables.
pub fn as_of_query(services: &[ServiceUnit], at: Millis) -> (String, Vec<SqlValue>) {
    let (svc, params) = services_cte(services, &[at]);
    let sql = format!(
        "WITH {svc},
         enabled AS (
            SELECT m.workspace_id, m.module, s.kind
            FROM module_intervals m JOIN svc s ON s.module = m.module
            WHERE m.from_at <= ?1 AND (m.to_at IS NULL OR m.to_at > ?1)
         ),
         protected AS (
            -- One unit has at most one interval at any instant (import closes the open one first),
            -- so counting rows counts distinct units. Walking the covering index in (workspace,
            -- kind) order groups without a sort.
            SELECT u.workspace_id, u.kind, COUNT(*) AS n
            FROM unit_intervals u INDEXED BY unit_intervals_by_workspace
            WHERE u.from_at <= ?1 AND (u.to_at IS NULL OR u.to_at > ?1)
            GROUP BY u.workspace_id, u.kind
         )
         SELECT e.workspace_id, e.module, COALESCE(p.n, 0)
         FROM enabled e LEFT JOIN protected p ON p.workspace_id = e.workspace_id AND p.kind = e.kind"
    );
    (sql, params)
}

/// Counts as of instant `at`: unit services by [`as_of_query`], metered ones by
/// [`usage_as_of`].
pub fn count_as_of(
    conn: &Connection,
    services: &[ServiceUnit],
    at: Millis,
) -> Result<Counts, StoreError> {
    if services.is_empty() {
        return Ok(Counts::default());
    }
    let (metered, units) = split_metered(services);
    let mut figures = usage_as_of(conn, &metered, at)?;
    if !units.is_empty() {
        let (figures_sql, params) = as_of_query(&units, at);
        figures.extend(collect_figures(conn, &figures_sql, params)?);
    }
    figures.sort();
    let disabled = disabled_as_of(conn, services, at)?;
    Ok(Counts { figures, disabled })
}

/// Metered services apart from unit services.
fn split_metered(services: &[ServiceUnit]) -> (Vec<ServiceUnit>, Vec<ServiceUnit>) {
    services
        .iter()
        .cloned()
        .partition(|s| s.unit == UnitKind::Quantity)
}

/// Pairs whose module was enabled before `at` but is not at `at`.
fn disabled_as_of(
    conn: &Connection,
    services: &[ServiceUnit],
    at: Millis,
) -> Result<Vec<(String, String)>, StoreError> {
    let (svc, params) = services_cte(services, &[at]);
    let disabled_sql = format!(
        "WITH {svc}
         SELECT DISTINCT m.workspace_id, m.module
         FROM module_intervals m JOIN svc s ON s.module = m.module
         WHERE m.from_at <= ?1
         EXCEPT
         SELECT m.workspace_id, m.module FROM module_intervals m
         WHERE m.from_at <= ?1 AND (m.to_at IS NULL OR m.to_at > ?1)"
    );
    collect_pairs(conn, &disabled_sql, params)
}

/// The statement (and its parameters) that yields `(workspace, module, count)` for every pair
/// enabled at some time in `[start, end)`, reduced by `how` (`peak` or `distinct`; `end` is an
/// as-of query at the window's last instant).
pub fn month_query(
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
    how: MonthlyCount,
) -> (String, Vec<SqlValue>) {
    if how == MonthlyCount::End {
        return as_of_query(services, end - 1);
    }
    let (svc, params) = services_cte(services, &[start, end]);
    // Enabled stretches [sf, st) of each (workspace, module), clipped to the window.
    let enabled = format!(
        "WITH {svc},
         enabled AS (
            SELECT m.workspace_id, m.module, s.kind,
                   MAX(m.from_at, ?1) AS sf, MIN(COALESCE(m.to_at, ?2), ?2) AS st
            FROM module_intervals m JOIN svc s ON s.module = m.module
            WHERE m.from_at < ?2 AND (m.to_at IS NULL OR m.to_at > ?1)
         ),
         pairs AS (SELECT DISTINCT workspace_id, module FROM enabled)"
    );
    let sql = match how {
        MonthlyCount::Distinct => format!(
            "{enabled},
             n AS (
                SELECT e.workspace_id, e.module, COUNT(DISTINCT u.unit) AS n
                FROM enabled e JOIN unit_intervals u
                  ON u.workspace_id = e.workspace_id AND u.kind = e.kind
                 AND u.from_at < e.st AND (u.to_at IS NULL OR u.to_at > e.sf)
                GROUP BY e.workspace_id, e.module
             )
             SELECT p.workspace_id, p.module, COALESCE(n.n, 0)
             FROM pairs p LEFT JOIN n USING (workspace_id, module)"
        ),
        // Within one stretch, units protected for all of it add a constant; only the others
        // ("partial" pieces) change the count. A unit has at most one interval at any instant, so
        // the running sum of +1 at each partial piece's start and -1 at its end is how many of them
        // are protected then; RANGE frames apply every change at one instant before the sum is
        // read (half-open intervals). Peak = full + the highest running sum, per stretch, then the
        // highest stretch.
        _ => format!(
            "{enabled},
             partial AS (
                SELECT e.workspace_id, e.module, e.sf, e.st,
                       MAX(u.from_at, e.sf) AS f, MIN(COALESCE(u.to_at, e.st), e.st) AS t
                FROM enabled e JOIN unit_intervals u
                  ON u.workspace_id = e.workspace_id AND u.kind = e.kind
                 AND u.from_at < e.st AND (u.to_at IS NULL OR u.to_at > e.sf)
                WHERE u.from_at > e.sf OR (u.to_at IS NOT NULL AND u.to_at < e.st)
             ),
             deltas AS (
                SELECT workspace_id, module, sf, f AS ts, 1 AS d FROM partial
                UNION ALL
                SELECT workspace_id, module, sf, t AS ts, -1 AS d FROM partial WHERE t < st
             ),
             running AS (
                SELECT workspace_id, module, sf,
                       SUM(d) OVER (PARTITION BY workspace_id, module, sf ORDER BY ts
                                    RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
                FROM deltas
             ),
             partial_peak AS (
                SELECT workspace_id, module, sf, MAX(n) AS n FROM running GROUP BY workspace_id, module, sf
             ),
             stretch AS (
                SELECT e.workspace_id, e.module,
                       (SELECT COUNT(*) FROM unit_intervals u
                        WHERE u.workspace_id = e.workspace_id AND u.kind = e.kind
                          AND u.from_at <= e.sf AND (u.to_at IS NULL OR u.to_at >= e.st))
                       + MAX(COALESCE(pp.n, 0), 0) AS n
                FROM enabled e
                LEFT JOIN partial_peak pp ON pp.workspace_id = e.workspace_id AND pp.module = e.module AND pp.sf = e.sf
             )
             SELECT workspace_id, module, MAX(n) FROM stretch GROUP BY workspace_id, module"
        ),
    };
    (sql, params)
}

/// Counts over `[start, end)`: each service by its own monthly rule (`monthly`, else `how`).
pub fn count_month(
    conn: &Connection,
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
    how: MonthlyCount,
) -> Result<Counts, StoreError> {
    let mut groups: Vec<(bool, MonthlyCount, Vec<ServiceUnit>)> = Vec::new();
    for s in services {
        let key = (s.unit == UnitKind::Quantity, s.monthly.unwrap_or(how));
        match groups.iter_mut().find(|(q, h, _)| (*q, *h) == key) {
            Some(group) => group.2.push(s.clone()),
            None => groups.push((key.0, key.1, vec![s.clone()])),
        }
    }
    let mut all = Counts::default();
    for (metered, rule, group) in groups {
        let figures = if metered {
            usage_month(conn, &group, start, end, rule)?
        } else {
            unit_figures_month(conn, &group, start, end, rule)?
        };
        all.figures.extend(figures);
        all.disabled.extend(if rule == MonthlyCount::End {
            disabled_as_of(conn, &group, end - 1)?
        } else {
            disabled_in(conn, &group, start, end)?
        });
    }
    all.figures.sort();
    all.disabled.sort();
    all.disabled.dedup();
    Ok(all)
}

/// Unit services' figures over `[start, end)` by `how`.
fn unit_figures_month(
    conn: &Connection,
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
    how: MonthlyCount,
) -> Result<Vec<Figure>, StoreError> {
    match how {
        MonthlyCount::End => {
            let (sql, params) = as_of_query(services, end - 1);
            collect_figures(conn, &sql, params)
        }
        MonthlyCount::Peak | MonthlyCount::Average => month_peaks(conn, services, start, end),
        MonthlyCount::Distinct => {
            let (sql, params) = month_query(services, start, end, how);
            collect_figures(conn, &sql, params)
        }
    }
}

/// Pairs whose module was enabled before the window but not in it.
fn disabled_in(
    conn: &Connection,
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
) -> Result<Vec<(String, String)>, StoreError> {
    let (svc, params) = services_cte(services, &[start, end]);
    let disabled_sql = format!(
        "WITH {svc}
         SELECT DISTINCT m.workspace_id, m.module
         FROM module_intervals m JOIN svc s ON s.module = m.module
         WHERE m.from_at < ?2
         EXCEPT
         SELECT m.workspace_id, m.module FROM module_intervals m
         WHERE m.from_at < ?2 AND (m.to_at IS NULL OR m.to_at > ?1)"
    );
    collect_pairs(conn, &disabled_sql, params)
}

/// A unit's protected interval `[from, to)`; `to` is `None` while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Start (inclusive).
    pub from: Millis,
    /// End (exclusive), if it has ended.
    pub to: Option<Millis>,
}

/// The highest number of `pieces` that overlap at any one instant of `[from, to)`.
///
/// A unit has at most one piece at any instant, so for one unit kind of one workspace this is the
/// highest number of units protected at once. Pieces covering the whole span add a constant; the
/// others become +1 at their start and -1 at their end, and the running sum is read in time order,
/// ends before starts at the same instant (intervals are half-open). `events` is scratch space.
pub fn peak_in(pieces: &[Piece], from: Millis, to: Millis, events: &mut Vec<(Millis, i64)>) -> u64 {
    events.clear();
    let mut whole = 0u64;
    for p in pieces {
        let f = p.from.max(from);
        let t = p.to.map_or(to, |t| t.min(to));
        if f >= t {
            continue;
        }
        if f == from && t == to {
            whole += 1;
            continue;
        }
        events.push((f, 1));
        if t < to {
            events.push((t, -1));
        }
    }
    events.sort_unstable();
    let (mut now, mut highest) = (0i64, 0i64);
    for (_, d) in events.iter() {
        now += d;
        highest = highest.max(now);
    }
    whole + highest.unsigned_abs()
}

/// An enabled stretch `[from, to)` of one pair, inside the window; `figure` is the pair's figure.
struct Stretch {
    figure: usize,
    from: Millis,
    to: Millis,
}

/// `peak` over `[start, end)`: every pair enabled at some time in the window, with the highest
/// count over its enabled stretches. Reads the window's intervals once, in index order.
fn month_peaks(
    conn: &Connection,
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
) -> Result<Vec<Figure>, StoreError> {
    let (svc, params) = services_cte(services, &[start, end]);
    // Enabled stretches [from, to) of each (workspace, module), clipped to the window, by (workspace, kind).
    let mut stretches: HashMap<(String, String), Vec<Stretch>> = HashMap::new();
    let mut figures: Vec<Figure> = Vec::new();
    let mut pair_index: HashMap<(String, String), usize> = HashMap::new();
    {
        let mut stmt = conn.prepare(&format!(
            "WITH {svc}
             SELECT m.workspace_id, s.kind, m.module, MAX(m.from_at, ?1), MIN(COALESCE(m.to_at, ?2), ?2)
             FROM module_intervals m JOIN svc s ON s.module = m.module
             WHERE m.from_at < ?2 AND (m.to_at IS NULL OR m.to_at > ?1)"
        ))?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let (ws, kind, module): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let pair = (ws.clone(), module.clone());
            let i = *pair_index.entry(pair).or_insert_with(|| {
                figures.push(Figure {
                    workspace_id: ws.clone(),
                    module,
                    unit_count: UnitCount::ZERO,
                });
                figures.len() - 1
            });
            stretches.entry((ws, kind)).or_default().push(Stretch {
                figure: i,
                from: r.get(3)?,
                to: r.get(4)?,
            });
        }
    }
    if stretches.is_empty() {
        return Ok(figures);
    }
    let mut stmt = conn.prepare(
        "SELECT workspace_id, kind, from_at, to_at
         FROM unit_intervals INDEXED BY unit_intervals_by_workspace
         WHERE from_at < ?2 AND (to_at IS NULL OR to_at > ?1)
         ORDER BY workspace_id, kind",
    )?;
    let mut rows = stmt.query([start, end])?;
    let mut events = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    // The (workspace, kind) being read, and its stretches (None: no service counts it).
    let mut group: (String, String) = (String::new(), String::new());
    let mut current: Option<&Vec<Stretch>> = None;
    let mut finish = |current: Option<&Vec<Stretch>>, pieces: &[Piece]| {
        for s in current.into_iter().flatten() {
            let n = peak_in(pieces, s.from, s.to, &mut events);
            let figure = &mut figures[s.figure];
            figure.unit_count = figure.unit_count.max(UnitCount::whole(n));
        }
    };
    while let Some(r) = rows.next()? {
        let text = |i: usize| -> Result<&str, StoreError> {
            r.get_ref(i)?.as_str().map_err(|e| {
                StoreError::Damaged(format!("unit_intervals holds a non-text key: {e}"))
            })
        };
        let (ws, kind) = (text(0)?, text(1)?);
        if ws != group.0 || kind != group.1 {
            finish(current, &pieces);
            pieces.clear();
            group = (ws.to_string(), kind.to_string());
            current = stretches.get(&group);
        }
        if current.is_some() {
            pieces.push(Piece {
                from: r.get(2)?,
                to: r.get(3)?,
            });
        }
    }
    finish(current, &pieces);
    figures.sort();
    Ok(figures)
}

#[cfg(test)]
#[path = "counting_tests.rs"]
mod tests;
