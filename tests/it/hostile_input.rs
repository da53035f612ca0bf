//! Hostile input from the inventory and the command line (real binary): a record from the future
//! is a bad line, and a month that has not ended cannot be counted.

use crate::common::*;
use gradient_connector_kit::Inventory;

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

#[test]
fn the_history_of_an_unknown_connector_is_an_error_not_an_empty_answer() {
    let e = SimEnv::new("", "");
    let out = e.run(&["history", "--connector", "nope"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no connector \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn connector_list_columns_line_up() {
    let e = SimEnv::new("", "");
    let mut inv = Inventory::new();
    inv.channel("msp-with-a-rather-long-identifier", "A")
        .channel("b", "B");
    e.import(&inv.to_jsonl());
    e.connect("msp-with-a-rather-long-identifier", "key-a");
    e.connect("b", "key-b");
    let out = e.run(&["connector", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let starts: Vec<usize> = text
        .lines()
        .map(|l| {
            l.find("STATE")
                .or_else(|| l.find("connected"))
                .expect("a state column")
        })
        .collect();
    assert_eq!(starts.len(), 3, "{text}");
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");
}
