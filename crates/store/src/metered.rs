//! Counting of metered services (`unit = "quantity"`): the figure of a (workspace, service) is the
//! workspace's quantity from its `usage` samples (each in force from its `at` until the pair's next
//! sample; before the first sample the quantity is 0), while the service's module is enabled there.
//! As for units, a pair whose module is not enabled gets no figure (never zero).
//!
//! - daily: the sample in force at the run's instant ([`usage_as_of`]);
//! - monthly ([`usage_month`]): `peak` — the highest value in force while enabled in the month;
//!   `end` — the value in force at the month's last instant; `average` — the value integrated over
//!   the month's enabled time, divided by the **whole** month's length (a service enabled for half
//!   the month at 100 GB averages 50 GB).
//!
//! Every figure is rounded **up** to the service's `decimals`. [`quantity_over`] is the pure rule
//! the SQL feeds; the property tests hold it to a brute-force model.

use std::collections::HashMap;

use rusqlite::{params, params_from_iter, Connection};

use super::counting::{services_cte, Figure, ServiceUnit};
use super::StoreError;
use crate::count::UnitCount;
use crate::domain::MonthlyCount;
use crate::time::Millis;

/// One usage sample: from `at`, the quantity in millionths.
pub type Sample = (Millis, u64);

/// The quantity (millionths) in force at `t`: the latest sample at or before it, else 0.
fn value_at(samples: &[Sample], t: Millis) -> u64 {
    let i = samples.partition_point(|(at, _)| *at <= t);
    if i == 0 {
        0
    } else {
        samples[i - 1].1
    }
}

/// The figure (millionths, before rounding) of one pair over the month `[start, end)`, given its
/// samples (sorted by `at`; at least those from the one in force at `start`) and its enabled
/// stretches (inside the month). `how` is `peak`, `end` or `average` (`distinct` reads as `peak`).
/// `None`: the pair was never enabled in the month (no figure).
pub fn quantity_over(
    samples: &[Sample],
    stretches: &[(Millis, Millis)],
    start: Millis,
    end: Millis,
    how: MonthlyCount,
) -> Option<u64> {
    let stretches: Vec<(Millis, Millis)> = stretches
        .iter()
        .map(|&(f, t)| (f.max(start), t.min(end)))
        .filter(|(f, t)| f < t)
        .collect();
    if stretches.is_empty() {
        return None;
    }
    match how {
        MonthlyCount::End => {
            let last = end - 1;
            stretches
                .iter()
                .any(|&(f, t)| f <= last && last < t)
                .then(|| value_at(samples, last))
        }
        MonthlyCount::Average => {
            let mut area: u128 = 0;
            for &(f, t) in &stretches {
                // Pieces of [f, t) between sample boundaries.
                let mut from = f;
                let first = samples.partition_point(|(at, _)| *at <= f);
                for &(at, _) in samples[first..].iter().take_while(|(at, _)| *at < t) {
                    area += u128::from(value_at(samples, from)) * (at - from) as u128;
                    from = at;
                }
                area += u128::from(value_at(samples, from)) * (t - from) as u128;
            }
            let span = (end - start).max(1) as u128;
            Some(u64::try_from(area.div_ceil(span)).unwrap_or(u64::MAX))
        }
        MonthlyCount::Peak | MonthlyCount::Distinct => stretches
            .iter()
            .map(|&(f, t)| {
                let first = samples.partition_point(|(at, _)| *at <= f);
                samples[first..]
                    .iter()
                    .take_while(|(at, _)| *at < t)
                    .map(|(_, q)| *q)
                    .fold(value_at(samples, f), u64::max)
            })
            .max(),
    }
}

fn figure(workspace_id: String, module: String, millionths: u64, decimals: u8) -> Figure {
    Figure {
        workspace_id,
        module,
        unit_count: UnitCount::from_millionths(millionths).round_up(decimals),
    }
}

/// Quantity figures as of instant `at` of every enabled pair of `services` (quantity services).
pub fn usage_as_of(
    conn: &Connection,
    services: &[ServiceUnit],
    at: Millis,
) -> Result<Vec<Figure>, StoreError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let decimals: HashMap<&str, u8> = services
        .iter()
        .map(|s| (s.module.as_str(), s.decimals))
        .collect();
    let (svc, params) = services_cte(services, &[at]);
    let mut stmt = conn.prepare(&format!(
        "WITH {svc}
         SELECT m.workspace_id, m.module,
                COALESCE((SELECT u.quantity FROM usage u
                          WHERE u.workspace_id = m.workspace_id AND u.module = m.module AND u.at <= ?1
                          ORDER BY u.at DESC LIMIT 1), 0)
         FROM module_intervals m JOIN svc s ON s.module = m.module
         WHERE m.from_at <= ?1 AND (m.to_at IS NULL OR m.to_at > ?1)"
    ))?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ws, module, q) = row?;
        let d = decimals.get(module.as_str()).copied().unwrap_or(2);
        out.push(figure(ws, module, u64::try_from(q).unwrap_or(0), d));
    }
    out.sort();
    Ok(out)
}

/// Quantity figures over the month `[start, end)` of every pair of `services` (quantity services)
/// enabled at some time in it, each reduced by its own monthly rule (`monthly`, else `how`).
pub fn usage_month(
    conn: &Connection,
    services: &[ServiceUnit],
    start: Millis,
    end: Millis,
    how: MonthlyCount,
) -> Result<Vec<Figure>, StoreError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let rules: HashMap<&str, (MonthlyCount, u8)> = services
        .iter()
        .map(|s| (s.module.as_str(), (s.monthly.unwrap_or(how), s.decimals)))
        .collect();
    let (svc, params) = services_cte(services, &[start, end]);
    let mut stretches: HashMap<(String, String), Vec<(Millis, Millis)>> = HashMap::new();
    {
        let mut stmt = conn.prepare(&format!(
            "WITH {svc}
             SELECT m.workspace_id, m.module, MAX(m.from_at, ?1), MIN(COALESCE(m.to_at, ?2), ?2)
             FROM module_intervals m JOIN svc s ON s.module = m.module
             WHERE m.from_at < ?2 AND (m.to_at IS NULL OR m.to_at > ?1)"
        ))?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            stretches
                .entry((r.get(0)?, r.get(1)?))
                .or_default()
                .push((r.get(2)?, r.get(3)?));
        }
    }
    // The samples of one pair from the one in force at the month's start.
    let mut samples_of = conn.prepare(
        "SELECT at, quantity FROM usage
         WHERE workspace_id = ?1 AND module = ?2 AND at < ?4
           AND at >= COALESCE((SELECT MAX(at) FROM usage
                               WHERE workspace_id = ?1 AND module = ?2 AND at <= ?3), ?3)
         ORDER BY at",
    )?;
    let mut out = Vec::new();
    for ((ws, module), pair_stretches) in stretches {
        let samples = samples_of
            .query_map(params![ws, module, start, end], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?
            .map(|r| r.map(|(at, q)| (at, u64::try_from(q).unwrap_or(0))))
            .collect::<Result<Vec<Sample>, _>>()?;
        let (rule, decimals) = rules.get(module.as_str()).copied().unwrap_or((how, 2));
        if let Some(q) = quantity_over(&samples, &pair_stretches, start, end, rule) {
            out.push(figure(ws, module, q, decimals));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[path = "metered_tests.rs"]
mod tests;
