//! A hostile Gradient (issue 14 part A): the real binary against gradient-sim's hostile behaviours
//! on 127.0.0.1. Malformed successes create nothing, account creations that may have landed are
//! never repeated blindly, answers are read under a cap, a run ends at its deadline, `pushed`
//! follows what the body says, and Gradient's text never reaches a terminal raw.

use std::time::{Duration, Instant};

use crate::common::*;
use gradient_connector::domain::PairOutcome;
use gradient_connector::sim::{Behaviour, Hostile, SimSnapshot};
use gradient_connector::store::ledger::{HistoryFilter, LedgerRow};

const CATALOGUE: &str = "/api/vendor-api";
const ACCOUNTS: &str = "/api/vendor-api/organization/accounts";

fn hostile(e: &SimEnv, method: &str, path: &str, count: u32, behaviour: Behaviour) {
    e.sim.add_hostile(Hostile {
        method: Some(method.into()),
        path: Some(path.into()),
        path_prefix: None,
        count,
        behaviour,
    });
}

fn body(status: u16, text: &str) -> Behaviour {
    Behaviour::Body {
        status,
        body: text.into(),
    }
}

/// The requests the stand-in received from `from` on.
fn since(snap: &SimSnapshot, from: usize) -> Vec<(String, String)> {
    snap.requests[from..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn ledger_of_run(e: &SimEnv, run: i64) -> Vec<LedgerRow> {
    e.store()
        .history(&HistoryFilter {
            connector: None,
            run: Some(run),
            changes: false,
            limit: u32::MAX,
        })
        .unwrap()
}

fn last_run(e: &SimEnv) -> RunRow {
    runs(e).pop().expect("a run")
}

/// Two MSPs, three workspaces each, connected (services and accounts created at the paste).
fn connected() -> SimEnv {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(3, 10));
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    e
}

#[test]
fn a_malformed_catalogue_creates_nothing_pushes_nothing_and_the_next_run_is_fine() {
    let e = connected();
    // An error body is that error (a 503: retried, max_attempts = 6, so it answers every
    // attempt); the others are not retried.
    let kinds = [
        (
            "an error body",
            6,
            r#"{"statusCode":503,"message":"Service Unavailable"}"#,
        ),
        ("empty data", 1, r#"{"data":{}}"#),
        (
            "skus with a null name",
            1,
            r#"{"status":200,"message":"ok","data":{"skus":[{"id":"5e1d0000000000000000aaaa","name":null},{"_id":"5e1d0000000000000000bbbb","name":null}]}}"#,
        ),
    ];
    for (kind, attempts, text) in kinds {
        let before = e.sim.snapshot().requests.len();
        hostile(&e, "GET", CATALOGUE, attempts, body(200, text));
        let out = e.run(&["sync"]);
        assert_eq!(code(&out), 1, "{kind}: {}{}", stdout(&out), stderr(&out));
        assert!(
            stderr(&out).contains("catalogue could not be read"),
            "{kind}: {}",
            stderr(&out)
        );
        let snap = e.sim.snapshot();
        assert_eq!(snap.services.len(), 2, "{kind}: no service created");
        let sent = since(&snap, before);
        assert!(
            sent.iter().all(|(m, _)| m == "GET"),
            "{kind}: nothing created or pushed: {sent:?}"
        );
        let run = last_run(&e);
        assert_eq!(run.4.as_deref(), Some("failed"), "{kind}");
        assert!(
            ledger_of_run(&e, run.0).is_empty(),
            "{kind}: no pair pushed"
        );
        // The next run is fine, with the same services.
        let out = e.run(&["sync"]);
        assert_eq!(code(&out), 0, "{kind}: {}{}", stdout(&out), stderr(&out));
        let snap = e.sim.snapshot();
        assert_eq!(snap.services.len(), 2, "{kind}");
        let run = last_run(&e);
        let rows = ledger_of_run(&e, run.0);
        assert_eq!(rows.len(), 12, "{kind}");
        assert!(rows.iter().all(|r| r.entry.outcome == PairOutcome::Pushed));
    }
}

#[test]
fn a_paste_creates_no_service_from_a_malformed_catalogue() {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(1, 10));
    hostile(&e, "GET", CATALOGUE, 1, body(200, r#"{"data":{}}"#));
    e.connect("msp-a", "key-a");
    let snap = e.sim.snapshot();
    assert!(snap.services.is_empty(), "{:?}", snap.services);
    assert!(
        !snap
            .requests
            .iter()
            .any(|r| r.method == "POST" && r.path == "/api/vendor-api/service"),
        "no service created from an empty-looking catalogue"
    );
    // The run reads the catalogue again and creates each service once.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(e.sim.snapshot().services.len(), 2);
}

#[test]
fn an_account_list_that_is_not_a_list_creates_no_account() {
    let e = connected();
    for text in [
        r#"{"status":200,"message":"ok","data":null}"#,
        r#"{"data":null}"#,
        "null",
    ] {
        let before = e.sim.snapshot().requests.len();
        // Both connectors' account reads get it.
        hostile(&e, "GET", ACCOUNTS, 2, body(200, text));
        let out = e.run(&["sync"]);
        assert_eq!(code(&out), 75, "{text}: {}{}", stdout(&out), stderr(&out));
        let snap = e.sim.snapshot();
        let posted: Vec<_> = since(&snap, before)
            .into_iter()
            .filter(|(m, p)| m == "POST" && p == ACCOUNTS)
            .collect();
        assert!(posted.is_empty(), "{text}: no account created: {posted:?}");
        for msp in ["msp-a", "msp-b"] {
            assert_eq!(snap.org(msp).unwrap().accounts.len(), 3, "{text}");
        }
        let run = last_run(&e);
        let rows = ledger_of_run(&e, run.0);
        assert_eq!(rows.len(), 12);
        assert!(
            rows.iter().all(|r| r.entry.outcome == PairOutcome::Failed),
            "{text}: every pair failed, none pushed"
        );
    }
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

/// msp-a connected before its workspaces exist (so the run, not the paste, creates its accounts).
fn accounts_to_create(gradient_extra: &str) -> SimEnv {
    let e = SimEnv::new(gradient_extra, "");
    e.connect("msp-a", "key-a");
    e.import_inventory(&two_msps(3, 10));
    assert!(e.sim.snapshot().org("msp-a").unwrap().accounts.is_empty());
    e
}

/// How many account creations carried each id.
fn creations_per_id(snap: &SimSnapshot) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in snap
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == ACCOUNTS)
    {
        for a in r.body.as_ref().and_then(|b| b.as_array()).unwrap() {
            *out.entry(a["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    out
}

fn assert_created_once(e: &SimEnv) {
    let snap = e.sim.snapshot();
    let per_id = creations_per_id(&snap);
    assert_eq!(per_id.len(), 3, "{per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "a creation that may have landed is never sent again: {per_id:?}"
    );
    let mut ids: Vec<&str> = snap
        .org("msp-a")
        .unwrap()
        .accounts
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["msp-a-ws1", "msp-a-ws2", "msp-a-ws3"]);
    // The accounts were read again and the pairs pushed.
    let run = last_run(e);
    let rows = ledger_of_run(e, run.0);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.entry.outcome == PairOutcome::Pushed));
}

#[test]
fn an_account_creation_that_lands_then_answers_503_is_not_repeated() {
    let e = accounts_to_create("");
    hostile(
        &e,
        "POST",
        ACCOUNTS,
        1,
        Behaviour::LandsThen {
            status: 503,
            body: r#"{"statusCode":503,"message":"Service Unavailable"}"#.into(),
        },
    );
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_created_once(&e);
}

#[test]
fn an_account_creation_that_lands_and_never_answers_is_not_repeated() {
    let e = accounts_to_create("request_timeout_secs = 2");
    hostile(&e, "POST", ACCOUNTS, 1, Behaviour::LandsThenSilent);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("may have reached Gradient"),
        "{}",
        stderr(&out)
    );
    assert_created_once(&e);
}

/// The peak resident memory of a live process, in KiB.
fn vm_hwm_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

#[test]
fn a_50_mb_answer_keeps_memory_bounded_and_is_a_clear_error() {
    let e = connected();
    hostile(
        &e,
        "GET",
        CATALOGUE,
        1,
        Behaviour::Huge {
            status: 200,
            bytes: 50_000_000,
        },
    );
    let d = Daemon::start(&e, &[]);
    d.signal("USR1");
    wait_for(
        "the run against the huge answer",
        || finished_runs(&e) >= 1,
        || d.log(),
    );
    let peak_kib = vm_hwm_kib(&d.pid());
    let log = d.log();
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert!(
        peak_kib < 100 * 1024,
        "the daemon's peak RSS was {peak_kib} KiB reading a 50 MB answer"
    );
    assert!(
        log.contains("larger than allowed") && log.contains("larger than 4096 KiB"),
        "{log}"
    );
    let run = last_run(&e);
    assert_eq!(run.4.as_deref(), Some("failed"));
    assert_eq!(e.sim.snapshot().services.len(), 2);
}

#[test]
fn against_a_silent_gradient_the_run_ends_at_its_deadline_with_every_pair_failed() {
    let e = SimEnv::new("run_deadline_secs = 2", "");
    e.import_inventory(&two_msps(3, 10));
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    e.sim.add_hostile(Hostile {
        method: None,
        path: None,
        path_prefix: None,
        count: u32::MAX,
        behaviour: Behaviour::Silent,
    });
    let t = Instant::now();
    let out = e.run(&["sync"]);
    let took = t.elapsed();
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    // The request timeout is 30 s: only the deadline can end the run this early.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
    let run = last_run(&e);
    assert_eq!(run.4.as_deref(), Some("failed"));
    let rows = ledger_of_run(&e, run.0);
    assert_eq!(rows.len(), 12, "every planned pair has a row");
    for r in &rows {
        assert_eq!(r.entry.outcome, PairOutcome::Failed, "{r:?}");
        assert!(
            r.entry.reason.as_deref().unwrap_or("").contains("deadline"),
            "{r:?}"
        );
    }
    // Gradient got the catalogue read, which it never answered.
    assert!(!e.sim.snapshot().requests.is_empty());
}

#[test]
fn pushed_means_2xx_and_a_body_that_does_not_say_otherwise() {
    let e = connected();
    // A 201 whose body is an error object: not pushed.
    e.sim.add_hostile(Hostile {
        method: Some("POST".into()),
        path: None,
        path_prefix: Some("/api/vendor-api/service/".into()),
        count: 1000,
        behaviour: body(
            201,
            r#"{"statusCode":400,"message":"unitCount must be a number"}"#,
        ),
    });
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    let run = last_run(&e);
    let rows = ledger_of_run(&e, run.0);
    assert_eq!(rows.len(), 12);
    for r in &rows {
        assert_eq!(r.entry.outcome, PairOutcome::Failed, "{r:?}");
        assert_eq!(r.entry.http_status, Some(400), "{r:?}");
    }
    let status = e.status_json();
    assert!(connector_in(&status, "msp-a")["last_known"]
        .as_array()
        .unwrap()
        .is_empty());

    // A 201 whose body cannot be read: the count was set, so pushed (with a warning).
    let e = connected();
    e.sim.add_hostile(Hostile {
        method: Some("POST".into()),
        path: None,
        path_prefix: Some("/api/vendor-api/service/".into()),
        count: 1000,
        behaviour: Behaviour::LandsThen {
            status: 201,
            body: "<html>Created</html".into(),
        },
    });
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("recorded as pushed"),
        "{}",
        stderr(&out)
    );
    let run = last_run(&e);
    let rows = ledger_of_run(&e, run.0);
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.entry.outcome == PairOutcome::Pushed));
    let snap = e.sim.snapshot();
    let edr = snap.service_id("Endpoint Security").unwrap();
    assert_eq!(
        snap.org("msp-a").unwrap().count("msp-a-ws2", edr),
        Some(2.0)
    );
}

#[test]
fn escape_sequences_from_gradient_never_reach_a_terminal_raw() {
    let e = connected();
    let forged = "\u{1b}[2J\u{1b}[1;1H\nrun 999 (schedule, daily 2026-11-30) ok: 99 pushed\r\u{7}";
    let text = serde_json::json!({"statusCode": 400, "message": forged}).to_string();
    e.sim.add_hostile(Hostile {
        method: Some("POST".into()),
        path: None,
        path_prefix: Some("/api/vendor-api/service/".into()),
        count: 1000,
        behaviour: body(400, &text),
    });
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    let clean = |what: &str, s: &str| {
        assert!(
            !s.contains('\u{1b}') && !s.contains('\r') && !s.contains('\u{7}'),
            "{what} holds a raw control character: {s:?}"
        );
        assert!(
            !s.lines().any(|l| l.trim_start().starts_with("run 999")),
            "{what} shows a forged line: {s}"
        );
    };
    clean("sync stdout", &stdout(&out));
    clean("sync stderr", &stderr(&out));
    assert!(
        stdout(&out).contains("\\u{1b}[2J"),
        "the text is shown, escaped: {}",
        stdout(&out)
    );
    for args in [vec!["status"], vec!["history"]] {
        let o = e.run(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        clean(&format!("{args:?} stdout"), &stdout(&o));
        clean(&format!("{args:?} stderr"), &stderr(&o));
    }
    // The same text in a catalogue answer fails the run: its message (output, log, status).
    hostile(&e, "GET", CATALOGUE, 1, body(200, &text));
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    clean("failed sync stdout", &stdout(&out));
    clean("failed sync stderr", &stderr(&out));
    let o = e.run(&["status"]);
    clean("status after the failed run", &stdout(&o));
    assert!(stdout(&o).contains("\\u{1b}[2J"), "{}", stdout(&o));
    // JSON keeps Gradient's text exactly.
    let o = e.run(&["history", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v.to_string();
    assert!(
        text.contains(&serde_json::to_string(forged).unwrap()[1..20]),
        "{text}"
    );
}
