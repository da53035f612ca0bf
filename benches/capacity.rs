//! Capacity benchmark: `cargo bench --bench capacity`.
//!
//! Builds a synthetic store of a large vendor (500 MSPs, 10,000 workspaces, 2,000,000 users and
//! devices with 90 days of interval history, 4 services) and measures: plan time and peak RSS
//! (daily and monthly peak, plus the same query in the sqlite3 shell), push throughput and CPU per
//! 1,000 pushes against gradient-sim, rate-limit fidelity at 100/s, import speed and RSS (best of
//! three fresh imports), and the idle daemon's RSS and CPU. Prints a table and writes
//! `target/capacity.json`.
//!
//! Environment: `BENCH_SCALE` (default 1.0) scales MSPs/workspaces/units; `BENCH_IDLE_SECS`
//! (default 60) sets the idle window; `BENCH_SKIP` (comma list of plan,push,rate,import,idle).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gradient_connector::config::Config;
use gradient_connector::domain::{MonthlyCount, Trigger, UnitKind};
use gradient_connector::store::counting::{self, ServiceUnit};
use gradient_connector::store::Store;
use gradient_connector::sync::{self, RunControl, RunRequest, SyncContext};
use gradient_connector::time::{now_ms, Millis, Month};
use rusqlite::params;
use serde_json::{json, Value};

const SIM: &str = env!("CARGO_BIN_EXE_gradient-sim");
const BIN: &str = env!("CARGO_BIN_EXE_gradient-connector");
const DAY: Millis = 86_400_000;

const SERVICES: &[(&str, &str, UnitKind, &str, &str)] = &[
    (
        "edr",
        "Bench EDR",
        UnitKind::Devices,
        "security",
        "endpoint detection and response (EDR)",
    ),
    (
        "mail",
        "Bench Mail",
        UnitKind::Users,
        "security",
        "email security",
    ),
    (
        "backup",
        "Bench Backup",
        UnitKind::Devices,
        "backup",
        "cloud backup",
    ),
    (
        "awareness",
        "Bench Awareness",
        UnitKind::Users,
        "security",
        "privacy and security awareness training",
    ),
];

fn services() -> Vec<ServiceUnit> {
    SERVICES
        .iter()
        .map(|(m, _, u, _, _)| ServiceUnit {
            module: m.to_string(),
            unit: *u,
        })
        .collect()
}

fn config_text(base_url: &str, store: &Path, rps: u32, in_flight: u32) -> String {
    let mut t = format!(
        "[gradient]\nbase_url = \"{base_url}\"\nvendor_api_key_file = \"vendor-api-key\"\nrequests_per_second = {rps}\nmax_in_flight = {in_flight}\nretry_initial_delay_ms = 50\nretry_max_delay_secs = 2\n\
         [store]\npath = \"{}\"\n[schedule]\ncron = \"0 0 2 * * *\"\n[log]\nlevel = \"warn\"\n",
        store.display()
    );
    for (m, n, u, c, s) in SERVICES {
        t += &format!(
            "[[service]]\nmodule = \"{m}\"\nname = \"{n}\"\nunit = \"{}\"\ncategory = \"{c}\"\nsubcategory = \"{s}\"\n",
            u.as_str()
        );
    }
    t
}

fn write_config(dir: &Path, base_url: &str, store: &Path, rps: u32, in_flight: u32) -> PathBuf {
    std::fs::write(dir.join("vendor-api-key"), "sim-vendor-key").unwrap();
    let p = dir.join(format!(
        "bench-{}.toml",
        store.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, config_text(base_url, store, rps.min(100), in_flight)).unwrap();
    p
}

/// Peak and current RSS (kB) of a process from /proc.
fn rss_kb(pid: &str) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) of a process from /proc.
fn cpu_secs(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Shape {
    msps: usize,
    workspaces_per_msp: usize,
    units_per_workspace: usize,
}

/// Writes a synthetic inventory straight into a store: every workspace has the 4 modules from day 0
/// (5% switch backup off on day 60); each unit is protected from a day in [0, 30); 30% stop on a day
/// in [40, 90), half of those come back 5 days later.
fn generate(path: &Path, shape: &Shape, now: Millis) -> (usize, usize) {
    let mut store = Store::open(path, Duration::from_secs(30)).unwrap();
    let base = now - 90 * DAY;
    let mut rng = fastrand::Rng::with_seed(7);
    let conn = store.conn_mut();
    conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
    let tx = conn.transaction().unwrap();
    let (mut units, mut intervals) = (0, 0);
    {
        let mut ch = tx
            .prepare("INSERT INTO channels (id, name, changed_at) VALUES (?1, ?2, ?3)")
            .unwrap();
        let mut ws = tx
            .prepare(
                "INSERT INTO workspaces (id, channel_id, name, changed_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        let mut md = tx.prepare("INSERT INTO modules (workspace_id, module, enabled, changed_at) VALUES (?1, ?2, ?3, ?4)").unwrap();
        let mut mi = tx.prepare("INSERT INTO module_intervals (workspace_id, module, from_at, to_at) VALUES (?1, ?2, ?3, ?4)").unwrap();
        let mut un = tx.prepare("INSERT INTO units (kind, id, ref, workspace_id, protected, changed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)").unwrap();
        let mut ui = tx.prepare("INSERT INTO unit_intervals (unit, kind, workspace_id, from_at, to_at) VALUES (?1, ?2, ?3, ?4, ?5)").unwrap();
        for c in 0..shape.msps {
            let cid = format!("msp-{c:04}");
            ch.execute(params![cid, format!("MSP {c}"), base]).unwrap();
            for w in 0..shape.workspaces_per_msp {
                let wid = format!("{cid}-ws{w:03}");
                ws.execute(params![wid, cid, format!("Customer {c}/{w}"), base])
                    .unwrap();
                for (m, ..) in SERVICES {
                    let off = *m == "backup" && rng.u8(0..20) == 0;
                    let to = off.then_some(base + 60 * DAY);
                    md.execute(params![wid, m, !off, to.unwrap_or(base)])
                        .unwrap();
                    mi.execute(params![wid, m, base, to]).unwrap();
                }
                for u in 0..shape.units_per_workspace {
                    let kind = if u % 2 == 0 { "users" } else { "devices" };
                    let uid = format!("{wid}-{u}");
                    let from = base + rng.i64(0..30) * DAY;
                    let stops = rng.u8(0..10) < 3;
                    let stop = base + rng.i64(40..90) * DAY;
                    let comes_back = stops && rng.bool();
                    let protected_now = !stops || comes_back;
                    let unit = units as i64 + 1;
                    un.execute(params![
                        kind,
                        uid,
                        unit,
                        wid,
                        protected_now,
                        if stops { stop } else { from }
                    ])
                    .unwrap();
                    ui.execute(params![unit, kind, wid, from, stops.then_some(stop)])
                        .unwrap();
                    intervals += 1;
                    if comes_back {
                        ui.execute(params![
                            unit,
                            kind,
                            wid,
                            stop + 5 * DAY,
                            Option::<i64>::None
                        ])
                        .unwrap();
                        intervals += 1;
                    }
                    units += 1;
                }
            }
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA synchronous = NORMAL; ANALYZE;")
        .unwrap();
    (units, intervals)
}

/// Child mode: one plan computation, reported as one JSON line.
fn child_plan(kind: &str, store: &Path, now: Millis) {
    let store = Store::open(store, Duration::from_secs(30)).unwrap();
    let svcs = services();
    if std::env::var_os("BENCH_EXPLAIN").is_some() {
        let (sql, p) = match kind {
            "daily" => counting::as_of_query(&svcs, now),
            _ => {
                let m = Month::containing(now, chrono_tz::UTC).previous();
                let (a, b) = m.bounds(chrono_tz::UTC);
                counting::month_query(&svcs, a, b, MonthlyCount::Peak)
            }
        };
        let mut st = store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = st
            .query_map(rusqlite::params_from_iter(p.clone()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .unwrap();
        for r in rows {
            let (id, parent, detail) = r.unwrap();
            eprintln!("{id:>4} {parent:>4} {detail}");
        }
        let t = Instant::now();
        let mut st = store.conn().prepare(&sql).unwrap();
        let n = st
            .query_map(rusqlite::params_from_iter(p), |_| Ok(()))
            .unwrap()
            .count();
        eprintln!("raw query: {n} rows in {:.3} s", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let counts = match kind {
        "daily" => counting::count_as_of(store.conn(), &svcs, now).unwrap(),
        _ => {
            let m = Month::containing(now, chrono_tz::UTC).previous();
            let (a, b) = m.bounds(chrono_tz::UTC);
            counting::count_month(store.conn(), &svcs, a, b, MonthlyCount::Peak).unwrap()
        }
    };
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

struct SimProc {
    child: Child,
    url: String,
}

impl SimProc {
    fn start(rate_limit: u32) -> SimProc {
        let mut child = Command::new(SIM)
            .args(["--port", "0", "--rate-limit", &rate_limit.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        SimProc {
            child,
            url: format!("http://127.0.0.1:{}", line.trim()),
        }
    }

    fn state(&self) -> Value {
        let out = http(&self.url, "GET", "/_sim/state", None);
        serde_json::from_str(&out).unwrap()
    }

    fn add_msp(&self, id: &str) {
        let body = json!({"id": id, "name": id, "key": format!("key-{id}")}).to_string();
        http(&self.url, "POST", "/_sim/msp", Some(&body));
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for the stand-in's admin API.
fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> String {
    use std::io::Read;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body_start = resp.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let raw = &resp[body_start..];
    // Chunked or not: keep the JSON part.
    match (raw.find('{'), raw.rfind('}')) {
        (Some(a), Some(b)) if b > a => raw[a..=b].to_string(),
        _ => String::new(),
    }
}

/// Stores tokens for every channel and marks the connectors connected (as `connector add` would).
fn connect_all(store: &Path, sim: &SimProc) {
    let s = Store::open(store, Duration::from_secs(30)).unwrap();
    let channels: Vec<String> = {
        let mut st = s.conn().prepare("SELECT id FROM channels").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for c in &channels {
        sim.add_msp(c);
        let t = now_ms();
        s.set_token(c, &secrecy::SecretString::from(format!("key-{c}")), t)
            .unwrap();
        s.mark_connected(c, Some(t), Some("pending"), None, None, t)
            .unwrap();
    }
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

/// Removes a store left by an earlier run in BENCH_DIR.
fn fresh(path: &Path) -> PathBuf {
    for ext in ["", "-wal", "-shm", ".run-lock"] {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    path.to_path_buf()
}

fn skip(what: &str) -> bool {
    std::env::var("BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s == what)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let now: Millis = args[4].parse().unwrap();
        child_plan(&args[2], Path::new(&args[3]), now);
        return;
    }
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // BENCH_DIR keeps the generated stores (and reuses big.db) for profiling by hand.
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
    let mut results = serde_json::Map::new();
    results.insert("cores".into(), json!(cores));
    results.insert("scale".into(), json!(scale));
    let now = now_ms();
    let shape = Shape {
        msps: ((500.0 * scale) as usize).max(1),
        workspaces_per_msp: 20,
        units_per_workspace: 200,
    };
    let big = dir.path().join("big.db");
    println!(
        "generating {} MSPs × {} workspaces × {} units ...",
        shape.msps, shape.workspaces_per_msp, shape.units_per_workspace
    );
    let t = Instant::now();
    let (units, intervals) = if big.exists() {
        let s = Store::open(&big, Duration::from_secs(30)).unwrap();
        let n = |q: &str| s.conn().query_row(q, [], |r| r.get::<_, i64>(0)).unwrap() as usize;
        (
            n("SELECT count(*) FROM units"),
            n("SELECT count(*) FROM unit_intervals"),
        )
    } else {
        generate(&big, &shape, now)
    };
    let gen_secs = t.elapsed().as_secs_f64();
    println!("  {units} units, {intervals} intervals in {gen_secs:.1} s");
    results.insert("store".into(), json!({"msps": shape.msps, "workspaces": shape.msps * shape.workspaces_per_msp, "units": units, "intervals": intervals, "generate_secs": gen_secs}));

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
        println!("plan daily: {daily} sqlite3 {shell_daily:?}; monthly: {monthly} sqlite3 {shell_monthly:?}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if !skip("push") {
        let sim = SimProc::start(0);
        connect_all(&big, &sim);
        let cfg = write_config(dir.path(), &sim.url, &big, 100, 64);
        let ctx = context(&cfg, 1_000_000, 64);
        let first = sync_once(&rt, &ctx);
        println!(
            "push warm-up (creates services and accounts): {}",
            first.summary()
        );
        let cpu0 = cpu_secs("self");
        let t = Instant::now();
        let report = sync_once(&rt, &ctx);
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs("self") - cpu0;
        let pushed = report.tally.pushed as f64;
        println!("push: {}", report.summary());
        results.insert(
            "push".into(),
            json!({
                "pairs": report.tally.pushed, "secs": secs, "pushes_per_sec": pushed / secs,
                "cpu_secs": cpu, "cpu_secs_per_1000": cpu / pushed * 1000.0,
                "failed": report.tally.failed, "note": "gradient-sim runs on the same 2 cores"
            }),
        );
    }

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
        let cfg = write_config(dir.path(), &sim.url, &small, 100, 8);
        let ctx = context(&cfg, 100, 8);
        let report = sync_once(&rt, &ctx);
        let state = sim.state();
        let reqs = state["requests"].as_array().cloned().unwrap_or_default();
        let counts: Vec<u64> = reqs
            .iter()
            .filter(|r| r["path"].as_str().unwrap_or("").ends_with("/count"))
            .filter_map(|r| r["at_ms"].as_u64())
            .collect();
        let throttled = reqs.iter().filter(|r| r["status"] == 429).count();
        let span = (counts.last().copied().unwrap_or(0) - counts.first().copied().unwrap_or(0))
            as f64
            / 1000.0;
        let rate = (counts.len().saturating_sub(1)) as f64 / span.max(0.001);
        println!(
            "rate: {} pushes at {rate:.1}/s, {throttled} answered 429",
            counts.len()
        );
        results.insert("rate_limit".into(), json!({"pushes": report.tally.pushed, "achieved_per_sec": rate, "answered_429": throttled}));
    }

    if !skip("import") {
        let file = dir.path().join("import.jsonl");
        let total_lines = {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
            let mut lines = 0usize;
            'outer: for c in 0..1000 {
                writeln!(w, r#"{{"type":"channel","id":"ic-{c}","name":"MSP {c}"}}"#).unwrap();
                lines += 1;
                for k in 0..50 {
                    let ws = format!("ic-{c}-{k}");
                    writeln!(w, r#"{{"type":"workspace","id":"{ws}","channel":"ic-{c}","name":"Customer {k}","at":"2026-10-01T00:00:00Z"}}"#).unwrap();
                    writeln!(w, r#"{{"type":"module","workspace":"{ws}","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}}"#).unwrap();
                    lines += 2;
                    for u in 0..196 {
                        let kind = if u % 2 == 0 { "user" } else { "device" };
                        writeln!(w, r#"{{"type":"{kind}","workspace":"{ws}","id":"{ws}-{u}","protected":true,"at":"2026-10-02T09:00:00Z"}}"#).unwrap();
                        lines += 1;
                        if lines >= 1_000_000 {
                            break 'outer;
                        }
                    }
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
            let t = Instant::now();
            let mut child = Command::new(BIN)
                .args([
                    "--config",
                    cfg.to_str().unwrap(),
                    "import",
                    file.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            let mut peak = 0;
            while child.try_wait().unwrap().is_none() {
                peak = peak.max(rss_kb(&pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            let secs = t.elapsed().as_secs_f64();
            let out = child.wait_with_output().unwrap();
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

    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("capacity.json");
    // Keep the figures of sections skipped this time.
    if let Ok(old) = std::fs::read_to_string(&out) {
        if let Ok(Value::Object(old)) = serde_json::from_str::<Value>(&old) {
            for (k, v) in old {
                results.entry(k).or_insert(v);
            }
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(results.clone())).unwrap();
    let _ = std::fs::write(&out, &text);
    print_table(&Value::Object(results));
    println!("\nwritten to {}", out.display());
}

/// The figures as a table: measure, value, target, met.
fn print_table(r: &Value) {
    let f = |path: &[&str]| -> Option<f64> {
        let mut v = r;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    };
    let rows: Vec<(&str, Option<f64>, &str, Option<bool>)> = {
        let le = |v: Option<f64>, t: f64| v.map(|v| v <= t);
        let ge = |v: Option<f64>, t: f64| v.map(|v| v >= t);
        vec![
            (
                "daily plan, s",
                f(&["plan_daily", "ours", "secs"]),
                "<= 2",
                le(f(&["plan_daily", "ours", "secs"]), 2.0),
            ),
            (
                "daily plan, peak RSS MB",
                f(&["plan_daily", "ours", "peak_rss_kb"]).map(|k| k / 1024.0),
                "<= 150",
                le(
                    f(&["plan_daily", "ours", "peak_rss_kb"]).map(|k| k / 1024.0),
                    150.0,
                ),
            ),
            (
                "daily plan, ours / sqlite3",
                f(&["plan_daily", "ratio"]),
                "<= 1.5",
                le(f(&["plan_daily", "ratio"]), 1.5),
            ),
            (
                "monthly peak plan, s",
                f(&["plan_monthly_peak", "ours", "secs"]),
                "<= 5",
                le(f(&["plan_monthly_peak", "ours", "secs"]), 5.0),
            ),
            (
                "monthly peak plan, peak RSS MB",
                f(&["plan_monthly_peak", "ours", "peak_rss_kb"]).map(|k| k / 1024.0),
                "<= 150",
                le(
                    f(&["plan_monthly_peak", "ours", "peak_rss_kb"]).map(|k| k / 1024.0),
                    150.0,
                ),
            ),
            (
                "monthly peak plan, ours / sqlite3",
                f(&["plan_monthly_peak", "ratio"]),
                "<= 1.5",
                le(f(&["plan_monthly_peak", "ratio"]), 1.5),
            ),
            (
                "push throughput, pushes/s",
                f(&["push", "pushes_per_sec"]),
                ">= 3000",
                ge(f(&["push", "pushes_per_sec"]), 3000.0),
            ),
            (
                "push CPU, s per 1,000 pushes",
                f(&["push", "cpu_secs_per_1000"]),
                "<= 0.3",
                le(f(&["push", "cpu_secs_per_1000"]), 0.3),
            ),
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
    println!("\n{:<42} {:>12} {:>11}  met", "measure", "value", "target");
    for (name, v, target, met) in rows {
        let v = v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{name:<42} {v:>12} {target:>11}  {met}");
    }
    println!("cores: {}", r["cores"]);
}
