//! Regression tests for defects found in the daemon and the sync path: each runs the real binary
//! against the in-process stand-in (or a silent listener) on 127.0.0.1 and asserts on what Gradient
//! received, what the store holds, exit codes, elapsed time and log text.
//!
//! 1. a busy store (another writer) during a sync must not lose ledger rows;
//! 2. SIGTERM while another writer holds the store stops the daemon within 10 s (also before ready);
//! 3. the watchdog keeps its interval while signals arrive every 300 ms;
//! 4. a schedule slot that finds the run lock held by a CLI `sync` still runs once it is free;
//! 5. a CLI `sync` against a Gradient that never answers stops within 10 s of SIGTERM.

use crate::common::*;

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gradient_connector::domain::PairOutcome;
use gradient_connector::store::ledger::{HistoryFilter, RunLock, RunRow};
use gradient_connector::store::Store;
use gradient_connector_kit::{Inventory, Units};

// ---------------------------------------------------------------------------------------------
// helpers

/// A small inventory: one MSP, one workspace, both modules, one device and one user.
fn small_inventory() -> Inventory {
    Inventory::small()
}

/// `msps` MSPs × `per` workspaces, both modules enabled (2 pairs per workspace).
fn inventory(msps: usize, per: usize) -> Inventory {
    Inventory::msps(msps, per, |k| Units {
        devices: k % 3 + 1,
        users: k % 2 + 1,
    })
}

/// Sends `sig` (e.g. "TERM") to `pid` with kill(1).
fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -s {sig} {pid}");
}

/// Waits up to `limit` for `child` to exit; None when it is still running.
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child that overstayed (SIGKILL) and reaps it.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The binary with `--config config args`, stdin closed, stdout and stderr to `log`.
fn spawn_logged(config: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("RUST_LOG")
        .env_remove("GRADIENT_CONNECTOR_CONFIG")
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd.spawn().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every run, oldest first, read through the store's own API.
fn store_runs(e: &SimEnv) -> Vec<RunRow> {
    let s = Store::open(&e.env.store_path(), Duration::from_secs(5)).unwrap();
    let mut r = s.runs(10_000).unwrap();
    r.reverse();
    r
}

// ---------------------------------------------------------------------------------------------
// 1. a busy store must not lose ledger rows

#[test]
fn an_import_held_open_during_a_sync_loses_no_ledger_row() {
    // 2 MSPs × 200 workspaces × 2 services = 800 pairs; paced so that the sync lasts several
    // seconds, while another writer holds the store for 5 s (longer than the 2 s busy timeout).
    let e = SimEnv::with_config(|c| {
        c.set("gradient", "requests_per_second", 100)
            .set("gradient", "max_in_flight", 8)
            .set("store", "busy_timeout_secs", 2)
    });
    e.import_inventory(&inventory(2, 200));
    for m in 0..2 {
        e.connect(&format!("msp-{m}"), &format!("key-{m}"));
    }
    e.sim.set_count_latency(Duration::from_millis(30));
    let pushes_before = e.sim.snapshot().pushes.len();
    assert_eq!(pushes_before, 0, "connecting pushes no count");

    let started = Instant::now();
    let (out, held, pushed_at_take, pushed_at_release) = std::thread::scope(|s| {
        let sync = s.spawn(|| e.run(&["sync"]));
        wait_for_secs(
            "the sync pushing",
            20,
            || e.sim.snapshot().pushes.len() >= 100,
            String::new,
        );
        let lock = WriteLock::take(&e.env.store_path());
        let at_take = e.sim.snapshot().pushes.len();
        std::thread::sleep(Duration::from_secs(5));
        let at_release = e.sim.snapshot().pushes.len();
        let held = lock.release();
        (sync.join().unwrap(), held, at_take, at_release)
    });
    let took = started.elapsed();
    let log = stderr(&out);
    // The situation the test is about really happened: the writer met a busy store mid-run.
    assert!(held >= Duration::from_secs(5), "the lock was held {held:?}");
    assert!(
        pushed_at_release > pushed_at_take,
        "the sync kept pushing while the store was locked ({pushed_at_take} → {pushed_at_release})"
    );

    let snap = e.sim.snapshot();
    let received = snap.pushes.iter().filter(|p| p.status == 201).count();
    let st = e.status_json();
    let last = &st["last_run"];
    let run_id = last["id"].as_i64().unwrap();
    let run_pushed = last["counts"]["pushed"].as_u64().unwrap();

    let store = Store::open(&e.env.store_path(), Duration::from_secs(5)).unwrap();
    let rows = store
        .history(&HistoryFilter {
            run: Some(run_id),
            limit: 100_000,
            ..HistoryFilter::default()
        })
        .unwrap();
    let ledger_pushed = rows
        .iter()
        .filter(|r| r.entry.outcome == PairOutcome::Pushed)
        .count();
    let run_row = store.run(run_id).unwrap().unwrap();
    eprintln!(
        "sync took {took:?}; stand-in accepted {received}; ledger pushed {ledger_pushed}; run pushed {run_pushed}"
    );
    assert_eq!(received, 800, "every pair reached the stand-in once");
    assert_eq!(
        ledger_pushed,
        received,
        "each accepted push has its ledger row (lost {})",
        received as i64 - ledger_pushed as i64
    );
    assert_eq!(run_pushed as usize, ledger_pushed, "status last_run counts");
    assert_eq!(run_row.tally.pushed as usize, ledger_pushed, "runs row");
    assert_eq!(code(&out), 0, "{}{log}", stdout(&out));
    assert_eq!(last["outcome"], "ok", "{last}");
    // The ledger writer did meet the busy store (and waited it out).
    assert!(
        log.contains("the store is busy"),
        "the ledger writer never met the busy store:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. SIGTERM while another writer holds the store

#[test]
fn sigterm_with_the_store_locked_by_another_writer_exits_within_ten_seconds() {
    // Default busy timeout (30 s): a store call waits far longer than the contract's 10 s.
    let e = SimEnv::new("", "");
    e.import_inventory(&small_inventory());
    e.connect("msp-a", "key-a");

    // (b) Start while the lock is held (a fresh store: the start-up writes the schedule anchor),
    // SIGTERM before it may have said ready.
    let lock = WriteLock::take(&e.env.store_path());
    let log_b = e.env.path("daemon-before-ready.log");
    let mut child = spawn_logged(&e.env.config, &["run"], &[], &log_b);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited on its own: {}",
        read(&log_b)
    );
    let ready_before_term = read(&log_b).contains("daemon ready");
    let t = Instant::now();
    send_signal(child.id(), "TERM");
    let status = wait_child(&mut child, Duration::from_secs(15));
    let took_b = t.elapsed();
    if status.is_none() {
        kill_child(&mut child);
    }
    drop(lock);
    let status = status.unwrap_or_else(|| {
        panic!(
            "SIGTERM before ready: still running 15 s later\n{}",
            read(&log_b)
        )
    });
    eprintln!("before ready (ready said: {ready_before_term}): stopped in {took_b:?}, {status:?}");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", read(&log_b));
    assert!(
        took_b < Duration::from_secs(10),
        "SIGTERM before ready took {took_b:?}\n{}",
        read(&log_b)
    );

    // (a) A ready daemon; another writer takes the lock; SIGUSR1 asks for a run that must write
    // (it opens its runs row); then SIGTERM.
    let d = Daemon::start(&e, &[]);
    let lock = WriteLock::take(&e.env.store_path());
    d.signal("USR1");
    d.wait_log("SIGUSR1: sync requested");
    // Let the run reach the store and wait in SQLite's busy handler.
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    d.signal("TERM");
    let mut d = d;
    let status = wait_child(&mut d.child, Duration::from_secs(15));
    let took_a = t.elapsed();
    let log_a = d.log();
    drop(d); // kills it if still running
    drop(lock);
    let status = status.unwrap_or_else(|| {
        panic!("SIGTERM with a locked store: still running 15 s later\n{log_a}")
    });
    eprintln!("ready daemon, run waiting on the store: stopped in {took_a:?}, {status:?}");
    assert_eq!(status.code(), Some(0), "{status:?}\n{log_a}");
    assert!(
        took_a < Duration::from_secs(10),
        "SIGTERM with the store locked took {took_a:?}\n{log_a}"
    );
    // Nothing is left looking like it still runs.
    assert!(
        store_runs(&e).iter().all(|r| r.finished_at.is_some()),
        "{:?}",
        store_runs(&e)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. the watchdog under a signal storm

#[test]
fn the_watchdog_keeps_its_interval_under_a_signal_every_second() {
    let e = SimEnv::new("", "");
    e.import_inventory(&small_inventory());
    e.connect("msp-a", "key-a");
    let sock_path = e.env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut pings = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == "WATCHDOG=1") {
                        pings.push(Instant::now());
                    }
                }
            }
            pings
        })
    };
    let d = Daemon::start(
        &e,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let window_start = Instant::now();
    let mut sent = 0;
    while window_start.elapsed() < Duration::from_secs(8) {
        d.signal(if sent % 2 == 0 { "HUP" } else { "USR1" });
        sent += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let window_end = Instant::now();
    let log = d.log();
    let (code, _) = d.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pings = receiver.join().unwrap();
    let inside: Vec<Instant> = pings
        .iter()
        .copied()
        .filter(|t| *t >= window_start && *t <= window_end)
        .collect();
    let gaps: Vec<Duration> = inside.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "{sent} signals; {} pings in the window; gaps {gaps:?}",
        inside.len()
    );
    assert!(
        log.contains("configuration reloaded") && log.contains("SIGUSR1: sync requested"),
        "the signals were handled:\n{log}"
    );
    assert!(
        inside.len() >= 6,
        "only {} watchdog pings in 8 s of signals (interval 1 s)\n{log}",
        inside.len()
    );
    let worst = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        worst <= Duration::from_secs(2),
        "a {worst:?} gap between watchdog pings (WATCHDOG_USEC = 2 s): systemd would kill the daemon"
    );
    assert_eq!(code, 0);
}

// ---------------------------------------------------------------------------------------------
// 4. a slot that finds the run lock held runs once it is free

#[test]
fn a_scheduled_slot_during_a_cli_sync_still_runs() {
    let e = SimEnv::with_config(|c| {
        c.set("schedule", "cron", "*/5 * * * * *")
            .set("schedule", "catch_up", false)
    });
    e.import_inventory(&small_inventory());
    e.connect("msp-a", "key-a");
    let d = Daemon::start(&e, &[]);
    // Align with the schedule: the first scheduled run (slot S0) has finished and let go of the
    // run lock.
    wait_for_secs(
        "a first scheduled run",
        12,
        || {
            store_runs(&e)
                .iter()
                .any(|r| r.trigger == "schedule" && r.finished_at.is_some())
        },
        || d.log(),
    );
    wait_for_secs(
        "the run lock free",
        5,
        || !RunLock::is_held(&e.env.store_path()),
        || d.log(),
    );
    let s0 = store_runs(&e)
        .iter()
        .rev()
        .find(|r| r.trigger == "schedule")
        .and_then(|r| r.slot_at)
        .expect("a scheduled run carries its slot");
    let s1 = s0 + 5_000;

    // A CLI sync that holds the run lock across S1: every request answers after 2.5 s (the
    // catalogue with the set-ups, the first push, the rebuilding push ≈ 7.5 s from about S0 + 0.2 s).
    e.sim.set_latency(Duration::from_millis(2500));
    // Another process holding the lock: a sync whose configuration does not reach the daemon's
    // control API (a CLI that finds the daemon's socket goes through the daemon instead).
    let standalone = e.env.write_config_as(
        "standalone.toml",
        &e.env.config_builder().set("api", "listen", ""),
    );
    let out = std::thread::scope(|s| {
        let cli = s.spawn(|| run_bin(&standalone, &["sync"], None));
        d.wait_log("another sync holds the run lock: this run starts as soon as it is free");
        // The daemon met the held lock; from now on Gradient is fast again (the CLI's request in
        // flight keeps its delay), so the slot's own run is quick.
        e.sim.set_latency(Duration::ZERO);
        cli.join().unwrap()
    });
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let runs = store_runs(&e);
    let cli = runs
        .iter()
        .find(|r| r.trigger == "cli")
        .expect("the CLI run is recorded")
        .clone();
    let cli_end = cli.finished_at.unwrap();
    assert!(
        cli.started_at < s1 && cli_end > s1,
        "the CLI sync must hold the lock across slot {s1}: {cli:?}"
    );

    wait_for_secs(
        "the run for the slot the CLI sync held",
        15,
        || {
            store_runs(&e).iter().any(|r| {
                r.trigger == "schedule" && r.slot_at == Some(s1) && r.finished_at.is_some()
            })
        },
        || format!("{:?}\n{}", store_runs(&e), d.log()),
    );
    let log = d.log();
    let runs = store_runs(&e);
    let slot_run = runs
        .iter()
        .find(|r| r.trigger == "schedule" && r.slot_at == Some(s1))
        .unwrap();
    assert!(
        slot_run.started_at >= cli_end,
        "the slot's run started after the CLI sync let go: {slot_run:?} vs {cli:?}"
    );
    assert!(
        slot_run.started_at < s1 + 5_000,
        "the slot ran before the next slot, not coalesced into it: {slot_run:?}"
    );
    assert_eq!(
        slot_run.outcome.map(|o| o.as_str().to_string()).as_deref(),
        Some("ok"),
        "{slot_run:?}"
    );
    // The log shows the held lock, then the slot's run starting.
    let held_at = log
        .find("another sync holds the run lock")
        .expect("held-lock line");
    let needle = format!("run_id={}", slot_run.id);
    let started_line = log[held_at..]
        .lines()
        .find(|l| l.contains("sync run started") && l.contains(&needle))
        .unwrap_or_else(|| {
            panic!(
                "no start line for run {} after the held lock:\n{log}",
                slot_run.id
            )
        });
    assert!(started_line.contains("schedule"), "{started_line}");
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. a CLI sync against a silent Gradient stops within 10 s of SIGTERM

#[test]
fn sync_stops_within_ten_seconds_of_sigterm_against_a_silent_gradient() {
    // The token is stored against the real stand-in with the test config...
    let e = SimEnv::with_config(|c| {
        c.set("gradient", "request_timeout_secs", 30)
            .set("gradient", "max_attempts", 6)
    });
    e.import_inventory(&small_inventory());
    e.connect("msp-a", "key-a");

    // ...then a second config (same directory, same store) points at a Gradient that accepts
    // connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in silent.incoming() {
                let Ok(s) = s else { break };
                held.push(s);
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let silent_cfg = e
        .env
        .write_config_as("silent.toml", &e.env.config_builder().base_url(&silent_url));

    let log = e.env.path("silent-sync.log");
    let mut child = spawn_logged(&silent_cfg, &["sync"], &[], &log);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sync ended before SIGTERM:\n{}",
        read(&log)
    );
    assert!(
        accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the sync never reached the silent Gradient:\n{}",
        read(&log)
    );
    let t = Instant::now();
    send_signal(child.id(), "TERM");
    let status = wait_child(&mut child, Duration::from_secs(12));
    let took = t.elapsed();
    if status.is_none() {
        kill_child(&mut child);
    }
    let text = read(&log);
    let status = status
        .unwrap_or_else(|| panic!("`sync` was still running 12 s after SIGTERM (killed):\n{text}"));
    eprintln!("sync stopped {took:?} after SIGTERM with {status:?}");
    assert!(
        status.signal().is_none(),
        "killed by a signal: {status:?}\n{text}"
    );
    assert!(
        matches!(status.code(), Some(75) | Some(1)),
        "exit code {status:?}\n{text}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}\n{text}");
    let st = e.status_json();
    let last = &st["last_run"];
    assert!(
        !last.is_null() && !last["finished_at"].is_null(),
        "the run is recorded as finished: {last}"
    );
    eprintln!("the run was recorded {}", last["outcome"]);
}
