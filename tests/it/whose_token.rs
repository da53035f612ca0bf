//! Whose token is it (real binary ↔ gradient-sim): pastes that fail safe, one organization per
//! connector, vendor-key faults, services at paste, offboarding, and 404 outside the count route.

use crate::common::*;
use serde_json::Value;

const MSPS: [&str; 2] = ["msp-a", "msp-b"];

fn setup() -> SimEnv {
    let e = SimEnv::new("", "");
    e.import(&two_msps(3, 10).to_jsonl());
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    e
}

fn token_file(e: &SimEnv, name: &str, text: &str) -> String {
    e.env.write(name, text).to_str().unwrap().to_string()
}

/// Count pushes the stand-in accepted for (org, account), as (service id, count).
fn pushes_to(e: &SimEnv, org: &str, account: &str, since: usize) -> Vec<(String, f64)> {
    e.sim.snapshot().pushes[since..]
        .iter()
        .filter(|p| p.org_id.as_deref() == Some(org) && p.account_id == account && p.status < 300)
        .map(|p| (p.service_id.clone(), p.unit_count.as_f64().unwrap_or(-1.0)))
        .collect()
}

#[test]
fn another_msps_token_is_refused_before_any_write_to_gradient() {
    let e = SimEnv::new("", "");
    e.import(&two_msps(3, 10).to_jsonl());
    e.connect("msp-a", "key-a");
    e.sim.add_msp("msp-b", "msp-b MSP", "key-b");
    let before = e.sim.snapshot().requests.len();
    // Acme's token pasted for Gamma's connector.
    let f = token_file(&e, "wrong.tok", "key-a\n");
    let out = e.run(&["connector", "add", "msp-b", "--token-file", &f]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("which connector msp-a already holds"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("key-a"), "no token in messages");
    // Nothing was sent to Gradient but the verification read.
    let snap = e.sim.snapshot();
    let sent: Vec<(String, String)> = snap.requests[before..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        sent,
        vec![(
            "GET".to_string(),
            "/api/vendor-api/organization".to_string()
        )]
    );
    assert_eq!(snap.org("msp-a").unwrap().status_history, vec!["pending"]);
    // msp-b has no connector; msp-a is untouched.
    let st = e.status_json();
    let ids: Vec<&str> = st["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["msp-a"]);
    // Disconnecting msp-a's mistaken twin is impossible: there is none; msp-b's own token works.
    e.add_token("msp-b", "key-b", 0);
}

#[test]
fn a_token_of_another_organization_for_the_same_connector_needs_new_organization() {
    let e = SimEnv::new("", "");
    e.import(&two_msps(3, 10).to_jsonl());
    e.connect("msp-a", "key-a");
    e.sim.add_msp("msp-elsewhere", "Elsewhere", "key-x");
    let out = e.add_token("msp-a", "key-x", 1);
    assert!(
        stderr(&out).contains("--new-organization"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        connector_in(&e.status_json(), "msp-a")["organization_name"],
        "msp-a MSP",
        "the old token and organization stay"
    );
    let f = token_file(&e, "moved.tok", "key-x\n");
    let out = e.run(&[
        "connector",
        "add",
        "msp-a",
        "--token-file",
        &f,
        "--new-organization",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Elsewhere"),
        "prints the organization: {}",
        stdout(&out)
    );
}

#[test]
fn a_token_file_with_a_bom_and_crlf_works_and_services_exist_right_after_the_paste() {
    let e = SimEnv::new("", "");
    e.import(&two_msps(3, 10).to_jsonl());
    e.sim.add_msp("msp-a", "Acme IT", "key-a");
    let f = token_file(&e, "bom.tok", "\u{feff}key-a\r\n");
    let out = e.run(&["connector", "add", "msp-a", "--token-file", &f]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Acme IT"), "{}", stdout(&out));
    // Ready to map at once: services, accounts and `pending`, before any run.
    let snap = e.sim.snapshot();
    let names: Vec<&str> = snap.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["Endpoint Security", "Email Security"]);
    let org = snap.org("msp-a").unwrap();
    assert_eq!(org.accounts.len(), 3);
    assert_eq!(org.status, "pending");
    assert!(
        snap.pushes.is_empty(),
        "no sync yet (sync_on_connect is off)"
    );
}

#[test]
fn sync_on_connect_runs_the_first_sync_at_once() {
    let e = SimEnv::new("", "sync_on_connect = true");
    e.import(&two_msps(3, 10).to_jsonl());
    e.sim.add_msp("msp-a", "Acme IT", "key-a");
    e.add_token("msp-a", "key-a", 0);
    let snap = e.sim.snapshot();
    let to_a = snap
        .pushes
        .iter()
        .filter(|p| p.org_id.as_deref() == Some("msp-a"))
        .count();
    assert_eq!(to_a, 6, "3 accounts × 2 services pushed at paste");
}

#[test]
fn a_wrong_vendor_key_is_the_vendors_fault_and_fixing_it_needs_no_new_paste() {
    let e = setup();
    let key_file = e.env.path("vendor-api-key");
    let right = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, "a-stale-vendor-key\n").unwrap();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("the vendor key is the likely cause"),
        "{text}"
    );
    assert!(!text.contains("a-stale-vendor-key"));
    let st = e.status_json();
    for msp in MSPS {
        assert_eq!(connector_in(&st, msp)["state"], "token_rejected");
    }
    // The vendor fixes its key: the next run verifies every rejected token again and pushes all.
    std::fs::write(&key_file, right).unwrap();
    let before = e.sim.snapshot().pushes.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let pushed = e.sim.snapshot().pushes[before..]
        .iter()
        .filter(|p| p.status < 300)
        .count();
    assert_eq!(pushed, 12, "every pair of both MSPs, without a new paste");
    let st = e.status_json();
    for msp in MSPS {
        assert_eq!(connector_in(&st, msp)["state"], "connected");
    }
}

#[test]
fn connector_verify_all_brings_rejected_connectors_back_after_a_vendor_key_fix() {
    let e = setup();
    let key_file = e.env.path("vendor-api-key");
    let right = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, "a-stale-vendor-key\n").unwrap();
    let out = e.run(&["connector", "verify", "--all"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        connector_in(&e.status_json(), "msp-a")["state"],
        "token_rejected"
    );
    std::fs::write(&key_file, right).unwrap();
    let out = e.run(&["connector", "verify", "--all"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let st = e.status_json();
    for msp in MSPS {
        assert_eq!(connector_in(&st, msp)["state"], "connected");
    }
    let out = e.run(&["connector", "verify"]);
    assert_eq!(code(&out), 2, "an ID or --all is required");
}

#[test]
fn a_moved_workspace_gets_one_final_zero_in_the_old_msp_and_its_counts_in_the_new_one() {
    let e = setup();
    assert_eq!(code(&e.run(&["sync"])), 0);
    let edr = e
        .sim
        .snapshot()
        .service_id("Endpoint Security")
        .unwrap()
        .to_string();
    let mail = e
        .sim
        .snapshot()
        .service_id("Email Security")
        .unwrap()
        .to_string();
    // msp-a-ws2 moves to msp-b; msp-b-ws3 leaves the vendor.
    e.import(&format!(
        "{}\n{}\n",
        serde_json::json!({"type": "workspace", "id": "msp-a-ws2", "channel": "msp-b", "name": "Customer msp-a-ws2"}),
        serde_json::json!({"type": "workspace", "id": "msp-b-ws3", "removed": true})
    ));
    let before = e.sim.snapshot().pushes.len();
    assert_eq!(code(&e.run(&["sync"])), 0);
    let mut zeros = pushes_to(&e, "msp-a", "msp-a-ws2", before);
    zeros.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(edr.clone(), 0.0), (mail.clone(), 0.0)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(zeros, want, "one final zero per service in the old MSP");
    let mut removed = pushes_to(&e, "msp-b", "msp-b-ws3", before);
    removed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        removed, want,
        "a removed workspace gets its final zeros too"
    );
    // The new MSP has the account and its counts.
    let snap = e.sim.snapshot();
    let b = snap.org("msp-b").unwrap();
    assert!(b.accounts.iter().any(|a| a.id == "msp-a-ws2"));
    assert_eq!(b.count("msp-a-ws2", &edr), Some(2.0));
    assert_eq!(b.count("msp-a-ws2", &mail), Some(12.0));
    // The final zeros are in the ledger, and never sent again.
    let h = e.run(&["history", "--json", "--connector", "msp-a"]);
    let rows: Value = serde_json::from_slice(&h.stdout).unwrap();
    let finals = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["account_id"] == "msp-a-ws2" && r["unit_count"] == 0)
        .count();
    assert_eq!(finals, 2);
    let before = e.sim.snapshot().pushes.len();
    assert_eq!(code(&e.run(&["sync"])), 0);
    assert!(pushes_to(&e, "msp-a", "msp-a-ws2", before).is_empty());
    assert!(pushes_to(&e, "msp-b", "msp-b-ws3", before).is_empty());
}

#[test]
fn a_404_outside_the_count_route_is_an_error_that_names_the_route_never_unmapped() {
    let e = setup();
    e.sim.add_fault(gradient_connector::sim::Fault {
        method: Some("GET".into()),
        path_prefix: Some("/api/vendor-api/organization/accounts".into()),
        status: 404,
        count: 100,
        retry_after_secs: None,
    });
    let out = e.run(&["sync"]);
    assert_ne!(code(&out), 0);
    let text = stdout(&out);
    assert!(!text.contains("unmapped:"), "{text}");
    assert!(
        text.contains("/api/vendor-api/organization/accounts"),
        "{text}"
    );
    assert!(text.contains("base_url"), "{text}");
    let st = e.status_json();
    assert_eq!(st["last_run"]["counts"]["unmapped"], 0, "{st}");
}

#[test]
fn connector_remove_takes_only_a_disconnected_connector_and_keeps_its_history() {
    let e = setup();
    e.connect("msp-a", "key-a");
    assert_eq!(code(&e.run(&["sync"])), 0);
    let out = e.run(&["connector", "remove", "msp-a"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("disconnect it first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&e.run(&["connector", "disconnect", "msp-a"])), 0);
    let out = e.run(&["connector", "remove", "msp-a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = e.run(&["connector", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        !listed.to_string().contains("msp-a"),
        "removed connectors are not listed: {listed}"
    );
    let history = e.run(&["history", "--connector", "msp-a", "--json"]);
    assert_eq!(code(&history), 0, "{}", stderr(&history));
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("msp-a-ws1"),
        "the ledger stays"
    );
    let again = e.run(&["connector", "remove", "msp-a"]);
    assert_eq!(code(&again), 1, "{}", stderr(&again));
}

#[test]
fn a_connector_whose_id_names_no_channel_says_so_in_status_its_json_and_check_config() {
    let e = setup();
    // The inventory has msp-a and msp-b; the console used the MSP's display name.
    e.connect("Msp-B", "key-b2");
    e.connect("initech", "key-i");
    let st = e.status_json();
    let warnings = |id: &str| -> Vec<String> {
        st["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| {
                c["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap()
    };
    assert!(warnings("msp-a").is_empty());
    let near = warnings("Msp-B");
    assert!(near.len() == 1 && near[0].contains("\"msp-b\""), "{near:?}");
    assert!(warnings("initech")[0].contains("no channel \"initech\" in the inventory"));
    let human = e.run(&["status"]);
    assert!(
        stdout(&human).contains("warning: no channel \"initech\""),
        "{}",
        stdout(&human)
    );
    let check = e.run(&["check-config"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert!(
        stderr(&check).contains("warning: connector initech: no channel \"initech\""),
        "{}",
        stderr(&check)
    );
}
