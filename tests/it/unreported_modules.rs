//! Inventory module ids that no `[[service]]` names (`EDR` where the configuration says
//! `endpoint_security`) are imported (exit 0) but never pushed: the import summary and `status`
//! (human and JSON) list them. The real binary.

use crate::common::*;

use gradient_connector_kit::Inventory;

#[test]
fn a_module_no_service_names_is_imported_and_listed_in_the_summary_and_status() {
    let e = SimEnv::new("", "");
    let mut inv = Inventory::small();
    let small_lines = inv.len();
    // Three workspaces enable "EDR": the configuration's module is "endpoint_security".
    for ws in ["edr-1", "edr-2", "edr-3"] {
        inv.workspace(ws, "msp-a", &format!("Customer {ws}"));
        inv.module(ws, "EDR", true);
    }
    let out = e.env.run(&["import", "-"], Some(&inv.to_jsonl()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("not reported: modules with no [[service]]: \"EDR\" (3 workspaces)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("imported {} record(s)", small_lines + 6)),
        "{text}"
    );
    // The records are in the store (imported, not dropped).
    let human = stdout(&e.run(&["status"]));
    assert!(
        human.contains("not reported: modules with no [[service]]: \"EDR\" (3 workspaces)"),
        "{human}"
    );
    let json = e.status_json();
    assert_eq!(
        json["unreported_modules"],
        serde_json::json!([{"module": "EDR", "workspaces": 3}]),
        "{json}"
    );

    // Disabled in one workspace: two left. Configured modules are never listed.
    let mut off = Inventory::new();
    off.module("edr-3", "EDR", false);
    let out = e.env.run(&["import", "-"], Some(&off.to_jsonl()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"EDR\" (2 workspaces)"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("endpoint_security"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_inventory_whose_modules_all_have_a_service_lists_nothing() {
    let e = SimEnv::new("", "");
    let out = e
        .env
        .run(&["import", "-"], Some(&Inventory::small().to_jsonl()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains("not reported"), "{}", stdout(&out));
    assert_eq!(e.status_json()["unreported_modules"], serde_json::json!([]));
}
