//! The capacity benchmark's goals: each figure against the issue that set it, the table it prints,
//! and how a partial run keeps the figures of the last full one.

use super::*;

/// Figures of an earlier run for what this one did not measure: top-level sections, and per scale
/// its sections. The layout before scales (`plan_daily` … at the top) is dropped.
pub(crate) fn merge_old(results: &mut Figures, old: Figures) {
    const BEFORE_SCALES: [&str; 6] = [
        "scale",
        "store",
        "plan_daily",
        "plan_monthly_peak",
        "push",
        "scaling",
    ];
    for (k, v) in old {
        if BEFORE_SCALES.contains(&k.as_str()) {
            continue;
        }
        match (results.get_mut(&k), v) {
            (Some(Value::Object(new)), Value::Object(old)) if k == "by_scale" => {
                for (scale, old_sections) in old {
                    match (new.get_mut(&scale), old_sections) {
                        (Some(Value::Object(n)), Value::Object(o)) => {
                            for (section, figures) in o {
                                n.entry(section).or_insert(figures);
                            }
                        }
                        (None, o) => {
                            new.insert(scale, o);
                        }
                        _ => {}
                    }
                }
            }
            (None, v) => {
                results.insert(k, v);
            }
            _ => {}
        }
    }
}

/// What one row of the per-scale table is.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Measure {
    /// A duration: a store `n`× larger may take at most `n`× as long.
    Time,
    /// A peak memory: a store 10× larger may take at most 1.5× as much.
    Memory,
    /// A rate or a ratio: shown, no scaling goal.
    Rate,
}

/// Growth of memory allowed for a store `n`× larger (the goal is stated for 10×).
pub(crate) const MEMORY_GROWTH: f64 = 1.5;

pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) path: &'static [&'static str],
    /// Multiplies the stored figure (kB → MB).
    pub(crate) factor: f64,
    pub(crate) measure: Measure,
    /// The absolute target at full scale: text, and the check.
    pub(crate) target: &'static str,
    pub(crate) check: Option<fn(f64) -> bool>,
}

pub(crate) fn scale_rows() -> Vec<Row> {
    let row = |name, path, factor, measure, target, check| Row {
        name,
        path,
        factor,
        measure,
        target,
        check,
    };
    const KB: f64 = 1.0 / 1024.0;
    vec![
        row(
            "store generation (import), s",
            &["store", "generate_secs"],
            1.0,
            Measure::Time,
            "-",
            None,
        ),
        row(
            "daily plan, s",
            &["plan_daily", "ours", "secs"],
            1.0,
            Measure::Time,
            "<= 2",
            Some(|v| v <= 2.0),
        ),
        row(
            "daily plan, peak RSS MB",
            &["plan_daily", "ours", "peak_rss_kb"],
            KB,
            Measure::Memory,
            "<= 150",
            Some(|v| v <= 150.0),
        ),
        row(
            "daily plan, ours / sqlite3",
            &["plan_daily", "ratio"],
            1.0,
            Measure::Rate,
            "<= 1.5",
            Some(|v| v <= 1.5),
        ),
        row(
            "monthly peak plan, s",
            &["plan_monthly_peak", "ours", "secs"],
            1.0,
            Measure::Time,
            "<= 5",
            Some(|v| v <= 5.0),
        ),
        row(
            "monthly peak plan, peak RSS MB",
            &["plan_monthly_peak", "ours", "peak_rss_kb"],
            KB,
            Measure::Memory,
            "<= 150",
            Some(|v| v <= 150.0),
        ),
        row(
            "monthly peak plan, ours / sqlite3",
            &["plan_monthly_peak", "ratio"],
            1.0,
            Measure::Rate,
            "<= 1.5",
            Some(|v| v <= 1.5),
        ),
        row(
            "push, s for every pair",
            &["push", "secs"],
            1.0,
            Measure::Time,
            "-",
            None,
        ),
        row(
            "push throughput, pushes/s",
            &["push", "pushes_per_sec"],
            1.0,
            Measure::Rate,
            ">= 3000",
            Some(|v| v >= 3000.0),
        ),
        row(
            "push CPU, s per 1,000 pushes",
            &["push", "cpu_secs_per_1000"],
            1.0,
            Measure::Rate,
            "<= 0.3",
            Some(|v| v <= 0.3),
        ),
    ]
}

pub(crate) fn figure(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_f64()
}

/// The measured scales, smallest first.
pub(crate) fn measured_scales(r: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = r["by_scale"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.parse().ok().map(|s| (k.clone(), s)))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// From the smallest scale measured to the largest: how much larger the store is (workspaces),
/// and per time or memory figure its growth against the goal.
pub(crate) fn scaling(results: &Figures) -> Value {
    let r = Value::Object(results.clone());
    let scales = measured_scales(&r);
    let (Some((small, _)), Some((large, _))) = (scales.first(), scales.last()) else {
        return Value::Null;
    };
    if small == large {
        return Value::Null;
    }
    let (a, b) = (&r["by_scale"][small], &r["by_scale"][large]);
    let Some(size) = figure(b, &["store", "workspaces"])
        .zip(figure(a, &["store", "workspaces"]))
        .map(|(b, a)| b / a)
    else {
        return Value::Null;
    };
    let mut rows = Figures::new();
    for row in scale_rows() {
        let goal = match row.measure {
            Measure::Time => size,
            Measure::Memory => MEMORY_GROWTH,
            Measure::Rate => continue,
        };
        if let Some(growth) = figure(b, row.path)
            .zip(figure(a, row.path))
            .map(|(b, a)| b / a)
        {
            rows.insert(
                row.name.into(),
                json!({"growth": growth, "goal": goal, "met": growth <= goal}),
            );
        }
    }
    json!({"from": small, "to": large, "store_growth": size, "figures": rows})
}

/// The figures as tables: per scale (each scale's column, the growth from the smallest to the
/// largest against the scaling goal, and the absolute target at the largest), then the figures
/// that do not depend on the store's size.
#[expect(clippy::too_many_lines, reason = "one table, row after row as printed")]
pub(crate) fn print_table(r: &Value) {
    // Small figures (a smoke run's seconds) keep three significant digits.
    let cell = |v: Option<f64>| match v {
        Some(v) if v != 0.0 && v.abs() < 0.1 => format!("{v:.3e}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    };
    let met = |m: Option<bool>| match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    };
    let scales = measured_scales(r);
    if !scales.is_empty() {
        let largest = &scales.last().unwrap().0;
        let growth_of = |name: &str| &r["scaling"]["figures"][name];
        let size = r["scaling"]["store_growth"].as_f64();
        print!("\n{:<36}", "by store size");
        for (l, _) in &scales {
            print!(" {:>10}", format!("@{l}"));
        }
        println!(
            " {:>8} {:>8} {:>4} {:>9} {:>4}",
            "growth",
            "goal",
            "met",
            format!("target@{largest}"),
            "met"
        );
        print!("{:<36}", "workspaces");
        for (l, _) in &scales {
            print!(
                " {:>10}",
                cell(figure(&r["by_scale"][l], &["store", "workspaces"]))
            );
        }
        println!(" {:>8}", size.map_or("-".into(), |s| format!("{s:.1}×")));
        for row in scale_rows() {
            print!("{:<36}", row.name);
            let mut last = None;
            for (l, _) in &scales {
                last = figure(&r["by_scale"][l], row.path).map(|v| v * row.factor);
                print!(" {:>10}", cell(last));
            }
            let g = growth_of(row.name);
            let growth = g["growth"].as_f64().map(|v| format!("{v:.2}×"));
            let goal = g["goal"].as_f64().map(|v| format!("<= {v:.1}×"));
            println!(
                " {:>8} {:>8} {:>4} {:>9} {:>4}",
                growth.unwrap_or_else(|| "-".into()),
                goal.unwrap_or_else(|| "-".into()),
                met(g["met"].as_bool()),
                row.target,
                met(row.check.zip(last).map(|(c, v)| c(v)))
            );
        }
    }

    let f = |path: &[&str]| figure(r, path);
    let rows: Vec<(&str, Option<f64>, &str, Option<bool>)> = {
        let le = |v: Option<f64>, t: f64| v.map(|v| v <= t);
        let ge = |v: Option<f64>, t: f64| v.map(|v| v >= t);
        vec![
            (
                "rate limit 100/s, achieved /s",
                f(&["rate_limit", "achieved_per_sec"]),
                ">= 97",
                ge(f(&["rate_limit", "achieved_per_sec"]), 97.0),
            ),
            (
                "rate limit 100/s, 429 answers",
                f(&["rate_limit", "answered_429"]),
                "0",
                f(&["rate_limit", "answered_429"]).map(|v| v == 0.0),
            ),
            (
                "rate 100/s at 150 ms latency, /s",
                f(&["rate_by_latency", "150", "achieved_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "150", "achieved_per_sec"]), 95.0),
            ),
            (
                "rate 100/s at 150 ms latency, 429s",
                f(&["rate_by_latency", "150", "answered_429"]),
                "0",
                f(&["rate_by_latency", "150", "answered_429"]).map(|v| v == 0.0),
            ),
            (
                "rate 100/s at 400 ms latency, /s",
                f(&["rate_by_latency", "400", "achieved_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "400", "achieved_per_sec"]), 95.0),
            ),
            (
                "rate 100/s at 400 ms latency, 429s",
                f(&["rate_by_latency", "400", "answered_429"]),
                "0",
                f(&["rate_by_latency", "400", "answered_429"]).map(|v| v == 0.0),
            ),
            (
                "rate 100/s at 150 ± 100 ms (jitter), /s",
                f(&["rate_by_latency", "150±100", "achieved_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "150±100", "achieved_per_sec"]), 95.0),
            ),
            (
                "rate 100/s at 150 ± 100 ms (jitter), 429s",
                f(&["rate_by_latency", "150±100", "answered_429"]),
                "counted",
                None,
            ),
            (
                "rate 100/s at 400 ± 200 ms (jitter), /s",
                f(&["rate_by_latency", "400±200", "achieved_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "400±200", "achieved_per_sec"]), 95.0),
            ),
            (
                "rate 100/s at 400 ± 200 ms (jitter), 429s",
                f(&["rate_by_latency", "400±200", "answered_429"]),
                "counted",
                None,
            ),
            (
                "whole 2,000-pair run at 150 ms, pushes/s",
                f(&["rate_by_latency", "150", "whole_run_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "150", "whole_run_per_sec"]), 95.0),
            ),
            (
                "whole run at 500 ms, round trips beyond the pushes",
                f(&["rate_by_latency", "500", "overhead_round_trips"]),
                "<= 2",
                le(f(&["rate_by_latency", "500", "overhead_round_trips"]), 2.0),
            ),
            (
                "whole 2,000-pair run at 500 ms, pushes/s",
                f(&["rate_by_latency", "500", "whole_run_per_sec"]),
                ">= 95",
                ge(f(&["rate_by_latency", "500", "whole_run_per_sec"]), 95.0),
            ),
            (
                "import, records/s",
                f(&["import", "records_per_sec"]),
                ">= 200000",
                ge(f(&["import", "records_per_sec"]), 200_000.0),
            ),
            (
                "import, peak RSS MB",
                f(&["import", "peak_rss_kb"]).map(|k| k / 1024.0),
                "<= 100",
                le(f(&["import", "peak_rss_kb"]).map(|k| k / 1024.0), 100.0),
            ),
            (
                "snapshot import, records/s",
                f(&["snapshot", "records_per_sec"]),
                ">= 200000",
                ge(f(&["snapshot", "records_per_sec"]), 200_000.0),
            ),
            (
                "the same snapshot again vs a plain re-import, ×",
                f(&["snapshot", "again_vs_plain"]),
                "<= 2",
                le(f(&["snapshot", "again_vs_plain"]), 2.0),
            ),
            (
                "PostgreSQL pull of 1M rows, rows/s",
                f(&["postgres", "rows_per_sec"]),
                ">= 150000",
                ge(f(&["postgres", "rows_per_sec"]), 150_000.0),
            ),
            (
                "PostgreSQL pull of 1M rows, peak RSS MB",
                f(&["postgres", "peak_rss_kb"]).map(|k| k / 1024.0),
                "<= 100",
                le(f(&["postgres", "peak_rss_kb"]).map(|k| k / 1024.0), 100.0),
            ),
            (
                "monthly `average` over 40k quantity pairs, s",
                f(&["metered", "average_secs"]),
                "<= peak plan",
                le(
                    f(&["metered", "average_secs"]),
                    f(&["by_scale", "1", "plan_monthly_peak", "ours", "secs"]).unwrap_or(1.08),
                ),
            ),
            (
                "the same pairs by `average` vs by `peak`, ×",
                f(&["metered", "average_vs_peak"]),
                "~1",
                None,
            ),
            (
                "idle daemon RSS after a sync, MB",
                f(&["idle", "rss_after_sync_kb"]).map(|k| k / 1024.0),
                "<= 20",
                le(f(&["idle", "rss_after_sync_kb"]).map(|k| k / 1024.0), 20.0),
            ),
            (
                "idle daemon CPU over the idle window, s",
                f(&["idle", "idle_cpu_secs"]),
                "~0",
                le(f(&["idle", "idle_cpu_secs"]), 0.1),
            ),
        ]
    };
    println!(
        "\n{:<42} {:>12} {:>11}  met",
        "independent of store size", "value", "target"
    );
    for (name, v, target, m) in rows {
        println!("{name:<42} {:>12} {target:>11}  {}", cell(v), met(m));
    }
    println!("cores: {}", r["cores"]);
}
