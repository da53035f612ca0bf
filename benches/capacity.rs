//! Capacity benchmark: `cargo bench --bench capacity`.
//!
//! Builds a synthetic store of a large vendor (500 MSPs, 10,000 workspaces, 2,000,000 users and
//! devices with 90 days of interval history, 4 services) through the test kit and the product's
//! own import, and measures: plan time and peak RSS (daily and monthly peak, plus the same query
//! in the sqlite3 shell), push throughput and CPU per 1,000 pushes against gradient-sim,
//! rate-limit fidelity at 100/s, import speed and RSS (best of three fresh imports), and the idle
//! daemon's RSS and CPU. What grows with the store (generation, plan, push) is measured at scale
//! 0.1 and 1 in one invocation: the table shows both columns and the growth from one to the other
//! against the goal (a store 10× larger costs at most 10× the time and 1.5× the memory). Prints
//! the tables and writes `capacity.json` (every scale) into cargo's target directory.
//!
//! Environment: `BENCH_SCALE` runs one scale only; `BENCH_SCALES` (comma list, default `0.1,1`)
//! the scales to compare; `BENCH_IDLE_SECS` (default 60) sets the idle window; `BENCH_SKIP`
//! (comma list of plan,push,rate,import,snapshot,idle; snapshot runs with import); `BENCH_DIR` keeps the generated stores (and reuses
//! `big-SCALE.db`). `capacity child daily|monthly STORE NOW_MS` with `BENCH_EXPLAIN=1` prints a
//! plan's query plan and single-statement timing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gradient_connector::config::Config;
use gradient_connector::domain::{MonthlyCount, Trigger, UnitKind};
use gradient_connector::store::counting;
use gradient_connector::store::run_inputs::CountQuestion;
use gradient_connector::store::Store;
use gradient_connector::sync::{self, RunControl, RunRequest, SyncContext};
use gradient_connector::time::{now_ms, Millis, Month};
use gradient_connector_kit::{Inventory, OCTOBER_2026};
use serde_json::{json, Value};

mod support;
use support::*;
#[path = "support/capacity_goals.rs"]
mod goals;
use goals::*;
#[path = "support/capacity_metered.rs"]
mod metered;
#[path = "support/capacity_postgres.rs"]
mod postgres;
#[path = "support/capacity_snapshot.rs"]
mod snapshot;

const BIN: &str = env!("CARGO_BIN_EXE_gradient-connector");
/// The question a plan kind asks: daily as of `now`, or the previous month's peak.
fn question(kind: &str, now: Millis) -> CountQuestion {
    match kind {
        "daily" => CountQuestion::AsOf(now),
        _ => {
            let m = Month::containing(now, chrono_tz::UTC).previous();
            let (from, to) = m.bounds(chrono_tz::UTC);
            CountQuestion::Month {
                from,
                to,
                how: MonthlyCount::Peak,
            }
        }
    }
}

/// Child mode: one plan computation, reported as one JSON line.
fn child_plan(kind: &str, store: &Path, now: Millis) {
    let store = Store::open(store, Duration::from_secs(30)).unwrap();
    let svcs = services();
    let q = question(kind, now);
    if std::env::var_os("BENCH_EXPLAIN").is_some() {
        for line in store.query_plan(&svcs, q).unwrap() {
            eprintln!("{line}");
        }
        let t = Instant::now();
        let n = store.count_by_statement(&svcs, q).unwrap().len();
        eprintln!(
            "single statement: {n} rows in {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let counts = store.count(&svcs, q).unwrap();
    let workspaces = store.workspaces().unwrap();
    let ids: HashMap<String, String> = svcs
        .iter()
        .map(|s| (s.module.clone(), format!("id-{}", s.module)))
        .collect();
    let mut channels: Vec<&str> = workspaces.iter().map(|w| w.channel_id.as_str()).collect();
    channels.dedup();
    let plans = sync::plan::plan_connectors(&channels, &workspaces, &counts, &ids, &HashMap::new());
    let pairs: usize = plans.values().map(|p| p.pushes.len()).sum();
    let secs = t.elapsed().as_secs_f64();
    let (peak, _) = rss_kb("self");
    println!(
        "{}",
        json!({"secs": secs, "pairs": pairs, "figures": counts.figures.len(), "peak_rss_kb": peak})
    );
}

fn run_child(args: &[&str]) -> Value {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap()
}

/// The query's text with its parameters inlined, for the sqlite3 shell.
fn inline(sql: &str, params: &[rusqlite::types::Value]) -> String {
    let mut s = sql.to_string();
    for (i, p) in params.iter().enumerate().rev() {
        let v = match p {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
            _ => "NULL".into(),
        };
        s = s.replace(&format!("?{}", i + 1), &v);
    }
    s
}

fn sqlite3_secs(store: &Path, sql: &str) -> Option<f64> {
    let a = sqlite3_once(store, sql)?;
    let b = sqlite3_once(store, sql)?;
    Some(a.min(b))
}

fn sqlite3_once(store: &Path, sql: &str) -> Option<f64> {
    let t = Instant::now();
    let out = Command::new("sqlite3")
        .arg(store)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .ok()
        .and_then(|mut c| {
            c.stdin
                .take()?
                .write_all(format!("{sql};\n").as_bytes())
                .ok()?;
            c.wait().ok()
        })?;
    out.success().then(|| t.elapsed().as_secs_f64())
}

fn context(cfg_path: &Path, rps: u32, in_flight: usize) -> SyncContext {
    let mut cfg = Config::load(cfg_path).unwrap();
    // Bench-only override: the configuration refuses more than Gradient's 100/s.
    cfg.gradient.client.requests_per_second = rps;
    cfg.gradient.client.max_in_flight = in_flight;
    SyncContext::new(Arc::new(cfg)).unwrap()
}

fn sync_once(rt: &tokio::runtime::Runtime, ctx: &SyncContext) -> sync::RunReport {
    rt.block_on(sync::run(
        ctx,
        RunRequest {
            trigger: Trigger::Cli,
            connector: None,
            month: None,
            slot_at: None,
        },
        &RunControl::default(),
    ))
    .unwrap()
}

fn skip(what: &str) -> bool {
    std::env::var("BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s == what)
}

/// The scales measured: `BENCH_SCALE` alone when set (one scale only), else the comma list in
/// `BENCH_SCALES`, else 0.1 and 1.
fn scales() -> Vec<f64> {
    let parse = |v: &str| v.trim().parse::<f64>().ok().filter(|s| *s > 0.0);
    if let Some(one) = std::env::var("BENCH_SCALE").ok().as_deref().and_then(parse) {
        return vec![one];
    }
    let mut list: Vec<f64> = std::env::var("BENCH_SCALES")
        .unwrap_or_default()
        .split(',')
        .filter_map(parse)
        .collect();
    if list.is_empty() {
        list = vec![0.1, 1.0];
    }
    list.sort_by(f64::total_cmp);
    list.dedup();
    list
}

/// A scale's key in the JSON and its column in the table: `0.1`, `1`.
fn label(scale: f64) -> String {
    format!("{scale}")
}

type Figures = serde_json::Map<String, Value>;

/// The sections whose cost grows with the store — generation (through the import), plan and
/// push — at one scale.
fn measure_scale(dir: &Path, scale: f64, now: Millis, rt: &tokio::runtime::Runtime) -> Figures {
    let mut results = Figures::new();
    let shape = Shape {
        msps: ((500.0 * scale) as usize).max(1),
        workspaces_per_msp: 20,
        units_per_workspace: 200,
    };
    let big = dir.join(format!("big-{}.db", label(scale)));
    println!(
        "\n== scale {scale}: {} MSPs × {} workspaces × {} units ...",
        shape.msps, shape.workspaces_per_msp, shape.units_per_workspace
    );
    let t = Instant::now();
    // BENCH_DIR keeps a generated store: it is reused, not timed again.
    let reused = big.exists();
    let size = if reused {
        Store::open(&big, Duration::from_secs(30))
            .unwrap()
            .inventory_size()
            .unwrap()
    } else {
        generate(&big, &shape, now)
    };
    let gen_secs = (!reused).then(|| t.elapsed().as_secs_f64());
    println!(
        "  {} workspaces, {} units, {} intervals{}",
        size.workspaces,
        size.units,
        size.unit_intervals,
        gen_secs.map_or(" (reused)".into(), |s| format!(" imported in {s:.1} s"))
    );
    results.insert(
        "store".into(),
        json!({"msps": size.channels, "workspaces": size.workspaces, "units": size.units, "intervals": size.unit_intervals, "generate_secs": gen_secs}),
    );

    if !skip("plan") {
        // Best of two runs each, so that neither side pays for a cold page cache.
        let best = |kind: &str| {
            let a = run_child(&[kind, big.to_str().unwrap(), &now.to_string()]);
            let b = run_child(&[kind, big.to_str().unwrap(), &now.to_string()]);
            if a["secs"].as_f64() <= b["secs"].as_f64() {
                a
            } else {
                b
            }
        };
        let daily = best("daily");
        let monthly = best("monthly");
        let (sql, p) = counting::as_of_query(&services(), now);
        let shell_daily = sqlite3_secs(&big, &inline(&sql, &p));
        let m = Month::containing(now, chrono_tz::UTC).previous();
        let (a, b) = m.bounds(chrono_tz::UTC);
        let (sql, p) = counting::month_query(&services(), a, b, MonthlyCount::Peak);
        let shell_monthly = sqlite3_secs(&big, &inline(&sql, &p));
        let ratio = |ours: &Value, shell: Option<f64>| {
            shell.map(|s| ours["secs"].as_f64().unwrap_or(0.0) / s)
        };
        results.insert("plan_daily".into(), json!({"ours": daily, "sqlite3_secs": shell_daily, "ratio": ratio(&daily, shell_daily)}));
        results.insert("plan_monthly_peak".into(), json!({"ours": monthly, "sqlite3_secs": shell_monthly, "ratio": ratio(&monthly, shell_monthly)}));
        println!("  plan daily: {daily} sqlite3 {shell_daily:?}; monthly: {monthly} sqlite3 {shell_monthly:?}");
    }

    if !skip("push") {
        let sim = SimProc::start(0);
        connect_all(&big, &sim);
        let cfg = write_config(dir, &sim.url, &big, 100, 64);
        let ctx = context(&cfg, 1_000_000, 64);
        let first = sync_once(rt, &ctx);
        println!(
            "  push warm-up (creates services and accounts): {}",
            first.summary()
        );
        let cpu0 = cpu_secs("self");
        let t = Instant::now();
        let report = sync_once(rt, &ctx);
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs("self") - cpu0;
        let pushed = report.tally.pushed as f64;
        println!("  push: {}", report.summary());
        results.insert(
            "push".into(),
            json!({
                "pairs": report.tally.pushed, "secs": secs, "pushes_per_sec": pushed / secs,
                "cpu_secs": cpu, "cpu_secs_per_1000": cpu / pushed * 1000.0,
                "failed": report.tally.failed, "note": "gradient-sim runs on the same 2 cores"
            }),
        );
    }
    results
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark's sections in the order they run and print"
)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let now: Millis = args[4].parse().unwrap();
        child_plan(&args[2], Path::new(&args[3]), now);
        return;
    }
    let scales = scales();
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // BENCH_DIR keeps the generated stores (and reuses big-SCALE.db) for profiling by hand.
    let temp = tempfile::tempdir().unwrap();
    let dir_path = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir_path).unwrap();
    struct Dir(PathBuf);
    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    let dir = Dir(dir_path);
    let mut results = Figures::new();
    results.insert("cores".into(), json!(cores));
    let now = now_ms();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut by_scale = Figures::new();
    for &scale in &scales {
        by_scale.insert(
            label(scale),
            Value::Object(measure_scale(dir.path(), scale, now, &rt)),
        );
    }
    results.insert("by_scale".into(), Value::Object(by_scale));
    println!();

    if !skip("rate") {
        let small = fresh(&dir.path().join("rate.db"));
        generate(
            &small,
            &Shape {
                msps: 1,
                workspaces_per_msp: 500,
                units_per_workspace: 4,
            },
            now,
        );
        let sim = SimProc::start(100);
        connect_all(&small, &sim);
        // Default settings (max_in_flight's default) at a 100/s limit, at Gradient-like latencies.
        let in_flight = gradient_connector::config::KEYS
            .iter()
            .find(|k| k.section == "gradient" && k.name == "max_in_flight")
            .and_then(|k| match k.default {
                gradient_connector::config::Fallback::Value(v) => v.parse::<u32>().ok(),
                _ => None,
            })
            .unwrap_or(64);
        let cfg = write_config(dir.path(), &sim.url, &small, 100, in_flight);
        let ctx = context(&cfg, 100, in_flight as usize);
        let mut by_latency = serde_json::Map::new();
        // (latency, ± spread) in ms: fixed latencies, then a real network's jitter, then a slow one.
        for (latency_ms, spread_ms) in [
            (0u64, 0u64),
            (150, 0),
            (400, 0),
            (150, 100),
            (400, 200),
            (500, 0),
        ] {
            let body = json!({"ms": latency_ms, "spread_ms": spread_ms}).to_string();
            http(&sim.url, "POST", "/_sim/latency", Some(&body));
            let before = sim.state()["requests"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            let started = std::time::Instant::now();
            let report = sync_once(&rt, &ctx);
            let run_secs = started.elapsed().as_secs_f64();
            let state = sim.state();
            let reqs: Vec<Value> = state["requests"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .skip(before)
                .collect();
            let counts: Vec<u64> = reqs
                .iter()
                .filter(|r| r["path"].as_str().unwrap_or("").ends_with("/count"))
                .filter_map(|r| r["at_ms"].as_u64())
                .collect();
            let throttled = reqs.iter().filter(|r| r["status"] == 429).count();
            let span = (counts.iter().max().copied().unwrap_or(0)
                - counts.iter().min().copied().unwrap_or(0)) as f64
                / 1000.0;
            let rate = (counts.len().saturating_sub(1)) as f64 / span.max(0.001);
            // The whole run, catalogue and set-ups included: its fixed overhead shows here.
            let whole = report.tally.pushed as f64 / run_secs.max(0.001);
            // The run's time beyond the pushes' own span, in round trips of the mean latency.
            let overhead = (run_secs - span).max(0.0);
            let round_trips = (latency_ms > 0).then(|| overhead * 1000.0 / latency_ms as f64);
            println!(
                "rate at {latency_ms} ± {spread_ms} ms latency (max_in_flight {in_flight}): {} pushes at {rate:.1}/s, {throttled} answered 429; whole run {run_secs:.1} s = {whole:.1} pushes/s, {overhead:.2} s beyond the pushes{}",
                counts.len(),
                round_trips.map(|n| format!(" ({n:.1} round trips)")).unwrap_or_default()
            );
            let figure = json!({"pushes": report.tally.pushed, "achieved_per_sec": rate, "answered_429": throttled, "max_in_flight": in_flight, "run_secs": run_secs, "whole_run_per_sec": whole, "overhead_secs": overhead, "overhead_round_trips": round_trips});
            if latency_ms == 0 {
                results.insert("rate_limit".into(), figure.clone());
            }
            let key = if spread_ms == 0 {
                latency_ms.to_string()
            } else {
                format!("{latency_ms}±{spread_ms}")
            };
            by_latency.insert(key, figure);
        }
        results.insert("rate_by_latency".into(), Value::Object(by_latency));
    }

    if !skip("import") {
        let file = dir.path().join("import.jsonl");
        const LINES: usize = 1_000_000;
        let total_lines = {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
            let mut lines = 0usize;
            for c in 0..1000 {
                let channel = format!("ic-{c}");
                let mut inv = Inventory::new();
                inv.channel(&channel, &format!("MSP {c}"));
                'channel: for k in 0..50 {
                    let ws = format!("ic-{c}-{k}");
                    inv.at(OCTOBER_2026)
                        .workspace(&ws, &channel, &format!("Customer {k}"))
                        .module(&ws, "edr", true)
                        .at("2026-10-02T09:00:00Z");
                    for u in 0..196 {
                        let kind = if u % 2 == 0 {
                            UnitKind::Users
                        } else {
                            UnitKind::Devices
                        };
                        inv.unit(kind, &ws, &format!("{ws}-{u}"), true);
                        if lines + inv.len() >= LINES {
                            break 'channel;
                        }
                    }
                }
                inv.write_jsonl(&mut w).unwrap();
                lines += inv.len();
                if lines >= LINES {
                    break;
                }
            }
            lines
        };
        // Best of three imports, each into a fresh store, each after the disk has caught up with
        // the writes before it (this VM's timings vary by ±20% from run to run).
        let mut runs: Vec<(f64, u64)> = Vec::new();
        for _ in 0..3 {
            let store = fresh(&dir.path().join("import.db"));
            let cfg = write_config(dir.path(), "http://127.0.0.1:9", &store, 90, 8);
            let _ = Command::new("sync").status();
            let (secs, peak, out) = run_measured(Command::new(BIN).args([
                "--config",
                cfg.to_str().unwrap(),
                "import",
                file.to_str().unwrap(),
            ]));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "import: {} in {secs:.2} s, peak RSS {peak} kB",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            runs.push((secs, peak));
        }
        let secs = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let slowest = runs.iter().map(|r| r.0).fold(0.0, f64::max);
        let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
        results.insert("import".into(), json!({"lines": total_lines, "secs": secs, "slowest_secs": slowest, "records_per_sec": total_lines as f64 / secs, "slowest_records_per_sec": total_lines as f64 / slowest, "peak_rss_kb": peak}));
        if !skip("snapshot") {
            let figures = snapshot::measure_snapshot(dir.path(), &file, total_lines);
            results.insert("snapshot".into(), figures);
        }
    }

    if !skip("postgres") {
        if let Some(figures) = postgres::measure_postgres(dir.path(), &rt) {
            results.insert("postgres".into(), figures);
        }
    }

    if !skip("metered") {
        results.insert("metered".into(), metered::measure_metered(dir.path()));
    }

    if !skip("idle") {
        let small = fresh(&dir.path().join("idle.db"));
        generate(
            &small,
            &Shape {
                msps: 3,
                workspaces_per_msp: 20,
                units_per_workspace: 50,
            },
            now,
        );
        let sim = SimProc::start(0);
        connect_all(&small, &sim);
        let cfg = write_config(dir.path(), &sim.url, &small, 100, 8);
        let log = dir.path().join("idle.log");
        let mut child = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let wait_log = |needle: &str| {
            let t = Instant::now();
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle)
            {
                assert!(t.elapsed() < Duration::from_secs(60), "daemon: {needle}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_log("daemon ready");
        let (_, rss_start) = rss_kb(&pid);
        Command::new("kill")
            .args(["-s", "USR1", &pid])
            .status()
            .unwrap();
        wait_log("sync run started");
        let t = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(") ok: ")
        {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "idle sync did not finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, rss_after) = rss_kb(&pid);
        let cpu0 = cpu_secs(&pid);
        std::thread::sleep(Duration::from_secs(idle_secs));
        let cpu = cpu_secs(&pid) - cpu0;
        let _ = child.kill();
        let _ = child.wait();
        println!("idle: RSS {rss_start} kB at start, {rss_after} kB after a sync; {cpu:.2} CPU-s over {idle_secs} s idle");
        results.insert("idle".into(), json!({"rss_start_kb": rss_start, "rss_after_sync_kb": rss_after, "idle_secs": idle_secs, "idle_cpu_secs": cpu}));
    }

    let out = target_dir().join("capacity.json");
    // Keep the figures of sections (and scales) skipped this time.
    if let Ok(old) = std::fs::read_to_string(&out) {
        if let Ok(Value::Object(old)) = serde_json::from_str::<Value>(&old) {
            merge_old(&mut results, old);
        }
    }
    results.insert("scaling".into(), scaling(&results));
    let text = serde_json::to_string_pretty(&Value::Object(results.clone())).unwrap();
    if let Err(e) = std::fs::write(&out, &text) {
        eprintln!("cannot write {}: {e}", out.display());
    }
    print_table(&Value::Object(results));
    println!("\nwritten to {}", out.display());
}
