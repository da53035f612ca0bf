//! `gradient-connector run` as production runs it: signals, schedule, reload, shutdown, catch-up,
//! systemd notification. The real binary against the in-process stand-in.

use crate::common::*;

use gradient_connector::domain::UnitKind;
use gradient_connector_kit::{ConfigBuilder, Inventory, Service, OCTOBER_2026};

use std::time::Duration;

fn setup(schedule: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> SimEnv {
    let e = SimEnv::with_config(schedule);
    e.import_inventory(&Inventory::small());
    e.connect("msp-a", "key-a");
    e
}

#[test]
fn sigusr1_syncs_and_two_quick_signals_never_overlap() {
    let e = setup(|c| c);
    let d = Daemon::start(&e, &[]);
    d.signal("USR1");
    wait_for("first run", || finished_runs(&e) == 1, || d.log());
    assert_eq!(e.sim.snapshot().org("msp-a").unwrap().counts.len(), 2);
    // The run's summary line is written just after the run is closed in the store.
    wait_for(
        "the first run's summary",
        || d.log().contains("run 1 (signal, daily"),
        || d.log(),
    );

    // Slow the stand-in so that the second signal arrives while a run is active.
    e.sim.set_latency(Duration::from_millis(200));
    d.signal("USR1");
    d.signal("USR1");
    d.signal("USR1");
    wait_for(
        "queued runs",
        || {
            let r = runs(&e);
            r.len() >= 2 && r.iter().all(|x| x.3.is_some())
        },
        || d.log(),
    );
    // Let a possible extra queued run show itself before counting.
    std::thread::sleep(Duration::from_millis(300));
    wait_for(
        "all runs finished",
        || runs(&e).iter().all(|x| x.3.is_some()),
        || d.log(),
    );
    let r = runs(&e);
    assert!(r.len() <= 3, "1 + at most 2 for the burst: {r:?}");
    for w in r.windows(2) {
        assert!(w[1].2 >= w[0].3.unwrap(), "runs overlapped: {r:?}");
    }
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn per_second_schedule_fires() {
    let e = setup(|c| c.set("schedule", "cron", "*/2 * * * * *"));
    let d = Daemon::start(&e, &[]);
    wait_for(
        "two scheduled runs",
        || {
            runs(&e)
                .iter()
                .filter(|r| r.1 == "schedule" && r.3.is_some())
                .count()
                >= 2
        },
        || d.log(),
    );
    assert!(d.log().contains("next scheduled run"));
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_adds_a_service() {
    let e = setup(|c| c);
    let d = Daemon::start(&e, &[]);
    e.env
        .write_config(&e.env.config_builder().set("schedule", "cron", "not a cron"));
    d.signal("HUP");
    d.wait_log("keeping the old one");
    assert!(d.log().contains("schedule.cron"), "{}", d.log());
    d.signal("USR1");
    wait_for(
        "run after bad reload",
        || finished_runs(&e) == 1,
        || d.log(),
    );
    assert_eq!(e.sim.snapshot().services.len(), 2);

    e.env
        .write_config(&e.env.config_builder().service(Service::new(
            "backup",
            "Cloud Backup",
            UnitKind::Devices,
            "backup",
            "cloud backup",
        )));
    e.import_inventory(
        Inventory::new()
            .at(OCTOBER_2026)
            .module("ws-1", "backup", true),
    );
    d.signal("HUP");
    d.wait_log("configuration reloaded");
    d.signal("USR1");
    wait_for(
        "run after good reload",
        || finished_runs(&e) == 2,
        || d.log(),
    );
    let snap = e.sim.snapshot();
    let backup = snap
        .service_id("Cloud Backup")
        .expect("new service created");
    assert_eq!(snap.org("msp-a").unwrap().count("ws-1", backup), Some(1.0));
    // The reload swapped the configuration, not the store handle: still one writer thread.
    assert_eq!(
        threads_named(&d.pid(), "store-writer"),
        1,
        "a reload started a second store writer"
    );
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

/// How many of a process's threads carry `name`.
fn threads_named(pid: &str, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

#[test]
fn sigterm_during_a_slow_run_exits_0_within_10_s_and_records_interrupted() {
    let e = setup(|c| c);
    // Many pairs and a slow stand-in: the run cannot finish quickly.
    let mut inv = Inventory::new();
    for k in 0..40 {
        let ws = format!("w{k}");
        inv.undated()
            .workspace(&ws, "msp-a", &format!("W{k}"))
            .at(OCTOBER_2026)
            .module(&ws, "email_security", true);
    }
    e.import_inventory(&inv);
    let d = Daemon::start(&e, &[]);
    e.sim.set_latency(Duration::from_millis(1500));
    d.signal("USR1");
    wait_for("run started", || !runs(&e).is_empty(), || d.log());
    wait_for(
        "pushing",
        || e.sim.snapshot().requests.len() > 8,
        || d.log(),
    );
    let (code, took) = d.stop();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let r = runs(&e);
    assert_eq!(r.last().unwrap().4.as_deref(), Some("interrupted"), "{r:?}");
}

#[test]
fn kill_9_then_restart_catches_up_the_interrupted_run_once() {
    let e = setup(|c| c.set("schedule", "catch_up", true));
    let d = Daemon::start(&e, &[]);
    e.sim.set_latency(Duration::from_millis(300));
    d.signal("USR1");
    wait_for(
        "run started",
        || !runs(&e).is_empty() && e.sim.snapshot().requests.len() > 4,
        || d.log(),
    );
    d.kill9();
    assert_eq!(runs(&e).last().unwrap().3, None, "killed mid-run");
    e.sim.set_latency(Duration::ZERO);

    let d = Daemon::start(&e, &[]);
    wait_for(
        "catch-up run",
        || runs(&e).iter().any(|r| r.1 == "catch_up" && r.3.is_some()),
        || d.log(),
    );
    let r = runs(&e);
    assert_eq!(r[0].4.as_deref(), Some("interrupted"), "{r:?}");
    assert_eq!(r.iter().filter(|x| x.1 == "catch_up").count(), 1);
    assert_eq!(e.sim.snapshot().org("msp-a").unwrap().counts.len(), 2);
    d.kill9();

    // A restart with nothing missed and nothing interrupted runs nothing.
    let d = Daemon::start(&e, &[]);
    assert!(d.log().contains("catch-up: nothing missed"), "{}", d.log());
    assert_eq!(runs(&e).iter().filter(|x| x.1 == "catch_up").count(), 1);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_slot_missed_while_down_runs_once_at_start() {
    let e = setup(|c| {
        c.set("schedule", "cron", "0 0 2 * * *")
            .set("schedule", "catch_up", true)
    });
    let d = Daemon::start(&e, &[]);
    assert_eq!(runs(&e).len(), 0, "a fresh store owes nothing");
    d.kill9();
    // Pretend the daemon was down for two days: its last slot is long past.
    let three_days_ago = gradient_connector::time::now_ms() - 3 * 86_400_000;
    let store = e.store();
    assert!(
        store.last_slot().unwrap().is_some(),
        "the fresh store was anchored"
    );
    store
        .state_set("last_slot", &three_days_ago.to_string())
        .unwrap();
    assert_eq!(store.last_slot().unwrap(), Some(three_days_ago));
    drop(store);
    let d = Daemon::start(&e, &[]);
    wait_for(
        "catch-up",
        || runs(&e).iter().any(|r| r.1 == "catch_up" && r.3.is_some()),
        || d.log(),
    );
    d.kill9();
    let d = Daemon::start(&e, &[]);
    assert!(d.log().contains("catch-up: nothing missed"), "{}", d.log());
    assert_eq!(
        runs(&e).len(),
        1,
        "the missed slot runs once, not on every start"
    );
    d.stop();
}

#[test]
fn ready_is_sent_to_notify_socket() {
    let e = setup(|c| c);
    let sock_path = e.env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::start(
        &e,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("READY=1") {
        let n = sock.recv(&mut buf).expect("a notification");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push('\n');
    }
    while !got.contains("WATCHDOG=1") {
        let n = sock
            .recv(&mut buf)
            .expect("a watchdog ping at half of WATCHDOG_USEC");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    d.signal("HUP");
    while !got.contains("RELOADING=1") {
        let n = sock.recv(&mut buf).unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    while let Ok(n) = sock.recv(&mut buf) {
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        if got.contains("STOPPING=1") {
            break;
        }
    }
    assert!(got.contains("STATUS="), "{got}");
    assert!(got.contains("STOPPING=1"), "{got}");
}
