//! The control API's edges, measured on the real binary (included by `benches/console.rs`, whose
//! closing phase this is; `BENCH_ONLY=edges` runs it alone): `/healthz` latency while 2,000 idle
//! connections are open, and the daemon's memory while a 1 GiB inventory is posted.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::{config, rss_kb};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Starts the real binary with its API on `dir/edges.sock`; returns the child.
fn daemon(dir: &Path, base_url: &str) -> (std::process::Child, std::path::PathBuf) {
    let store = dir.join("edges.db");
    let socket = dir.join("edges.sock");
    let cfg = dir.join("edges.toml");
    std::fs::write(dir.join("vendor-api-key"), "sim-vendor-key").unwrap();
    config(base_url, &store, 90, 8)
        .set("api", "listen", format!("unix:{}", socket.display()))
        .set("api", "max_inventory_mib", 2048)
        .write(&cfg)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gradient-connector"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the API never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, socket)
}

fn healthz(socket: &Path) -> f64 {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    t.elapsed().as_secs_f64() * 1000.0
}

/// Runs the phase; returns its figures.
pub fn measure(dir: &Path, base_url: &str) -> Value {
    let (mut child, socket) = daemon(dir, base_url);
    let pid = child.id().to_string();
    // /healthz with 2,000 idle connections open (more than api.max_connections: the oldest idle
    // ones make room, none is answered).
    let idle: Vec<UnixStream> = (0..2000)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let mut took: Vec<f64> = (0..500).map(|_| healthz(&socket)).collect();
    took.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    println!(
        "/healthz with {} idle connections open: p50 {p50:.2} ms, p99 {p99:.2} ms (goal: < 1 s)",
        idle.len()
    );
    drop(idle);
    // A 1 GiB inventory post: blank lines, then one record; the daemon's RSS sampled meanwhile.
    let (before_peak, _) = rss_kb(&pid);
    let mut s = UnixStream::connect(&socket).unwrap();
    let record = "{\"type\":\"channel\",\"id\":\"msp-gib\",\"name\":\"GiB IT\"}\n";
    let mut blank = vec![b' '; 1 << 20];
    for end in (32 * 1024 - 1..1 << 20).step_by(32 * 1024) {
        blank[end] = b'\n';
    }
    let len = 1024 * (1u64 << 20) + record.len() as u64;
    write!(
        s,
        "POST /v1/inventory HTTP/1.1\r\nhost: b\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let t = Instant::now();
    let mut max_rss = 0;
    for i in 0..1024 {
        s.write_all(&blank).unwrap();
        if i % 64 == 0 {
            max_rss = max_rss.max(rss_kb(&pid).1);
        }
    }
    s.write_all(record.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let secs = t.elapsed().as_secs_f64();
    let (peak, _) = rss_kb(&pid);
    println!(
        "POST /v1/inventory of 1 GiB: {secs:.1} s; daemon RSS at most {:.1} MB while posting, peak {:.1} MB (before: {:.1} MB; goal: < 100 MB)",
        max_rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        before_peak as f64 / 1024.0
    );
    let _ = Command::new("kill").args(["-s", "TERM", &pid]).status();
    let _ = child.wait();
    json!({
        "healthz_with_2000_idle_ms": {"p50": p50, "p99": p99, "goal_ms": 1000.0},
        "inventory_1_gib": {"secs": secs, "max_rss_mb": max_rss as f64 / 1024.0, "peak_rss_mb": peak as f64 / 1024.0, "goal_mb": 100.0},
    })
}
