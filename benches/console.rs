//! Console benchmark: `cargo bench --bench console`.
//!
//! What a vendor console sees while a large sync runs. A synthetic vendor of 500 MSPs (connectors)
//! × 20 workspaces × 4 services — 40,000 pairs — is generated through the test kit and the
//! product's own import; the daemon (`daemon::run`, in this process, with the rate limit lifted so
//! that a run keeps both cores busy) serves its control API on a unix socket and delivers webhooks
//! to a local receiver. Measured, over `BENCH_RUNS` (default 3) full runs started with
//! `POST /v1/sync`:
//! - `GET /v1/connectors/{id}` latency (p50, p99, max) from a console client asking back-to-back on
//!   one keep-alive connection for random connectors while the runs go (goal: p99 ≤ 20 ms on 2
//!   cores);
//! - the time from each run's end (`finished_at`) until the receiver holds all 500 of its
//!   `connector.synced` events (goal: ≤ 60 s).
//!
//! Prints the figures and writes `console.json` into cargo's target directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gradient_connector::config::Config;
use gradient_connector::time::now_ms;
use gradient_connector_kit::Webhook;
use serde_json::{json, Value};

mod support;
use support::*;

#[path = "support/edges.rs"]
mod edges;

const CONNECTORS: usize = 500;

/// One HTTP/1.1 exchange on a kept-alive unix-socket connection: (status, body).
struct Api {
    path: PathBuf,
    conn: Option<BufReader<UnixStream>>,
}

impl Api {
    fn new(path: &Path) -> Api {
        Api {
            path: path.to_path_buf(),
            conn: None,
        }
    }

    fn call(&mut self, method: &str, route: &str, body: Option<&str>) -> (u16, Value) {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path).expect("the API socket answers");
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        let body = body.unwrap_or("");
        write!(
            conn.get_mut(),
            "{method} {route} HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status_line = String::new();
        conn.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if lower == "connection: close" {
                close = true;
            }
        }
        let mut buf = vec![0; length];
        conn.read_exact(&mut buf).unwrap();
        if close {
            self.conn = None;
        }
        (status, serde_json::from_slice(&buf).unwrap_or(Value::Null))
    }

    /// The newest run.
    fn last_run(&mut self) -> Option<Value> {
        let (_, runs) = self.call("GET", "/v1/runs?limit=1", None);
        runs["runs"].as_array().and_then(|a| a.first().cloned())
    }
}

/// What the receiver got: per run id, the arrival times (ms since the epoch) of its
/// `connector.synced` events, one per `webhook-id`.
type Arrivals = Arc<Mutex<HashMap<i64, HashMap<String, i64>>>>;

/// A webhook receiver on 127.0.0.1: answers 204 to every POST (keep-alive), records arrivals.
fn receiver() -> (String, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut length, mut id) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if let Some(v) = lower.strip_prefix("webhook-id:") {
                            id = v.trim().to_string();
                        }
                    }
                    let mut body = vec![0; length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if event["type"] == "connector.synced" {
                        if let Some(run) = event["data"]["run"].as_i64() {
                            seen.lock()
                                .unwrap()
                                .entry(run)
                                .or_default()
                                .entry(id)
                                .or_insert(at);
                        }
                    }
                    let ok = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
                    if r.get_mut().write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, arrivals)
}

fn rfc3339_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("an RFC 3339 time"))
        .unwrap()
        .timestamp_millis()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits (polling every 50 ms) until the newest run's id is `after` + 1 or more and it finished.
fn wait_finished(api: &mut Api, after: i64, limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        if let Some(r) = api.last_run() {
            if r["id"].as_i64().unwrap_or(0) > after && !r["finished_at"].is_null() {
                return r;
            }
        }
        assert!(t.elapsed() < limit, "no run finished within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the receiver holds `n` events of run `run`; the last one's arrival (ms).
fn wait_delivered(arrivals: &Arrivals, run: i64, n: usize, limit: Duration) -> Option<i64> {
    let t = Instant::now();
    loop {
        if let Some(got) = arrivals.lock().unwrap().get(&run) {
            if got.len() >= n {
                return got.values().max().copied();
            }
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark's steps in the order they run"
)]
fn main() {
    if std::env::var("BENCH_ONLY").as_deref() == Ok("edges") {
        let temp = tempfile::tempdir().unwrap();
        let sim = SimProc::start(0);
        let figures = edges::measure(temp.path(), &sim.url);
        let out = target_dir().join("console-edges.json");
        if let Err(e) = std::fs::write(&out, serde_json::to_string_pretty(&figures).unwrap()) {
            eprintln!("cannot write {}: {e}", out.display());
        }
        drop(sim);
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let now = now_ms();
    let store = dir.join("console.db");
    let t = Instant::now();
    let size = generate(
        &store,
        &Shape {
            msps: CONNECTORS,
            workspaces_per_msp: 20,
            units_per_workspace: 10,
        },
        now,
    );
    println!(
        "store: {} connectors, {} workspaces, {} units ({:.1} s)",
        size.channels,
        size.workspaces,
        size.units,
        t.elapsed().as_secs_f64()
    );
    let sim = SimProc::start(0);
    connect_all(&store, &sim);
    let (hook_url, arrivals) = receiver();
    let secret = dir.join("webhook-secret");
    std::fs::write(
        &secret,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // a bench-only secret (24 bytes)
    )
    .unwrap();
    let socket = dir.join("api.sock");
    let cfg_path = dir.join("console.toml");
    std::fs::write(dir.join("vendor-api-key"), "sim-vendor-key").unwrap();
    config(&sim.url, &store, 100, 64)
        .set("api", "listen", format!("unix:{}", socket.display()))
        .webhook(Webhook::new(&hook_url, &secret))
        .write(&cfg_path)
        .unwrap();
    let mut cfg = Config::load(&cfg_path).unwrap();
    // Bench-only: the configuration refuses more than Gradient's 100/s; lifted so that a run keeps
    // both cores busy while the console asks.
    cfg.gradient.client.requests_per_second = 1_000_000;
    cfg.gradient.client.max_in_flight = 64;
    let daemon = std::thread::spawn(move || {
        let rt = gradient_connector::daemon::runtime().unwrap();
        rt.block_on(gradient_connector::daemon::run(Arc::new(cfg)))
    });
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the API never came up"
        );
        assert!(!daemon.is_finished(), "the daemon stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut api = Api::new(&socket);
    assert_eq!(api.call("GET", "/readyz", None).0, 200);

    // Warm-up: the first run creates the services and 10,000 accounts.
    let before = api.last_run().and_then(|r| r["id"].as_i64()).unwrap_or(0);
    assert_eq!(api.call("POST", "/v1/sync", Some("{}")).0, 202);
    let warm = wait_finished(&mut api, before, Duration::from_secs(600));
    let warm_id = warm["id"].as_i64().unwrap();
    println!("warm-up run {warm_id}: {}", warm["counts"]);
    wait_delivered(&arrivals, warm_id, CONNECTORS, Duration::from_secs(300));

    let mut latencies: Vec<f64> = Vec::new();
    let mut deliveries: Vec<Value> = Vec::new();
    let mut last_id = warm_id;
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..runs {
        let done = Arc::new(AtomicBool::new(false));
        // The console: back-to-back GETs of random connectors until the run has finished.
        let console = {
            let done = done.clone();
            let socket = socket.clone();
            let seed = rng.u64(..);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut api = Api::new(&socket);
                let mut took = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let id = format!("msp-{:04}", rng.usize(0..CONNECTORS));
                    let t = Instant::now();
                    let (status, body) = api.call("GET", &format!("/v1/connectors/{id}"), None);
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["id"], id.as_str());
                }
                took
            })
        };
        assert_eq!(api.call("POST", "/v1/sync", Some("{}")).0, 202);
        let run = wait_finished(&mut api, last_id, Duration::from_secs(600));
        done.store(true, Ordering::Relaxed);
        let took = console.join().unwrap();
        let id = run["id"].as_i64().unwrap();
        last_id = id;
        let started = rfc3339_ms(&run["started_at"]);
        let finished = rfc3339_ms(&run["finished_at"]);
        let last = wait_delivered(&arrivals, id, CONNECTORS, Duration::from_secs(300));
        let after_end = last.map(|at| (at - finished).max(0) as f64 / 1000.0);
        println!(
            "run {id}: {} in {:.1} s; {} console GETs; {CONNECTORS} connector.synced delivered {}",
            run["counts"],
            (finished - started) as f64 / 1000.0,
            took.len(),
            after_end.map_or("NOT within 300 s".into(), |s| format!(
                "{s:.2} s after the run's end"
            ))
        );
        deliveries.push(json!({"run": id, "run_secs": (finished - started) as f64 / 1000.0, "pairs": run["counts"]["pushed"], "all_delivered_secs_after_end": after_end}));
        latencies.extend(took);
    }
    // The same requests with no run going: what the route costs by itself.
    let mut idle: Vec<f64> = (0..500)
        .map(|_| {
            let id = format!("msp-{:04}", rng.usize(0..CONNECTORS));
            let t = Instant::now();
            let (status, _) = api.call("GET", &format!("/v1/connectors/{id}"), None);
            assert_eq!(status, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    idle.sort_by(f64::total_cmp);
    let direct = {
        let s = gradient_connector::store::Store::open(&store, Duration::from_secs(5)).unwrap();
        let mut took: Vec<f64> = (0..500)
            .map(|_| {
                let id = format!("msp-{:04}", rng.usize(0..CONNECTORS));
                let t = Instant::now();
                let v = gradient_connector::status::connector_status(&s, &id, &Default::default())
                    .unwrap();
                assert!(v.is_some());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        took.sort_by(f64::total_cmp);
        percentile(&took, 0.5)
    };
    println!("status::connector_status alone: p50 {direct:.2} ms");
    let (idle_p50, idle_p99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    println!(
        "GET /v1/connectors/{{id}} with no run going: p50 {idle_p50:.2} ms, p99 {idle_p99:.2} ms"
    );
    latencies.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
    );
    let worst_delivery = deliveries
        .iter()
        .map(|d| {
            d["all_delivered_secs_after_end"]
                .as_f64()
                .unwrap_or(f64::INFINITY)
        })
        .fold(0.0, f64::max);
    println!(
        "\nGET /v1/connectors/{{id}} during full runs ({} requests): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (goal: p99 ≤ 20 ms)",
        latencies.len()
    );
    println!(
        "webhooks: all {CONNECTORS} connector.synced of a run delivered at worst {worst_delivery:.2} s after its end (goal: ≤ 60 s)"
    );
    let edge_dir = dir.join("edges");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edges = edges::measure(&edge_dir, &sim.url);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = json!({
        "edges": edges,
        "cores": cores,
        "connectors": CONNECTORS,
        "get_connector_ms": {"requests": latencies.len(), "p50": p50, "p99": p99, "max": max, "goal_p99": 20.0, "idle_p50": idle_p50, "idle_p99": idle_p99},
        "webhooks": {"runs": deliveries, "worst_secs_after_end": worst_delivery, "goal_secs": 60.0},
    });
    let out = target_dir().join("console.json");
    if let Err(e) = std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()) {
        eprintln!("cannot write {}: {e}", out.display());
    }
    println!("written to {}", out.display());
    // The daemon runs until the process ends; the temporary directory goes first.
    if let Some(keep) = std::env::var_os("BENCH_KEEP_STORE") {
        // For EXPLAIN by hand: the store and its WAL.
        let keep = PathBuf::from(keep);
        let _ = std::fs::copy(&store, &keep);
        let mut wal = keep.into_os_string();
        wal.push("-wal");
        let _ = std::fs::copy(dir.join("console.db-wal"), wal);
    }
    drop(sim);
    drop(temp);
    std::process::exit(0);
}
