//! Shared helpers for integration tests: temporary config + store, running the real binary.
#![allow(dead_code)]

pub mod openapi;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gradient_connector::domain::UnitKind;
use gradient_connector::store::Store;
use gradient_connector_kit::{ConfigBuilder, Inventory, OCTOBER_2026, STANDARD_MODULES};

pub const BIN: &str = env!("CARGO_BIN_EXE_gradient-connector");

/// A temporary directory with a config, a vendor key file and a store path.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    builder: ConfigBuilder,
}

pub const VENDOR_KEY: &str = "sim-vendor-key";

/// The standard test configuration: Gradient at `base_url`, the vendor key file and the store
/// beside the config, fast retries, log level info, the two standard test services.
pub fn standard_config(base_url: &str) -> ConfigBuilder {
    ConfigBuilder::new(base_url)
        .vendor_key_file("vendor-api-key")
        .store_key_file("store-key")
        .set("gradient", "retry_initial_delay_ms", 5)
        .set("gradient", "retry_max_delay_secs", 1)
        .store_path("store.db")
        .set("log", "level", "info")
        .standard_services()
}

/// Sets every `key = value` of a TOML snippet (e.g. `"max_attempts = 20\ncatch_up = true"`) in
/// `section`; each key must be one of the key table's.
pub fn with_snippet(mut config: ConfigBuilder, section: &str, snippet: &str) -> ConfigBuilder {
    let table: toml::Table = snippet
        .parse()
        .unwrap_or_else(|e| panic!("not TOML: {snippet:?}: {e}"));
    for (key, value) in table {
        config = config.set(section, &key, value);
    }
    config
}

impl Env {
    /// The standard configuration pointing at `base_url`, with the `key = value` lines of
    /// `gradient_extra` set in [gradient] and those of `schedule_extra` in [schedule].
    pub fn new(base_url: &str, gradient_extra: &str, schedule_extra: &str) -> Env {
        let config = with_snippet(standard_config(base_url), "gradient", gradient_extra);
        Env::with_config(with_snippet(config, "schedule", schedule_extra))
    }

    /// A temporary directory with the vendor key file, a store key (`store-key`, the one
    /// `store.key_file` names unless the configuration names another) and `config` written as its
    /// configuration.
    pub fn with_config(config: ConfigBuilder) -> Env {
        let dir = tempfile::tempdir().unwrap();
        gradient_connector_kit::ensure_store_key(&dir.path().join("store-key")).unwrap();
        let config = if config.get("store", "key_file").is_none() {
            config.store_key_file("store-key")
        } else {
            config
        };
        // Each test's daemon serves its own control API socket, never the system-wide default.
        let config = if config.get("api", "listen").is_none() {
            config.set(
                "api",
                "listen",
                format!("unix:{}", dir.path().join("api.sock").display()),
            )
        } else {
            config
        };
        let key = dir.path().join("vendor-api-key");
        std::fs::write(&key, format!("{VENDOR_KEY}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("gradient-connector.toml");
        config.write(&path).unwrap();
        Env {
            dir,
            config: path,
            builder: config,
        }
    }

    /// The configuration this environment was made with (to derive variants from).
    pub fn config_builder(&self) -> ConfigBuilder {
        self.builder.clone()
    }

    /// Overwrites the configuration file with `config` (the environment keeps its original
    /// builder).
    pub fn write_config(&self, config: &ConfigBuilder) {
        config.write(&self.config).unwrap();
    }

    /// Writes `config` to another file `name` in the directory; returns its path.
    pub fn write_config_as(&self, name: &str, config: &ConfigBuilder) -> PathBuf {
        let p = self.path(name);
        config.write(&p).unwrap();
        p
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the binary with `--config` and `args`, feeding `stdin`.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_bin(&self.config, args, stdin)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

pub fn run_bin(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_with(Command::new(BIN), config, args, stdin)
}

/// `cmd --config config args…` — `cmd` is the binary, or e.g. `runuser -u USER -- BIN` — without
/// the caller's `RUST_LOG` and `GRADIENT_CONNECTOR_CONFIG`, with `stdin` written to it.
pub fn run_with(mut cmd: Command, config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("RUST_LOG")
        .env_remove("GRADIENT_CONNECTOR_CONFIG");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        // The program may stop before it has read everything (e.g. it cannot open the store).
        match s.write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
    }
    child.wait_with_output().unwrap()
}

/// Waits for `child` at most `limit`, then kills it: its output, and whether it ended by itself.
pub fn wait_within(mut child: std::process::Child, limit: Duration) -> (Output, bool) {
    let deadline = Instant::now() + limit;
    let mut ended = true;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            ended = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), ended)
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One connector's object in a `status --json` document.
pub fn connector_in(status: &serde_json::Value, id: &str) -> serde_json::Value {
    status["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no connector {id} in status"))
        .clone()
}

/// A stand-in on 127.0.0.1 (in this test process) plus a config pointing at it.
pub struct SimEnv {
    pub rt: tokio::runtime::Runtime,
    pub sim: gradient_connector::sim::Sim,
    pub env: Env,
}

impl SimEnv {
    pub fn new(gradient_extra: &str, schedule_extra: &str) -> SimEnv {
        SimEnv::with_config(|c| {
            let c = with_snippet(c, "gradient", gradient_extra);
            with_snippet(c, "schedule", schedule_extra)
        })
    }

    /// A stand-in and the standard configuration pointing at it, changed by `edit`.
    pub fn with_config(edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> SimEnv {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt
            .block_on(gradient_connector::sim::Sim::start(
                gradient_connector::sim::SimOptions {
                    rate_limit_per_token: 0,
                    ..Default::default()
                },
            ))
            .unwrap();
        let env = Env::with_config(edit(standard_config(&sim.base_url())));
        SimEnv { rt, sim, env }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.env.run(args, None)
    }

    /// Adds an MSP in the stand-in and its connector on our side; asserts success.
    pub fn connect(&self, id: &str, key: &str) {
        self.sim.add_msp(id, &format!("{id} MSP"), key);
        self.add_token(id, key, 0);
    }

    pub fn add_token(&self, id: &str, key: &str, expect: i32) -> Output {
        let f = self.env.write(&format!("token-{id}"), &format!("{key}\n"));
        let out = self.run(&["connector", "add", id, "--token-file", f.to_str().unwrap()]);
        assert_eq!(
            code(&out),
            expect,
            "connector add {id}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn import(&self, text: &str) {
        let out = self.env.run(&["import", "-"], Some(text));
        assert_eq!(code(&out), 0, "import: {}", stderr(&out));
    }

    /// Imports `inventory` through the binary; asserts success.
    pub fn import_inventory(&self, inventory: &Inventory) {
        self.import(&inventory.to_jsonl());
    }

    /// The store, opened through its API (for assertions).
    pub fn store(&self) -> Store {
        Store::open(&self.env.store_path(), Duration::from_secs(5)).unwrap()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(e: &SimEnv, extra_env: &[(&str, &str)]) -> Daemon {
        let log = e.env.path(&format!("daemon-{}.log", fastrand_u32()));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&e.env.config).arg("run");
        cmd.env_remove("RUST_LOG").env_remove("NOTIFY_SOCKET");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let d = Daemon { child, log };
        d.wait_log("daemon ready");
        d
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) {
        wait_for(
            &format!("log line {needle:?}"),
            || self.log().contains(needle),
            || self.log(),
        );
    }

    pub fn kill9(mut self) {
        let _ = Command::new("kill").args(["-9", &self.pid()]).status();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    pub fn stop(mut self) -> (i32, Duration) {
        let t = Instant::now();
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s.code().unwrap_or(-1), t.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Polls `cond` every 20 ms for up to 30 s.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    wait_for_secs(what, 30, cond, context)
}

/// Polls `cond` every 20 ms for up to `secs`.
pub fn wait_for_secs(
    what: &str,
    secs: u64,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (id, trigger, started_at, finished_at, outcome) of a run.
pub type RunRow = (i64, String, i64, Option<i64>, Option<String>);

/// Every run, oldest first (read through the store's API).
pub fn runs(e: &SimEnv) -> Vec<RunRow> {
    let mut r: Vec<RunRow> = e
        .store()
        .runs(u32::MAX)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.id,
                r.trigger,
                r.started_at,
                r.finished_at,
                r.outcome.map(|o| o.as_str().to_string()),
            )
        })
        .collect();
    r.reverse();
    r
}

pub fn finished_runs(e: &SimEnv) -> usize {
    runs(e).iter().filter(|r| r.3.is_some()).count()
}

/// Another writer (as a long import would be): holds the store's write lock until dropped.
/// The only place the tests use rusqlite directly: it plays a second process
/// (`tests/daemon_defects.rs`, `tests/faults.rs`).
pub struct WriteLock {
    conn: Option<rusqlite::Connection>,
    since: Instant,
}

impl WriteLock {
    pub fn take(store: &Path) -> WriteLock {
        let conn = rusqlite::Connection::open(store).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock {
            conn: Some(conn),
            since: Instant::now(),
        }
    }

    /// Releases the lock; returns how long it was held.
    pub fn release(mut self) -> Duration {
        self.end();
        self.since.elapsed()
    }

    fn end(&mut self) {
        if let Some(c) = self.conn.take() {
            c.execute_batch("ROLLBACK").unwrap();
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
}

/// MSPs `msp-a` and `msp-b`, each with `workspaces` workspaces `{msp}-ws{k}` (k from 1), both
/// standard modules enabled from October 2026; workspace k has k devices and `users_base + k`
/// users protected from 2026-10-02.
pub fn two_msps(workspaces: usize, users_base: usize) -> Inventory {
    let mut inv = Inventory::new();
    for msp in ["msp-a", "msp-b"] {
        inv.undated().channel(msp, &format!("{msp} IT"));
        for k in 1..=workspaces {
            let ws = format!("{msp}-ws{k}");
            inv.undated().workspace(&ws, msp, &format!("Customer {ws}"));
            inv.at(OCTOBER_2026);
            for m in STANDARD_MODULES {
                inv.module(&ws, m, true);
            }
            inv.at("2026-10-02T00:00:00Z")
                .protected(&ws, UnitKind::Devices, k)
                .protected(&ws, UnitKind::Users, users_base + k);
        }
    }
    inv
}

/// Runs `gradient-connector run` with `config` and waits for it to exit by itself (a refused
/// configuration); kills it after `limit` (it would serve for ever if it accepted).
pub fn run_expecting_exit(config: &Path, limit: Duration) -> Output {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(child, limit).0
}

/// Every daemon log of the test's directory (`daemon-*.log`), concatenated; at least one daemon
/// said it was ready.
pub fn daemon_logs_of(e: &SimEnv) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(e.env.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("daemon-") && name.ends_with(".log") {
            all += &std::fs::read_to_string(&p).unwrap();
        }
    }
    assert!(
        all.contains("daemon ready"),
        "a daemon log was found: {all}"
    );
    all
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
