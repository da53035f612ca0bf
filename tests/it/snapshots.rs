//! Snapshots through the real binary: a vendor's nightly full export is one `import --snapshot`,
//! and a truncated one never zeroes an MSP's bill.

use crate::common::*;
use gradient_connector::domain::UnitKind;
use gradient_connector_kit::{Inventory, STANDARD_MODULES};

/// msp-a's full state as the vendor's export states it: `users[k]` users and one device in
/// workspace k (of `users.len()`), both modules on.
fn export_of_msp_a(users: &[usize]) -> Inventory {
    // As of now: `two_msps` states its channels and workspaces undated (at the import's instant).
    let now = gradient_connector::time::format_ms(gradient_connector::time::now_ms());
    let mut inv = Inventory::snapshot(&now);
    inv.channel("msp-a", "msp-a IT");
    for (k, n) in users.iter().enumerate() {
        let ws = format!("msp-a-ws{}", k + 1);
        inv.workspace(&ws, "msp-a", &format!("Customer {ws}"));
        for m in STANDARD_MODULES {
            inv.module(&ws, m, true);
        }
        inv.protected(&ws, UnitKind::Users, *n)
            .protected(&ws, UnitKind::Devices, k + 1);
    }
    inv
}

fn users_pushed(e: &SimEnv, ws: &str) -> Option<f64> {
    let snap = e.sim.snapshot();
    let mail = snap.service_id("Email Security")?.to_string();
    snap.org("msp-a")?.count(ws, &mail)
}

fn setup() -> SimEnv {
    let e = SimEnv::new("", "");
    // Workspace k: 3 + k users, k devices.
    e.import_inventory(&two_msps(2, 3));
    e.connect("msp-a", "key-a");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(users_pushed(&e, "msp-a-ws1"), Some(4.0));
    e
}

#[test]
fn a_snapshot_that_leaves_out_a_user_lowers_the_next_push_and_twice_changes_nothing() {
    let e = setup();
    // ws1 lost a user; ws2 as before.
    let text = export_of_msp_a(&[3, 5]).to_jsonl();
    let out = e.env.run(&["import", "--snapshot", "-"], Some(&text));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(
            "snapshot: 1 unit(s) unprotected, 0 module(s) disabled, 0 workspace(s) removed"
        ),
        "{}",
        stdout(&out)
    );
    let again = e.env.run(&["import", "--snapshot", "-"], Some(&text));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(
        stdout(&again).contains("snapshot: 0 unit(s) unprotected"),
        "{}",
        stdout(&again)
    );
    // The same file as a plain import lists nothing missing and changes nothing either.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(users_pushed(&e, "msp-a-ws1"), Some(3.0));
    assert_eq!(users_pushed(&e, "msp-a-ws2"), Some(5.0));
}

#[test]
fn a_truncated_snapshot_is_refused_with_exit_65_naming_the_channel_and_allow_shrink_takes_it() {
    let e = setup();
    // The export broke early: ws1 with its device but no user, no ws2 at all.
    let text = export_of_msp_a(&[0]).to_jsonl();
    let out = e.env.run(&["import", "--snapshot", "-"], Some(&text));
    assert_eq!(code(&out), 65, "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"msp-a\": 11 of 12 protected unit(s) and 1 of 2 workspace(s)")
            && err.contains("--allow-shrink"),
        "{err}"
    );
    // Nothing applied: the next run pushes what it pushed before.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(users_pushed(&e, "msp-a-ws1"), Some(4.0));
    // The customers really left.
    let out = e.env.run(
        &["import", "--snapshot", "--allow-shrink", "-"],
        Some(&text),
    );
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(users_pushed(&e, "msp-a-ws1"), Some(0.0));
    // ws2 was removed: its MSP got its final zero.
    assert_eq!(users_pushed(&e, "msp-a-ws2"), Some(0.0));
}

#[test]
fn allow_shrink_without_snapshot_is_a_usage_error() {
    let e = SimEnv::new("", "");
    let out = e.run(&["import", "--allow-shrink", "-"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
