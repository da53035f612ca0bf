//! `history --changes` (pushes whose count differs from the pair's previous push; a first push is
//! a change) and `history --since-last-run` (the changes of the newest run). The real binary
//! against the stand-in.

use crate::common::*;

use gradient_connector::domain::UnitKind;
use gradient_connector_kit::Inventory;
use serde_json::Value;

fn history_json(e: &SimEnv, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["history", "--json"];
    all.extend_from_slice(args);
    let out = e.run(&all);
    assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// (run, account, service, count, previous) of each row.
fn pairs(rows: &[Value]) -> Vec<(i64, String, String, u64, Option<u64>)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["run_id"].as_i64().unwrap(),
                r["account_id"].as_str().unwrap().to_string(),
                r["module"].as_str().unwrap().to_string(),
                r["unit_count"].as_u64().unwrap(),
                r["previous_count"].as_u64(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sync(e: &SimEnv) {
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn changes_are_versus_the_previous_push_and_since_last_run_is_the_newest_runs_changes() {
    let e = SimEnv::new("", "");
    let out = e.run(&["history", "--since-last-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("no run yet"), "{}", stdout(&out));

    e.import_inventory(&two_msps(2, 10));
    e.connect("msp-a", "key-a");
    sync(&e);
    // Run 1: every pair is a first push, hence a change (previous null).
    let first = pairs(&history_json(&e, &["--since-last-run"]));
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(first.iter().all(|p| p.0 == 1 && p.4.is_none()), "{first:?}");

    // Run 2: one workspace gains two devices; only that pair changed.
    let mut more = Inventory::new();
    more.protected("msp-a-ws1", UnitKind::Devices, 3);
    e.import_inventory(&more);
    sync(&e);
    let last = pairs(&history_json(&e, &["--since-last-run"]));
    assert_eq!(
        last,
        vec![(
            2,
            "msp-a-ws1".to_string(),
            "endpoint_security".to_string(),
            3,
            Some(1)
        )]
    );
    // --changes spans every run: run 1's first pushes and run 2's change, not run 2's repeats.
    let changes = pairs(&history_json(&e, &["--changes"]));
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert_eq!(
        changes.iter().filter(|p| p.0 == 2).count(),
        1,
        "{changes:?}"
    );
    // The human form says which run it is.
    let out = e.run(&["history", "--since-last-run"]);
    assert!(
        stdout(&out).contains("changes in the last run (#2)"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("msp-a-ws1"), "{}", stdout(&out));

    // Run 3 changes nothing: nothing to show, although run 3 pushed every pair again.
    sync(&e);
    assert_eq!(history_json(&e, &["--since-last-run"]), Vec::<Value>::new());
    assert_eq!(history_json(&e, &["--run", "3"]).len(), 4);
    // --since-last-run cannot be combined with --run.
    assert_eq!(
        code(&e.run(&["history", "--since-last-run", "--run", "1"])),
        2
    );
}
