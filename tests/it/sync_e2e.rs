//! The sync run end to end: the real binary against the gradient-sim stand-in on 127.0.0.1.

use crate::common::*;
use gradient_connector_kit::Inventory;
use serde_json::Value;

fn setup() -> SimEnv {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(3, 10));
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    e
}

fn expect_counts(e: &SimEnv, msp: &str) {
    let snap = e.sim.snapshot();
    let edr = snap.service_id("Endpoint Security").unwrap().to_string();
    let mail = snap.service_id("Email Security").unwrap().to_string();
    let org = snap.org(msp).unwrap();
    for k in 1..=3u32 {
        let ws = format!("{msp}-ws{k}");
        assert_eq!(org.count(&ws, &edr), Some(k as f64), "{ws} devices");
        assert_eq!(org.count(&ws, &mail), Some(10.0 + k as f64), "{ws} users");
    }
}

#[test]
fn first_sync_pushes_exact_counts_and_the_second_creates_nothing() {
    let e = setup();
    // connector add verified the token, set pending and created the accounts.
    let snap = e.sim.snapshot();
    for msp in ["msp-a", "msp-b"] {
        let org = snap.org(msp).unwrap();
        assert_eq!(org.status_history, vec!["pending"]);
        assert_eq!(org.accounts.len(), 3);
    }
    let before = snap.requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    expect_counts(&e, "msp-a");
    expect_counts(&e, "msp-b");
    let snap = e.sim.snapshot();
    assert_eq!(snap.services.len(), 2, "each service created once");
    // Requests of the first run: 1 catalogue read (the services were created when the first MSP
    // connected), then per connector one integration read (its status now), one accounts read,
    // 6 pushes and — its first accepted counts — the status set `active` by us.
    let run1 = &snap.requests[before..];
    assert_eq!(run1.len(), 1 + 2 * (2 + 6 + 1), "{run1:#?}");
    for msp in ["msp-a", "msp-b"] {
        let org = snap.org(msp).unwrap();
        assert_eq!(org.status, "active");
        assert_eq!(org.status_history, vec!["pending", "active"]);
        // We sent it, after a count Gradient accepted.
        let ours: Vec<usize> = run1
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.org_id.as_deref() == Some(msp)
                    && r.method == "PATCH"
                    && r.path.ends_with("/organization/status/active")
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ours.len(), 1, "one activation by us: {run1:#?}");
        let first_count = run1
            .iter()
            .position(|r| {
                r.org_id.as_deref() == Some(msp) && r.path.ends_with("/count") && r.status == 201
            })
            .unwrap();
        assert!(first_count < ours[0], "active only after an accepted count");
        assert_eq!(org.rebuilds, 1, "one rebuild per connector per run");
        let pushes: Vec<_> = snap
            .pushes
            .iter()
            .filter(|p| p.org_id.as_deref() == Some(msp))
            .collect();
        assert_eq!(pushes.len(), 6);
        assert_eq!(pushes.iter().filter(|p| !p.no_build).count(), 1);
        assert!(
            !pushes.last().unwrap().no_build,
            "the last push of the connector rebuilds"
        );
        for p in pushes {
            assert!(
                p.unit_count.is_u64(),
                "unitCount must be a JSON number: {:?}",
                p.unit_count
            );
            assert!(p.account_id.is_string(), "accountId must be a JSON string");
        }
    }

    let before = snap.requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = e.sim.snapshot();
    assert_eq!(snap.services.len(), 2);
    // Gradient shows the integrations active now: the second run sends no status.
    let run2 = &snap.requests[before..];
    assert_eq!(run2.len(), 1 + 2 * (2 + 6), "{run2:#?}");
    assert!(
        run2.iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/count")),
        "no creation: {run2:#?}"
    );
    for msp in ["msp-a", "msp-b"] {
        assert_eq!(snap.org(msp).unwrap().accounts.len(), 3);
    }

    let st = e.status_json();
    let last = &st["last_run"];
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["counts"]["pushed"], 12);
    let a = connector_in(&st, "msp-a");
    assert_eq!(a["state"], "connected");
    assert_eq!(a["last_known"].as_array().unwrap().len(), 6);
    let hist = e.run(&["history", "--connector", "msp-a", "--json"]);
    let rows: Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 12);
    let changes = e.run(&["history", "--changes", "--json"]);
    let rows: Value = serde_json::from_slice(&changes.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        12,
        "second run changed nothing: only first pushes count"
    );
}

#[test]
fn partial_mapping_exits_0_and_lists_unmapped_pairs() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    let snap = e.sim.snapshot();
    let edr = snap.service_id("Endpoint Security").unwrap().to_string();
    e.sim.set_mapping(
        "msp-a",
        gradient_connector::sim::Mapping::Explicit {
            accounts: vec!["msp-a-ws1".into(), "msp-a-ws2".into()],
            service_ids: vec![edr],
        },
    );
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("unmapped: msp-a-ws3 / email_security"),
        "{}",
        stdout(&out)
    );
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    let unmapped: Vec<String> = a["unmapped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["account"].as_str().unwrap(),
                p["service"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(unmapped.len(), 4, "{unmapped:?}");
    assert!(unmapped.contains(&"msp-a-ws3/endpoint_security".to_string()));
    assert_eq!(st["last_run"]["outcome"], "ok");
    assert_eq!(st["last_run"]["counts"]["unmapped"], 4);
    // The last push of msp-a was unmapped, so a successful pair was re-pushed to rebuild.
    assert_eq!(e.sim.snapshot().org("msp-a").unwrap().rebuilds, 2);
}

#[test]
fn a_disabled_module_is_never_pushed_as_zero_and_keeps_its_last_known_value() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    e.import_inventory(Inventory::new().module("msp-a-ws2", "endpoint_security", false));
    let snap = e.sim.snapshot();
    let pushes_before = snap.pushes.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = e.sim.snapshot();
    let edr = snap.service_id("Endpoint Security").unwrap().to_string();
    let new: Vec<_> = snap.pushes[pushes_before..].iter().collect();
    assert_eq!(new.len(), 11);
    assert!(
        !new.iter()
            .any(|p| p.account_id == "msp-a-ws2" && p.service_id == edr),
        "disabled pair was pushed"
    );
    assert!(new.iter().all(|p| p.unit_count.as_u64() != Some(0)));
    assert_eq!(
        snap.org("msp-a").unwrap().count("msp-a-ws2", &edr),
        Some(2.0),
        "Gradient keeps the last value"
    );
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    let lk = a["last_known"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["account"] == "msp-a-ws2" && l["service"] == "endpoint_security")
        .unwrap()
        .clone();
    assert_eq!(lk["unit_count"], 2);
    assert_eq!(a["disabled"][0]["account"], "msp-a-ws2");
    assert_eq!(a["disabled"][0]["unit_count"], 2);
    assert_eq!(st["last_run"]["counts"]["skipped_disabled"], 1);
    assert_eq!(st["last_run"]["outcome"], "ok");
}

#[test]
fn key_rotation_rejects_one_msp_and_a_new_token_heals_it() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    e.sim.rotate_key("msp-a", "key-a2");
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("connector add msp-a"),
        "{}",
        stdout(&out)
    );
    let snap = e.sim.snapshot();
    let run = &snap.requests[before..];
    // The set-up's three concurrent requests (catalogue, integration, accounts) may all be on the
    // wire when the first 401 comes back; nothing is sent with the token after it.
    assert!(
        run.iter().filter(|r| r.status == 401).count() <= 3,
        "{run:#?}"
    );
    assert_eq!(
        run.iter()
            .filter(|r| r.org_id.as_deref() == Some("msp-b") && r.path.ends_with("/count"))
            .count(),
        6
    );
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    assert_eq!(a["state"], "token_rejected");
    assert_eq!(st["last_run"]["outcome"], "partial");

    // Next run: the rejected token is not used at all.
    let before = e.sim.snapshot().requests.len();
    assert_eq!(code(&e.run(&["sync"])), 75);
    let snap = e.sim.snapshot();
    assert_eq!(
        snap.requests[before..]
            .iter()
            .filter(|r| r.status == 401)
            .count(),
        0
    );

    // The MSP's new token heals the connector.
    e.add_token("msp-a", "key-a2", 0);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    assert_eq!(a["state"], "connected");
}

#[test]
fn a_rejected_paste_changes_nothing_and_the_old_token_keeps_working() {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(3, 10));
    e.sim.add_msp("msp-a", "A", "real-key");
    // A first paste that Gradient rejects stores nothing at all.
    let out = e.add_token("msp-a", "stale-key", 1);
    assert!(
        stderr(&out).contains("Gradient rejected this token (HTTP 401); nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("vendor key"), "names both causes");
    assert!(!stderr(&out).contains("stale-key"));
    let list = e.run(&["connector", "list", "--json"]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    assert!(e
        .sim
        .snapshot()
        .org("msp-a")
        .unwrap()
        .status_history
        .is_empty());
    // With a working token in place, a failed paste (a typo) keeps it: the next run pushes with it.
    e.add_token("msp-a", "real-key", 0);
    e.add_token("msp-a", "real-kye", 1);
    let st = e.status_json();
    assert_eq!(connector_in(&st, "msp-a")["state"], "connected");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    expect_counts(&e, "msp-a");
}

#[test]
fn disconnect_in_gradient_then_reconnect_recreates_accounts() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    e.sim.disconnect("msp-b");
    assert!(e.sim.snapshot().org("msp-b").unwrap().accounts.is_empty());
    e.sim.reconnect("msp-b", "key-b2");
    e.add_token("msp-b", "key-b2", 0);
    assert_eq!(
        e.sim.snapshot().org("msp-b").unwrap().accounts.len(),
        3,
        "recreated at connector add"
    );
    assert_eq!(code(&e.run(&["sync"])), 0);
    expect_counts(&e, "msp-b");
}

#[test]
fn a_rename_is_pushed() {
    let e = setup();
    e.import_inventory(Inventory::new().workspace(
        "msp-a-ws1",
        "msp-a",
        "Contoso \"Renamed\" Ltd — ünïcode",
    ));
    assert_eq!(code(&e.run(&["sync"])), 0);
    let snap = e.sim.snapshot();
    let acct = snap
        .org("msp-a")
        .unwrap()
        .account("msp-a-ws1")
        .unwrap()
        .clone();
    assert_eq!(acct.name, "Contoso \"Renamed\" Ltd — ünïcode");
    assert!(snap
        .requests
        .iter()
        .any(|r| r.method == "PATCH" && r.path.ends_with("/accounts/msp-a-ws1")));
}

#[test]
fn disconnect_sets_inactive_forgets_the_token_and_keeps_history() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    let out = e.run(&["connector", "disconnect", "msp-a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.sim.snapshot().org("msp-a").unwrap().status, "inactive");
    let before = e.sim.snapshot().requests_of("msp-a").len();
    assert_eq!(code(&e.run(&["sync"])), 0);
    assert_eq!(
        e.sim.snapshot().requests_of("msp-a").len(),
        before,
        "a disconnected connector sends nothing"
    );
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    assert_eq!(a["state"], "disconnected");
    let hist = e.run(&["history", "--connector", "msp-a", "--json"]);
    let rows: Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6, "history stays");
    assert!(e.store().token("msp-a").unwrap().is_none());
}

#[test]
fn catalogue_failure_creates_nothing_and_fails_the_run() {
    let e = setup();
    e.sim.add_fault(gradient_connector::sim::Fault {
        method: Some("GET".into()),
        path_prefix: Some("/api/vendor-api".into()),
        status: 500,
        count: 100,
        retry_after_secs: None,
    });
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("catalogue could not be read"),
        "{}",
        stdout(&out)
    );
    let snap = e.sim.snapshot();
    // The services were created when the MSPs connected; the failed run created none.
    assert_eq!(snap.services.len(), 2);
    assert!(snap.pushes.is_empty());
    assert_eq!(e.status_json()["last_run"]["outcome"], "failed");
}

#[test]
fn dry_run_sends_nothing_and_shows_the_plan() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    e.import_inventory(Inventory::new().device("msp-a-ws1", "extra", true));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        e.sim.snapshot().requests.len(),
        before,
        "a dry run sends nothing"
    );
    let text = stdout(&out);
    assert!(text.contains("msp-a-ws1") && text.contains("+1"), "{text}");
    let out = e.run(&["sync", "--dry-run", "--json", "--connector", "msp-b"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["connectors"].as_array().unwrap().len(), 1);
    assert_eq!(v["connectors"][0]["pushes"].as_array().unwrap().len(), 6);
    assert_eq!(e.sim.snapshot().requests.len(), before);
}

#[test]
fn period_flag_counts_a_calendar_month_and_connector_flag_limits_the_run() {
    let e = setup();
    let out = e.run(&["sync", "--period", "2026-10", "--connector", "msp-a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("monthly 2026-10"), "{}", stdout(&out));
    expect_counts(&e, "msp-a");
    assert!(e
        .sim
        .snapshot()
        .pushes
        .iter()
        .all(|p| p.org_id.as_deref() == Some("msp-a")));
    assert_eq!(code(&e.run(&["sync", "--period", "2026-13"])), 2);
    assert_eq!(code(&e.run(&["sync", "--connector", "nobody"])), 1);
    // September: modules not yet enabled, so no figure at all.
    let before = e.sim.snapshot().pushes.len();
    assert_eq!(code(&e.run(&["sync", "--period", "2026-09"])), 0);
    assert_eq!(e.sim.snapshot().pushes.len(), before);
}

#[test]
fn an_integration_gradient_shows_other_than_active_is_set_active_again_by_the_next_run() {
    let e = setup();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Something on Gradient's side put msp-a's integration back to pending.
    e.sim.set_status("msp-a", "pending");
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = e.sim.snapshot();
    let activations = |msp: &str| {
        snap.requests[before..]
            .iter()
            .filter(|r| {
                r.org_id.as_deref() == Some(msp)
                    && r.method == "PATCH"
                    && r.path.ends_with("/organization/status/active")
            })
            .count()
    };
    assert_eq!(activations("msp-a"), 1, "set active again");
    assert_eq!(activations("msp-b"), 0, "already active: nothing sent");
    assert_eq!(snap.org("msp-a").unwrap().status, "active");
}

#[test]
fn the_catalogue_and_every_msps_set_up_are_one_round_trip_before_the_pushes() {
    let e = setup();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Each answer now takes 400 ms: what is read before pushing must be read together.
    e.sim.set_latency(std::time::Duration::from_millis(400));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = e.sim.snapshot();
    let run = &snap.requests[before..];
    let catalogue = run
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/vendor-api")
        .unwrap()
        .at_ms;
    for msp in ["msp-a", "msp-b"] {
        let of = |pred: &dyn Fn(&str) -> bool| {
            run.iter()
                .filter(|r| r.org_id.as_deref() == Some(msp) && pred(&r.path))
                .map(|r| r.at_ms)
                .min()
                .unwrap()
        };
        let integration = of(&|p| p == "/api/vendor-api/organization");
        let accounts = of(&|p| p == "/api/vendor-api/organization/accounts");
        let first_push = of(&|p| p.ends_with("/count"));
        // Sent while the catalogue read is still waiting for its answer …
        assert!(integration < catalogue + 200, "{msp}: {run:#?}");
        assert!(accounts < catalogue + 200, "{msp}: {run:#?}");
        // … so the first push leaves one round trip after the run's first request, not three.
        assert!(
            first_push < catalogue + 400 + 300,
            "{msp}: first push at +{} ms: {run:#?}",
            first_push - catalogue
        );
    }
}

#[test]
fn status_names_each_service_by_module_id_and_gradient_name() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    let st = e.status_json();
    let a = connector_in(&st, "msp-a");
    let known = a["last_known"].as_array().unwrap();
    assert!(!known.is_empty());
    for l in known {
        assert_eq!(l["module"], l["service"], "{l}");
        let want = match l["module"].as_str().unwrap() {
            "endpoint_security" => "Endpoint Security",
            "email_security" => "Email Security",
            other => panic!("{other}"),
        };
        assert_eq!(l["service_name"], want, "{l}");
    }
}

#[test]
fn at_a_distant_gradient_the_pace_never_pauses_for_the_rebuilding_push() {
    // 120 pairs per connector, each answer 300 ms away: waiting for every `no_build` answer before
    // the last push would idle the pacer for a round trip. The pushes of the last round trip
    // rebuild instead, and one of them leaves after every `no_build` push was answered.
    let e = SimEnv::new("requests_per_second = 100", "");
    e.import_inventory(&two_msps(60, 10));
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    const LATENCY: u64 = 300;
    e.sim.set_latency(std::time::Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = e.sim.snapshot();
    let mut all: Vec<u64> = snap.requests[before..]
        .iter()
        .filter(|r| r.path.ends_with("/count"))
        .map(|r| r.at_ms)
        .collect();
    all.sort_unstable();
    // The two connectors share the pacer: between the first push and the last, it never idles.
    let widest = all.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        widest < LATENCY / 2,
        "a {widest} ms pause between two pushes (a round trip is {LATENCY} ms)"
    );
    let no_build = |r: &&&gradient_connector::sim::RequestLogEntry| {
        r.query
            .as_deref()
            .is_some_and(|q| q.contains("no_build=true"))
    };
    for msp in ["msp-a", "msp-b"] {
        let mut counts: Vec<_> = snap.requests[before..]
            .iter()
            .filter(|r| r.org_id.as_deref() == Some(msp) && r.path.ends_with("/count"))
            .collect();
        counts.sort_by_key(|r| r.at_ms);
        assert_eq!(counts.len(), 120, "{msp}");
        assert!(counts.iter().all(|r| r.status == 201), "{msp}: {counts:#?}");
        let last = counts.last().unwrap();
        assert!(!no_build(&last), "{msp}: the last push to arrive rebuilds");
        let drained = counts
            .iter()
            .filter(no_build)
            .map(|r| r.at_ms + LATENCY)
            .max()
            .unwrap();
        assert!(
            counts.iter().any(|r| !no_build(&r) && r.at_ms >= drained),
            "{msp}: no rebuilding push left after every no_build push was answered"
        );
        // The tail: one round trip and a quarter of pushes, not every push.
        let rebuilding = counts.iter().filter(|r| !no_build(r)).count();
        assert!(
            (2..=60).contains(&rebuilding),
            "{msp}: {rebuilding} rebuilding"
        );
        assert_eq!(snap.org(msp).unwrap().rebuilds as usize, rebuilding);
    }
}
