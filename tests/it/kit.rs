//! The test kit against the product: an inventory it builds imports as written (sizes read through
//! the store's API), and a configuration it writes loads.

use std::time::Duration;

use gradient_connector::config::Config;
use gradient_connector::domain::UnitKind;
use gradient_connector::store::counting::ServiceUnit;
use gradient_connector::store::import::import;
use gradient_connector::store::run_inputs::{CountQuestion, InventorySize};
use gradient_connector::store::Store;
use gradient_connector::time::parse_rfc3339;
use gradient_connector_kit::{ConfigBuilder, Inventory, Units};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
    (dir, store)
}

#[test]
fn the_msps_shape_imports_with_the_sizes_it_states() {
    let (_d, mut s) = temp_store();
    let inv = Inventory::msps(3, 4, |k| Units {
        devices: k + 1,
        users: k % 2,
    });
    let now = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let summary = import(&mut s, inv.to_jsonl().as_bytes(), now).unwrap();
    assert_eq!(summary.lines, inv.len());
    assert_eq!(summary.unchanged, 0);
    // Per workspace k: k+1 devices and k%2 users, each one unit with one interval.
    let units = 3 * (0..4).map(|k| k + 1 + k % 2).sum::<usize>() as u64;
    assert_eq!(
        s.inventory_size().unwrap(),
        InventorySize {
            channels: 3,
            workspaces: 12,
            units,
            unit_intervals: units,
        }
    );
    assert_eq!(s.channel_ids().unwrap(), ["msp-0", "msp-1", "msp-2"]);
    let services = [
        ServiceUnit::new("endpoint_security", UnitKind::Devices),
        ServiceUnit::new("email_security", UnitKind::Users),
    ];
    let counts = s.count(&services, CountQuestion::AsOf(now)).unwrap();
    let devices = counts
        .figures
        .iter()
        .find(|f| f.workspace_id == "msp-2-w3" && f.module == "endpoint_security")
        .unwrap();
    assert_eq!(devices.unit_count, 4);
    // Importing the same text again changes nothing.
    let again = import(&mut s, inv.to_jsonl().as_bytes(), now).unwrap();
    assert_eq!(again.unchanged, inv.len());
}

#[test]
fn a_history_with_a_move_imports_record_by_record() {
    let (_d, mut s) = temp_store();
    let mut inv = Inventory::new();
    inv.at("2026-10-01T00:00:00Z")
        .channel("a", "A")
        .channel("b", "B \"quoted\" — ü")
        .workspace("w", "a", "W")
        .module("w", "m", true)
        .device("w", "d", true)
        .at("2026-10-05T00:00:00Z")
        .device("w", "d", false)
        .at("2026-10-07T00:00:00Z")
        .device("w", "d", true)
        .move_workspace("w", "b", "W moved");
    let now = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let summary = import(&mut s, inv.to_jsonl().as_bytes(), now).unwrap();
    assert_eq!(summary.lines, 8);
    let size = s.inventory_size().unwrap();
    assert_eq!((size.channels, size.workspaces), (2, 1));
    assert_eq!((size.units, size.unit_intervals), (1, 2));
    let w = s.workspaces().unwrap();
    assert_eq!(
        (w[0].channel_id.as_str(), w[0].name.as_str()),
        ("b", "W moved")
    );
}

#[test]
fn a_written_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    ConfigBuilder::new("http://127.0.0.1:9")
        .vendor_key_file("key")
        .store_path("store.db")
        .set("store", "busy_timeout_secs", 1)
        .standard_services()
        .write(&path)
        .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.store.path, dir.path().join("store.db"));
    assert_eq!(c.store.busy_timeout, Duration::from_secs(1));
    assert_eq!(c.services.len(), 2);
}
