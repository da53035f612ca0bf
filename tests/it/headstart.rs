//! The headstart at a distant Gradient (real binary ↔ gradient-sim at 300 ms): pairs Gradient
//! accepted before leave while the set-up is still out, and their answers are read only once the
//! set-up has answered — a rotated token, a wrong vendor key and a re-created service each decide
//! what the early counts mean.

use std::time::Duration;

use crate::common::*;
use gradient_connector::sim::{Behaviour, Hostile, RequestLogEntry};
use gradient_connector::time::now_ms;

/// Each answer this far away.
const LATENCY: u64 = 300;

/// msp-a connected with `workspaces` customers (two modules each), every pair accepted once at a
/// nearby Gradient; msp-b's inventory is there but not connected.
fn known_pairs(workspaces: usize) -> SimEnv {
    known_pairs_with(workspaces, "")
}

/// [`known_pairs`] with more `[gradient]` settings.
fn known_pairs_with(workspaces: usize, gradient: &str) -> SimEnv {
    let e = SimEnv::new(&format!("requests_per_second = 100\n{gradient}"), "");
    e.import_inventory(&two_msps(workspaces, 10));
    e.connect("msp-a", "key-a");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    e
}

/// The run's requests (after `before`) and when its set-up answered (its first read + a round trip).
fn run_since(e: &SimEnv, before: usize) -> (Vec<RequestLogEntry>, u64) {
    let run = e.sim.snapshot().requests[before..].to_vec();
    let first_read = run
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.at_ms)
        .min()
        .expect("the set-up read something");
    (run, first_read + LATENCY)
}

fn counts(run: &[RequestLogEntry]) -> Vec<&RequestLogEntry> {
    run.iter().filter(|r| r.path.ends_with("/count")).collect()
}

fn account_of(r: &RequestLogEntry) -> &str {
    r.body
        .as_ref()
        .and_then(|b| b["accountId"].as_str())
        .unwrap_or_default()
}

#[test]
fn at_a_distant_gradient_known_pairs_leave_before_the_set_up_answers() {
    let e = known_pairs(40);
    // A customer new since the last run: its pairs wait for its account.
    e.import_inventory(&two_msps(41, 10));
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (run, answered) = run_since(&e, before);
    let counts = counts(&run);
    assert!(counts.iter().all(|r| r.status == 201), "{counts:#?}");
    let first = counts.iter().map(|r| r.at_ms).min().unwrap();
    let set_up = answered - LATENCY;
    assert!(
        first >= set_up + 90,
        "a count left {} ms into the set-up: a nearby Gradient's set-up must get 100 ms",
        first - set_up
    );
    let early = counts.iter().filter(|r| r.at_ms < answered).count();
    assert!(
        early >= 10,
        "{early} counts left before the set-up answered (first at +{} ms)",
        first - set_up
    );
    let created = run
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/organization/accounts"))
        .expect("the new customer's account was created");
    let new: Vec<_> = counts
        .iter()
        .filter(|r| account_of(r) == "msp-a-ws41")
        .collect();
    assert_eq!(new.len(), 2);
    assert!(
        new.iter().all(|r| r.at_ms >= created.at_ms + LATENCY),
        "a new customer's count left before its account was created: {new:#?}"
    );
    let st = e.status_json();
    assert_eq!(st["last_run"]["counts"]["pushed"], 82, "{st}");
    assert_eq!(st["last_run"]["outcome"], "ok");
    // The last count to arrive rebuilds, as at any Gradient.
    let last = counts.iter().max_by_key(|r| r.at_ms).unwrap();
    assert!(
        !last
            .query
            .as_deref()
            .unwrap_or("")
            .contains("no_build=true"),
        "{last:#?}"
    );
}

#[test]
fn a_token_rotated_before_a_distant_run_rejects_every_pair_and_nothing_leaves_after_its_401() {
    let e = known_pairs(40);
    e.sim.rotate_key("msp-a", "key-a2");
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    let (run, _) = run_since(&e, before);
    let first_401 = run
        .iter()
        .filter(|r| r.status == 401)
        .map(|r| r.at_ms)
        .min()
        .unwrap();
    // The first 401 is back a round trip after it left; nothing leaves once it is (50 ms for
    // the client to read it).
    let after: Vec<_> = run
        .iter()
        .filter(|r| r.at_ms >= first_401 + LATENCY + 50)
        .collect();
    assert!(after.is_empty(), "sent after the first 401: {after:#?}");
    let st = e.status_json();
    assert_eq!(connector_in(&st, "msp-a")["state"], "token_rejected");
    // Early counts' 401s are not read on their own: the set-up's rejection decides every pair.
    assert_eq!(st["last_run"]["counts"]["rejected"], 80, "{st}");
    assert_eq!(st["last_run"]["counts"]["pushed"], 0, "{st}");
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
}

#[test]
fn a_404_everywhere_at_a_distant_gradient_never_reads_an_early_count_as_unmapped() {
    // Some sources say Gradient answers a wrong vendor key with 404 (docs/gradient-api.md): on
    // the count route that reads as "unmapped" — unless the set-up, answering 404 too, says the
    // run cannot trust it.
    let e = known_pairs(40);
    for prefix in [
        "/api/vendor-api/service/",
        "/api/vendor-api/organization/accounts",
    ] {
        e.sim.add_hostile(Hostile {
            method: None,
            path: None,
            path_prefix: Some(prefix.into()),
            count: u32::MAX,
            behaviour: Behaviour::Body {
                status: 404,
                body: r#"{"message":"Not Found"}"#.into(),
            },
        });
    }
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_ne!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let (run, answered) = run_since(&e, before);
    let early = counts(&run)
        .into_iter()
        .filter(|r| r.status == 404 && r.at_ms < answered)
        .count();
    assert!(early >= 1, "no count left early: the test proves nothing");
    let st = e.status_json();
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
    assert_eq!(st["last_run"]["counts"]["failed"], 80, "{st}");
    // Nobody's token is blamed.
    assert_eq!(connector_in(&st, "msp-a")["state"], "connected");
}

#[test]
fn a_service_re_created_since_the_last_run_gets_its_early_counts_again_under_its_new_id() {
    let e = known_pairs(40);
    // The store still holds an id the catalogue no longer has (the service was re-created).
    let ids = e.store().service_ids().unwrap();
    let (module, (name, real)) = ids
        .iter()
        .next()
        .map(|(m, v)| (m.clone(), v.clone()))
        .unwrap();
    e.store()
        .save_service_id(&module, &name, "svc-gone", now_ms())
        .unwrap();
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let (run, answered) = run_since(&e, before);
    let stale: Vec<_> = counts(&run)
        .into_iter()
        .filter(|r| r.path.contains("svc-gone"))
        .collect();
    assert!(
        !stale.is_empty(),
        "no early count under the old id: the test proves nothing"
    );
    // Early only (50 ms for the client to read the set-up's answers and record them).
    assert!(
        stale
            .iter()
            .all(|r| r.at_ms < answered + 50 && r.status == 404),
        "answered at {answered}: {stale:#?}"
    );
    let st = e.status_json();
    assert_eq!(st["last_run"]["counts"]["pushed"], 80, "{st}");
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
    // Each of those pairs was pushed again under the catalogue's id, and Gradient holds it.
    let snap = e.sim.snapshot();
    for r in &stale {
        let again = counts(&run)
            .into_iter()
            .filter(|c| c.path.contains(real.as_str()) && account_of(c) == account_of(r))
            .count();
        assert_eq!(again, 1, "{}", account_of(r));
        assert!(snap
            .org("msp-a")
            .and_then(|o| o.count(account_of(r), &real))
            .is_some());
    }
    assert_eq!(e.store().service_ids().unwrap()[&module].1, real);
}

#[test]
fn early_counts_gradient_accepted_stand_when_the_set_up_then_fails() {
    // The accounts cannot be read: the set-up fails, while the count route works.
    accepted_early_counts_stand(
        known_pairs(40),
        Behaviour::Body {
            status: 404,
            body: r#"{"message":"Not Found"}"#.into(),
        },
    );
}

#[test]
fn early_counts_gradient_accepted_stand_when_the_deadline_ends_a_set_up_that_never_answers() {
    // The accounts read is never answered: the run's deadline ends it, with early counts accepted.
    accepted_early_counts_stand(
        known_pairs_with(40, "run_deadline_secs = 2"),
        Behaviour::Silent,
    );
}

/// The accounts read gets `behaviour` at a distant Gradient: the ledger says `pushed` for exactly
/// the pairs Gradient accepted, and the rest as the set-up's failure (or the deadline) says.
fn accepted_early_counts_stand(e: SimEnv, behaviour: Behaviour) {
    e.sim.add_hostile(Hostile {
        method: Some("GET".into()),
        path: Some("/api/vendor-api/organization/accounts".into()),
        path_prefix: None,
        count: u32::MAX,
        behaviour,
    });
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_ne!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let (run, _) = run_since(&e, before);
    // What Gradient accepted in this run, by pair.
    let accepted: std::collections::BTreeSet<(String, String)> = counts(&run)
        .into_iter()
        .filter(|r| r.status == 201)
        .map(|r| (r.path.clone(), account_of(r).to_string()))
        .collect();
    assert!(
        !accepted.is_empty(),
        "no early count: the test proves nothing"
    );
    let st = e.status_json();
    // The ledger says pushed exactly for what Gradient holds; the set-up's failure decides the rest.
    assert_eq!(st["last_run"]["counts"]["pushed"], accepted.len(), "{st}");
    assert_eq!(
        st["last_run"]["counts"]["failed"],
        80 - accepted.len(),
        "{st}"
    );
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
}

#[test]
fn a_malformed_catalogue_at_a_distant_gradient_creates_nothing_and_records_what_gradient_accepted()
{
    let e = known_pairs(40);
    // A 200 carrying an error object: the run fails at the catalogue.
    e.sim.add_hostile(Hostile {
        method: Some("GET".into()),
        path: Some("/api/vendor-api".into()),
        path_prefix: None,
        count: u32::MAX,
        behaviour: Behaviour::Body {
            status: 200,
            body: r#"{"statusCode":503,"message":"Service Unavailable"}"#.into(),
        },
    });
    e.sim.set_latency(Duration::from_millis(LATENCY));
    let services_before = e.sim.snapshot().services.len();
    let before = e.sim.snapshot().requests.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let (run, _) = run_since(&e, before);
    let created: Vec<_> = run
        .iter()
        .filter(|r| r.method != "GET" && !r.path.ends_with("/count"))
        .collect();
    assert!(created.is_empty(), "{created:#?}");
    assert_eq!(e.sim.snapshot().services.len(), services_before);
    let accepted: std::collections::BTreeSet<(String, String)> = counts(&run)
        .into_iter()
        .filter(|r| r.status == 201)
        .map(|r| (r.path.clone(), account_of(r).to_string()))
        .collect();
    let st = e.status_json();
    assert_eq!(st["last_run"]["counts"]["pushed"], accepted.len(), "{st}");
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
}
