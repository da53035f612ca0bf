//! The human side of status: the report, history and connector tables, a run's report and a dry
//! run, as text for a terminal — everything from Gradient or the inventory escaped.

use std::fmt::Write as _;

use super::{escape, RunView, Status};
use crate::domain::PairOutcome;
use crate::store::ledger::{ConnectorRow, LedgerRow};
use crate::sync::{when, DryRun, RunReport};
use crate::time::format_ms;

/// A size in bytes as B, KiB, MiB or GiB.
/// A figure with its quantity's unit name (`512.25 GB`); unit counts as they are.
fn with_unit(count: String, quantity_name: Option<&str>) -> String {
    match quantity_name {
        Some(q) => format!("{count} {}", escape(q)),
        None => count,
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The status as a human report.
/// (Long on purpose: the report's sections in the order they are printed.)
#[expect(
    clippy::too_many_lines,
    reason = "the report's sections in the order they are printed"
)]
pub fn render_status(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "schedule: {}; next run {}",
        s.schedule,
        s.next_scheduled_run.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        o,
        "control API: {}; webhook events undelivered: {}{}",
        s.api,
        s.events.pending,
        if s.events.failed > 0 {
            format!(" ({} given up after 24 h)", s.events.failed)
        } else {
            String::new()
        }
    );
    for src in &s.sources {
        let _ = writeln!(
            o,
            "source {}: {} {}, last pull {}{}{}",
            escape(&src.name),
            src.kind,
            src.mode,
            src.at.as_deref().unwrap_or("never"),
            src.outcome
                .map(|o| format!(" ({})", format!("{o:?}").to_lowercase()))
                .unwrap_or_default(),
            if src.stale {
                " — STALE: runs push nothing until a pull succeeds"
            } else {
                ""
            }
        );
    }
    if let Some(line) = crate::store::import::unreported_line(&s.unreported_modules) {
        let _ = writeln!(o, "{}", escape(&line));
    }
    match &s.last_run {
        Some(RunView { run: r, message }) => {
            let _ = writeln!(
                o,
                "last run: #{} {} ({} {}, {}) started {} — {}",
                r.id,
                r.outcome.as_deref().unwrap_or("running"),
                r.cadence,
                r.period,
                r.trigger,
                r.started_at,
                r.counts
            );
            if let Some(m) = message {
                let _ = writeln!(o, "  {}", escape(m));
            }
        }
        None => {
            let _ = writeln!(o, "last run: none yet");
        }
    }
    let _ = writeln!(
        o,
        "ledger: {} rows, oldest {}; store {}",
        s.ledger.rows,
        s.ledger
            .oldest_at
            .map(format_ms)
            .as_deref()
            .unwrap_or("none"),
        human_bytes(s.ledger.store_bytes)
    );
    if s.future_dated_records > 0 {
        let _ = writeln!(
            o,
            "warning: {} inventory records are dated in the future (accepted by an older version); they freeze the inventory: run `gradient-connector store repair-future`",
            s.future_dated_records
        );
    }
    if s.connectors.is_empty() {
        let _ = writeln!(
            o,
            "\nno connectors: add one with `gradient-connector connector add ID --token-file PATH`"
        );
    }
    for c in &s.connectors {
        let _ = writeln!(
            o,
            "\nconnector {} — {} (Gradient organization {}: {}; Gradient last saw a sync {}; last success {})",
            escape(&c.id),
            c.state.as_str(),
            escape(c.organization_name.as_deref().unwrap_or("unknown")),
            escape(c.gradient_status.as_deref().unwrap_or("unknown")),
            c.gradient_synced_at.as_deref().unwrap_or("never"),
            c.last_success_at.as_deref().unwrap_or("never")
        );
        if let Some(r) = &c.state_reason {
            let _ = writeln!(o, "  {}", escape(r));
        }
        for w in &c.warnings {
            let _ = writeln!(o, "  warning: {}", escape(w));
        }
        if !c.unmapped_accounts.is_empty() {
            let names: Vec<String> = c.unmapped_accounts.iter().map(|a| escape(a)).collect();
            let _ = writeln!(
                o,
                "  accounts the MSP has not mapped in Gradient yet: {}",
                names.join(", ")
            );
        }
        if let Some(t) = &c.last_run_counts {
            let _ = writeln!(o, "  last run: {t}");
        }
        if !c.last_known.is_empty() {
            let _ = writeln!(
                o,
                "  {:<24} {:<24} {:>10}  PUSHED AT",
                "ACCOUNT", "SERVICE", "LAST KNOWN"
            );
            for l in &c.last_known {
                let _ = writeln!(
                    o,
                    "  {:<24} {:<24} {:>10}  {}",
                    escape(&l.account),
                    escape(&l.service),
                    with_unit(l.unit_count.to_string(), l.quantity_name.as_deref()),
                    l.pushed_at
                );
            }
        }
        for (title, list) in [
            (
                "unmapped in Gradient (404: the MSP has not mapped them yet)",
                &c.unmapped,
            ),
            ("failing", &c.failing),
            (
                "module disabled (Gradient keeps the last known value)",
                &c.disabled,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(o, "  {title}:");
            for p in list {
                let count = p
                    .unit_count
                    .map(|n| with_unit(n.to_string(), p.quantity_name.as_deref()))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(
                    o,
                    "    {} / {} ({count})",
                    escape(&p.account),
                    escape(&p.service)
                );
                if p.outcome != PairOutcome::Unmapped && p.outcome != PairOutcome::SkippedDisabled {
                    if let Some(r) = &p.reason {
                        let _ = write!(o, ": {}", escape(r));
                    }
                }
                let _ = writeln!(o);
            }
        }
    }
    o
}

/// History rows as a table; a metered service's figures with their unit name (`quantities`:
/// module → `GB`).
pub fn render_history(
    rows: &[LedgerRow],
    quantities: &std::collections::HashMap<String, String>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<20} {:>5} {:<16} {:<20} {:<20} {:>8} {:>8} {:<16} {:>4} {:>3}  REASON",
        "AT",
        "RUN",
        "CONNECTOR",
        "ACCOUNT",
        "SERVICE",
        "COUNT",
        "PREVIOUS",
        "OUTCOME",
        "HTTP",
        "TRY"
    );
    for r in rows {
        let e = &r.entry;
        let _ = writeln!(
            o,
            "{:<20} {:>5} {:<16} {:<20} {:<20} {:>8} {:>8} {:<16} {:>4} {:>3}  {}",
            format_ms(e.at),
            e.run_id,
            escape(&e.connector_id),
            escape(&e.account_id),
            escape(&e.module),
            e.unit_count
                .map(|n| with_unit(n.to_string(), quantities.get(&e.module).map(String::as_str)))
                .unwrap_or_else(|| "-".into()),
            r.previous_count
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            e.outcome.as_str(),
            e.http_status
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            e.attempts,
            escape(e.reason.as_deref().unwrap_or(""))
        );
    }
    if rows.is_empty() {
        let _ = writeln!(o, "(no pushes recorded)");
    }
    o
}

/// `connector list` as a table.
pub fn render_connectors(rows: &[ConnectorRow]) -> String {
    if rows.is_empty() {
        return "(no connectors: add one with `gradient-connector connector add ID --token-file PATH`)\n".into();
    }
    let mut table = vec![[
        "ID",
        "STATE",
        "GRADIENT",
        "ORGANIZATION",
        "VERIFIED",
        "LAST SUCCESS",
        "REASON",
    ]
    .map(String::from)
    .to_vec()];
    for c in rows {
        table.push(vec![
            escape(&c.id),
            c.state.as_str().to_string(),
            escape(c.gradient_status.as_deref().unwrap_or("-")),
            escape(c.organization_name.as_deref().unwrap_or("-")),
            when(c.verified_at),
            when(c.last_success_at),
            escape(c.state_reason.as_deref().unwrap_or("")),
        ]);
    }
    columns(&table)
}

/// Lays rows out in columns as wide as their widest cell (the last column is not padded).
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        o.push_str(line.trim_end());
        o.push('\n');
    }
    o
}

/// A run report for the terminal (text from Gradient or the inventory escaped).
pub fn render_report(r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{}", escape(&r.summary()));
    for c in &r.connectors {
        let _ = writeln!(
            o,
            "  connector {}: {} (accounts created {}, renamed {})",
            escape(&c.id),
            c.tally,
            c.accounts_created,
            c.accounts_renamed
        );
        if let Some(n) = &c.note {
            let _ = writeln!(o, "    {}", escape(n));
        }
        for (a, m) in &c.unmapped {
            let _ = writeln!(
                o,
                "    unmapped: {} / {} (the MSP has not mapped it in Gradient yet)",
                escape(a),
                escape(m)
            );
        }
        for (a, m, why) in &c.failed {
            let _ = writeln!(
                o,
                "    failed: {} / {}: {}",
                escape(a),
                escape(m),
                escape(why)
            );
        }
    }
    o
}

/// A dry-run plan as a table.
pub fn render_dry_run(d: &DryRun) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "dry run: {} counts for {} — nothing is sent, nothing recorded",
        d.cadence, d.period
    );
    if !d.services_not_yet_known.is_empty() {
        let _ = writeln!(
            o,
            "services without a known Gradient id yet (the first real run looks them up or creates them): {}",
            d.services_not_yet_known.join(", ")
        );
    }
    for c in &d.connectors {
        let _ = writeln!(
            o,
            "\nconnector {} ({})",
            c.plan.connector_id,
            c.state.as_str()
        );
        let _ = writeln!(
            o,
            "  {:<24} {:<24} {:>8} {:>10} {:>8}",
            "ACCOUNT", "SERVICE", "COUNT", "LAST PUSH", "CHANGE"
        );
        for p in &c.plan.pushes {
            let (last, change) = match p.previous {
                Some(prev) => (prev.to_string(), p.unit_count.change_from(prev)),
                None => ("-".into(), "new".into()),
            };
            let _ = writeln!(
                o,
                "  {:<24} {:<24} {:>8} {:>10} {:>8}",
                p.account_id,
                p.module,
                with_unit(
                    p.unit_count.to_string(),
                    d.quantity_names.get(&p.module).map(String::as_str)
                ),
                last,
                change
            );
        }
        for p in &c.plan.disabled {
            let _ = writeln!(
                o,
                "  {:<24} {:<24} {:>8} {:>10} {:>8}",
                p.account_id,
                p.module,
                "disabled",
                p.last_known
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                "kept"
            );
        }
    }
    if d.connectors.is_empty() {
        let _ = writeln!(o, "(no connected connectors)");
    }
    o
}
