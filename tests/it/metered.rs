//! Metered usage end to end: a `unit = "quantity"` service counts `usage` records, pushes the
//! quantity rounded up to its decimals as a JSON number, never a zero for a disabled module, and
//! shows the quantity's unit name; the monthly rules that do not fit a unit are config errors. The
//! real binary against gradient-sim.

use crate::common::*;
use gradient_connector_kit::{Inventory, Service};
use serde_json::Value;

fn metered_env(decimals: u8) -> SimEnv {
    let e = SimEnv::with_config(|c| {
        c.service(Service::quantity("cloud_backup", "Cloud Backup", "GB").decimals(decimals))
    });
    let mut inv = two_msps(3, 1);
    inv.at("2026-10-01T00:00:00Z");
    for ws in ["msp-a-ws1", "msp-a-ws2"] {
        inv.module(ws, "cloud_backup", true);
    }
    inv.usage("msp-a-ws1", "cloud_backup", 100.0)
        .usage("msp-a-ws2", "cloud_backup", 0.04)
        // ws3 has usage but its backup module is not enabled: never a figure.
        .usage("msp-a-ws3", "cloud_backup", 40.0);
    inv.at("2026-10-15T00:00:00Z")
        .usage("msp-a-ws1", "cloud_backup", 512.25);
    e.import_inventory(&inv);
    e.connect("msp-a", "key-a");
    e
}

/// The `unitCount`s the stand-in received for `ws` and service `service`, as sent.
fn sent_to(snap: &gradient_connector::sim::SimSnapshot, service: &str, ws: &str) -> Vec<Value> {
    snap.pushes
        .iter()
        .filter(|p| p.service_id == service && p.account_id == ws)
        .map(|p| p.unit_count.clone())
        .collect()
}

#[test]
fn a_metered_service_pushes_its_quantity_rounded_up_as_a_number_with_its_unit_name() {
    let e = metered_env(1);
    let dry = stdout(&e.run(&["sync", "--dry-run"]));
    assert!(dry.contains("512.3 GB"), "{dry}");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let snap = e.sim.snapshot();
    let backup = snap.service_id("Cloud Backup").unwrap().to_string();
    let sent = |ws: &str| sent_to(&snap, &backup, ws);
    // 512.25 rounded up to one decimal; 0.04 up to 0.1; each a JSON number, sent once.
    assert_eq!(sent("msp-a-ws1"), vec![serde_json::json!(512.3)]);
    assert_eq!(sent("msp-a-ws2"), vec![serde_json::json!(0.1)]);
    assert!(
        sent("msp-a-ws3").is_empty(),
        "a module not enabled got a figure"
    );
    // The unit services still push whole numbers.
    let edr = snap.service_id("Endpoint Security").unwrap().to_string();
    let org = snap.org("msp-a").unwrap();
    assert_eq!(org.count("msp-a-ws2", &edr), Some(2.0));

    // Status: the quantity with its unit name, in JSON and in the human report.
    let status = e.status_json();
    let c = connector_in(&status, "msp-a");
    let known: Vec<&Value> = c["last_known"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["module"] == "cloud_backup")
        .collect();
    assert_eq!(known.len(), 2, "{c:#}");
    let ws1 = known.iter().find(|l| l["account"] == "msp-a-ws1").unwrap();
    assert_eq!(ws1["unit_count"], serde_json::json!(512.3));
    assert_eq!(ws1["quantity_name"], "GB");
    let edr_known = c["last_known"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["module"] == "endpoint_security")
        .unwrap();
    assert_eq!(edr_known["quantity_name"], Value::Null);
    let human = stdout(&e.run(&["status"]));
    assert!(human.contains("512.3 GB"), "{human}");
    let human = stdout(&e.run(&["history", "--connector", "msp-a"]));
    assert!(human.contains("512.3 GB"), "{human}");

    // The ledger holds what Gradient received, exactly.
    let history = e.run(&["history", "--json", "--connector", "msp-a"]);
    let rows: Value = serde_json::from_str(&stdout(&history)).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == "msp-a-ws1" && r["module"] == "cloud_backup")
        .unwrap_or_else(|| panic!("{rows:#}"));
    assert_eq!(row["unit_count"], serde_json::json!(512.3));
}

#[test]
fn a_disabled_metered_module_keeps_its_last_value_and_a_new_sample_is_pushed_as_a_change() {
    let e = metered_env(2);
    assert_eq!(code(&e.run(&["sync"])), 0);
    let mut later = Inventory::new();
    later
        .at("2026-10-20T00:00:00Z")
        .module("msp-a-ws2", "cloud_backup", false)
        .usage("msp-a-ws1", "cloud_backup", 1024.5);
    e.import_inventory(&later);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let snap = e.sim.snapshot();
    let backup = snap.service_id("Cloud Backup").unwrap().to_string();
    let sent = |ws: &str| sent_to(&snap, &backup, ws);
    assert_eq!(
        sent("msp-a-ws1"),
        vec![serde_json::json!(512.25), serde_json::json!(1024.5)]
    );
    // Disabled: no zero, Gradient keeps 0.04.
    assert_eq!(sent("msp-a-ws2"), vec![serde_json::json!(0.04)]);
}

/// `check-config` on the standard configuration changed by `edit`: its exit code and stderr.
fn check(
    edit: impl FnOnce(gradient_connector_kit::ConfigBuilder) -> gradient_connector_kit::ConfigBuilder,
) -> (i32, String) {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let cfg = env.write_config_as("c.toml", &edit(env.config_builder()));
    let out = run_bin(&cfg, &["check-config"], None);
    (code(&out), stderr(&out))
}

#[test]
fn monthly_rules_that_do_not_fit_the_unit_are_config_errors_naming_the_key() {
    let (code, err) = check(|c| {
        c.service(
            Service::new(
                "extra",
                "Extra",
                gradient_connector::domain::UnitKind::Users,
                "security",
                "email security",
            )
            .monthly_count("average"),
        )
    });
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("service[2].monthly_count"), "{err}");
    assert!(err.contains("`average` does not fit"), "{err}");

    let (code, err) = check(|c| {
        c.set("schedule", "monthly_count", "distinct")
            .service(Service::quantity("cloud_backup", "Cloud Backup", "GB"))
    });
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("schedule.monthly_count"), "{err}");
    assert!(
        err.contains("\"cloud_backup\", a quantity service"),
        "{err}"
    );

    // The service's own rule makes the same deployment valid.
    let (code, err) = check(|c| {
        c.set("schedule", "monthly_count", "distinct").service(
            Service::quantity("cloud_backup", "Cloud Backup", "GB").monthly_count("average"),
        )
    });
    assert_eq!(code, 0, "{err}");
}
