//! Hostile input from the inventory and the command line (real binary): a record from the future
//! is a bad line, and a month that has not ended cannot be counted.

mod common;

use common::*;
use gradient_connector::kit::Inventory;

#[test]
fn a_record_from_the_future_is_a_bad_line_and_nothing_is_applied() {
    let e = SimEnv::new("", "");
    let mut inv = Inventory::new();
    inv.channel("msp-a", "A");
    inv.at("9999-12-31T00:00:00Z").channel("msp-b", "B");
    let out = e.env.run(&["import", "-"], Some(&inv.to_jsonl()));
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));
    assert_eq!(
        e.store().inventory_size().unwrap().channels,
        0,
        "nothing applied"
    );
    // A later full export is not blocked by anything.
    let mut ok = Inventory::new();
    ok.channel("msp-a", "A").channel("msp-b", "B");
    e.import(&ok.to_jsonl());
}

#[test]
fn a_month_that_has_not_ended_cannot_be_counted() {
    let e = SimEnv::new("", "");
    for period in ["9999-12", "2999-01"] {
        let out = e.run(&["sync", "--period", period]);
        assert_eq!(code(&out), 2, "{period}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("has not ended yet"),
            "{}",
            stderr(&out)
        );
    }
    let out = e.run(&["sync", "--dry-run", "--period", "2026-10"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
