//! What the benchmarks share: the synthetic inventory (generated through the test kit and the
//! product's own import), the configuration they run with, gradient-sim as a child process and
//! its admin API, and readings from /proc.
#![allow(dead_code)] // each benchmark uses its own part

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gradient_connector::domain::UnitKind;
use gradient_connector::store::counting::ServiceUnit;
use gradient_connector::store::import::import;
use gradient_connector::store::run_inputs::InventorySize;
use gradient_connector::store::Store;
use gradient_connector::time::{now_ms, Millis};
use gradient_connector_kit::{ConfigBuilder, Inventory, Service};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

pub const SIM: &str = env!("CARGO_BIN_EXE_gradient-sim");
pub const DAY: Millis = 86_400_000;

pub const SERVICES: &[(&str, &str, UnitKind, &str, &str)] = &[
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

pub fn services() -> Vec<ServiceUnit> {
    SERVICES
        .iter()
        .map(|(m, _, u, _, _)| ServiceUnit::new(*m, *u))
        .collect()
}

pub fn config(base_url: &str, store: &Path, rps: u32, in_flight: u32) -> ConfigBuilder {
    let mut c = ConfigBuilder::new(base_url)
        .vendor_key_file("vendor-api-key")
        .set("gradient", "requests_per_second", i64::from(rps))
        .set("gradient", "max_in_flight", i64::from(in_flight))
        .set("gradient", "retry_initial_delay_ms", 50)
        .set("gradient", "retry_max_delay_secs", 2)
        .store_path(store)
        .store_key_file(store_key(store))
        .set("schedule", "cron", "0 0 2 * * *")
        .set("log", "level", "warn");
    for (m, n, u, cat, sub) in SERVICES {
        c = c.service(Service::new(m, n, *u, cat, sub));
    }
    c
}

/// The store key beside a bench store (made when missing): tokens are sealed under it.
pub fn store_key(store: &Path) -> PathBuf {
    let path = store.with_file_name("store-key");
    gradient_connector_kit::ensure_store_key(&path).unwrap();
    path
}

pub fn write_config(dir: &Path, base_url: &str, store: &Path, rps: u32, in_flight: u32) -> PathBuf {
    std::fs::write(dir.join("vendor-api-key"), "sim-vendor-key").unwrap();
    let p = dir.join(format!(
        "bench-{}.toml",
        store.file_stem().unwrap().to_string_lossy()
    ));
    config(base_url, store, rps.min(100), in_flight)
        .write(&p)
        .unwrap();
    p
}

/// Peak and current RSS (kB) of a process from /proc.
pub fn rss_kb(pid: &str) -> (u64, u64) {
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

/// Runs `command` to its end with piped output, sampling its peak RSS: (wall seconds, peak kB,
/// its output).
pub fn run_measured(command: &mut Command) -> (f64, u64, std::process::Output) {
    let t = std::time::Instant::now();
    let mut child = command
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
    (secs, peak, child.wait_with_output().unwrap())
}

/// CPU seconds (user + system) of a process from /proc.
pub fn cpu_secs(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

pub struct Shape {
    pub msps: usize,
    pub workspaces_per_msp: usize,
    pub units_per_workspace: usize,
}

/// One MSP's records of the synthetic inventory: every workspace has the 4 modules from day 0 (5%
/// switch backup off on day 60); each unit is protected from a day in [0, 30); 30% stop on a day
/// in [40, 90), half of those come back 5 days later (unless that is still ahead of `now`).
pub fn msp_records(c: usize, shape: &Shape, now: Millis, rng: &mut fastrand::Rng) -> Inventory {
    let base = now - 90 * DAY;
    let mut inv = Inventory::new();
    let cid = format!("msp-{c:04}");
    inv.at_ms(base).channel(&cid, &format!("MSP {c}"));
    for w in 0..shape.workspaces_per_msp {
        let wid = format!("{cid}-ws{w:03}");
        inv.at_ms(base)
            .workspace(&wid, &cid, &format!("Customer {c}/{w}"));
        for (m, ..) in SERVICES {
            inv.at_ms(base).module(&wid, m, true);
            if *m == "backup" && rng.u8(0..20) == 0 {
                inv.at_ms(base + 60 * DAY).module(&wid, m, false);
            }
        }
        for u in 0..shape.units_per_workspace {
            let kind = if u % 2 == 0 {
                UnitKind::Users
            } else {
                UnitKind::Devices
            };
            let uid = format!("{wid}-{u}");
            let from = base + rng.i64(0..30) * DAY;
            let stops = rng.u8(0..10) < 3;
            let stop = base + rng.i64(40..90) * DAY;
            let comes_back = stops && rng.bool();
            inv.at_ms(from).unit(kind, &wid, &uid, true);
            if stops {
                inv.at_ms(stop).unit(kind, &wid, &uid, false);
            }
            if comes_back && stop + 5 * DAY <= now {
                inv.at_ms(stop + 5 * DAY).unit(kind, &wid, &uid, true);
            }
        }
    }
    inv
}

/// A reader over JSON Lines made one chunk at a time (one MSP's records), so that the whole
/// inventory never sits in memory.
pub struct Chunks<F: FnMut() -> Option<Vec<u8>>> {
    next: F,
    buf: Vec<u8>,
    pos: usize,
}

impl<F: FnMut() -> Option<Vec<u8>>> std::io::Read for Chunks<F> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match (self.next)() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Builds the synthetic inventory ([`msp_records`]) through the kit and imports it into a new store
/// with the product's own import, in one transaction.
pub fn generate(path: &Path, shape: &Shape, now: Millis) -> InventorySize {
    let mut store = Store::open(path, Duration::from_secs(30)).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut c = 0;
    let chunks = Chunks {
        next: move || {
            (c < shape.msps).then(|| {
                let inv = msp_records(c, shape, now, &mut rng);
                c += 1;
                inv.to_jsonl().into_bytes()
            })
        },
        buf: Vec::new(),
        pos: 0,
    };
    import(&mut store, BufReader::with_capacity(1 << 16, chunks), now).unwrap();
    store.inventory_size().unwrap()
}

pub struct SimProc {
    child: Child,
    /// The stand-in's base URL.
    pub url: String,
}

impl SimProc {
    pub fn start(rate_limit: u32) -> SimProc {
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

    pub fn state(&self) -> Value {
        let out = http(&self.url, "GET", "/_sim/state", None);
        serde_json::from_str(&out).unwrap()
    }

    pub fn add_msp(&self, id: &str) {
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
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> String {
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
pub fn connect_all(store: &Path, sim: &SimProc) {
    let mut s = Store::open(store, Duration::from_secs(30)).unwrap();
    let text =
        gradient_connector::config::keyfile::read_key_file(&store_key(store), 64 * 1024).unwrap();
    let key = gradient_connector::config::keyfile::parse_store_key(text.expose_secret()).unwrap();
    s.set_key(Some(std::sync::Arc::new(
        gradient_connector::store::key::StoreKey::new(key),
    )));
    for c in &s.channel_ids().unwrap() {
        sim.add_msp(c);
        let t = now_ms();
        s.set_token(c, &secrecy::SecretString::from(format!("key-{c}")), t)
            .unwrap();
        s.mark_connected(c, Some(t), Some("pending"), None, None, t)
            .unwrap();
    }
}

/// Removes a store left by an earlier run in BENCH_DIR.
pub fn fresh(path: &Path) -> PathBuf {
    for ext in ["", "-wal", "-shm", ".run-lock"] {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    path.to_path_buf()
}

/// Cargo's target directory (this executable is `<target>/release/deps/capacity-…`; also under
/// `CARGO_TARGET_DIR`), else `target` beside the manifest.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
