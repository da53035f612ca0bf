//! The import's unit tests.

use super::*;
use crate::temp_store;

fn run(s: &mut Store, text: &str) -> Result<ImportSummary, ImportError> {
    import(
        s,
        text.as_bytes(),
        parse_rfc3339("2026-11-01T00:00:00Z").unwrap(),
    )
}

fn count(s: &Store, table: &str) -> i64 {
    s.conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

const GOOD: &str = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso Ltd"}
{"type":"module","workspace":"ws-1","module":"endpoint_security","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-02T09:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":false,"at":"2026-10-20T09:00:00Z"}

{"type":"device","workspace":"ws-1","id":"d-1","protected":false}
"#;

#[test]
fn good_file_applies_and_reimport_changes_nothing() {
    let (_d, mut s) = temp_store();
    let sum = run(&mut s, GOOD).unwrap();
    assert_eq!(sum.lines, 6);
    assert_eq!(sum.applied.get("user"), Some(&2));
    assert_eq!(sum.unchanged, 0);
    assert_eq!(count(&s, "unit_intervals"), 1);
    let again = run(&mut s, GOOD).unwrap();
    assert_eq!(again.applied.values().sum::<usize>(), 0, "{again}");
    assert_eq!(again.unchanged, 6);
    assert_eq!(count(&s, "unit_intervals"), 1);
    assert_eq!(count(&s, "channel_names"), 1);
    let (from, to): (i64, Option<i64>) = s
        .conn()
        .query_row("SELECT from_at, to_at FROM unit_intervals", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(format_ms(from), "2026-10-02T09:00:00Z");
    assert_eq!(to.map(format_ms).as_deref(), Some("2026-10-20T09:00:00Z"));
}

#[test]
fn bad_lines_are_all_listed_and_nothing_is_applied() {
    let (_d, mut s) = temp_store();
    let text = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
not json
{"type":"workspace","id":"ws-1","channel":"msp-9","name":"X"}
{"type":"gadget","id":"g"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":"yes"}
{"type":"channel","id":"msp-2"}
{"type":"channel","id":"msp-3","name":"Y","at":"yesterday"}
{"type":"channel","id":"msp-4","name":"Z","colour":"red"}
{"type":"channel","id":5,"name":"Z"}
"#;
    let err = run(&mut s, text).unwrap_err();
    let ImportError::BadLines { lines, total } = &err else {
        panic!("{err}")
    };
    assert_eq!(*total, 8);
    let nums: Vec<usize> = lines.iter().map(|b| b.line).collect();
    assert_eq!(nums, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    let msg = err.to_string();
    assert!(
        msg.contains("line 3: workspace \"ws-1\" refers to channel \"msp-9\""),
        "{msg}"
    );
    assert!(msg.contains("line 6: missing field `name`"), "{msg}");
    assert!(msg.contains("line 7: \"at\""), "{msg}");
    assert!(msg.contains("line 8: unknown field `colour`"), "{msg}");
    assert!(
        msg.contains("line 4") && msg.contains("must be one of channel"),
        "{msg}"
    );
    // Line 1 was good but nothing was applied.
    assert_eq!(count(&s, "channels"), 0);
}

#[test]
fn a_unit_gets_its_ref_when_first_protected_and_keeps_it() {
    let (_d, mut s) = temp_store();
    run(&mut s, GOOD).unwrap();
    let refs = |s: &Store| -> Vec<(String, Option<i64>)> {
        s.conn()
            .prepare("SELECT id, ref FROM units ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // u-1 was protected (then not); d-1 never was.
    assert_eq!(
        refs(&s),
        vec![("d-1".to_string(), None), ("u-1".to_string(), Some(1))]
    );
    // A later import: d-1 is protected for the first time, u-1 again, and a new unit arrives.
    run(
        &mut s,
        r#"{"type":"device","workspace":"ws-1","id":"d-1","protected":true,"at":"2026-11-02T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-11-02T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-2","protected":true,"at":"2026-11-02T00:00:00Z"}
"#,
    )
    .unwrap();
    assert_eq!(
        refs(&s),
        vec![
            ("d-1".to_string(), Some(2)),
            ("u-1".to_string(), Some(1)),
            ("u-2".to_string(), Some(3))
        ]
    );
    let intervals = s.unit_intervals_for_test();
    let t = |x: &str| parse_rfc3339(x).unwrap();
    assert_eq!(
        intervals,
        vec![
            (
                1,
                t("2026-10-02T09:00:00Z"),
                Some(t("2026-10-20T09:00:00Z"))
            ),
            (1, t("2026-11-02T00:00:00Z"), None),
            (2, t("2026-11-02T00:00:00Z"), None),
            (3, t("2026-11-02T00:00:00Z"), None),
        ]
    );
}

#[test]
fn references_are_checked_by_the_import_and_foreign_keys_come_back_on() {
    let fk = |s: &Store| -> i64 {
        s.conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap()
    };
    let (_d, mut s) = temp_store();
    // SQLite's own check is off during an import, so the import's must catch every dangling
    // reference, in a file of many batches.
    let mut text = String::from(GOOD);
    for i in 0..3000 {
        text += &format!(
            "{{\"type\":\"device\",\"workspace\":\"ws-1\",\"id\":\"bulk-{i}\",\"protected\":true}}\n"
        );
    }
    text += r#"{"type":"device","workspace":"ws-404","id":"d-x","protected":true}
{"type":"module","workspace":"ws-404","module":"edr","enabled":true}
"#;
    let err = run(&mut s, &text).unwrap_err().to_string();
    assert!(err.contains("2 bad line(s)"), "{err}");
    assert!(
        err.contains("device refers to workspace \"ws-404\""),
        "{err}"
    );
    assert!(
        err.contains("module refers to workspace \"ws-404\""),
        "{err}"
    );
    assert_eq!(fk(&s), 1, "foreign keys are on again after a failed import");
    assert_eq!(count(&s, "units"), 0);
    let summary = run(&mut s, GOOD).unwrap();
    assert_eq!(summary.lines, 6);
    assert_eq!(fk(&s), 1, "and after a good one");
    let dangling: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0);
}

#[test]
fn a_bad_file_after_a_good_one_leaves_the_good_state() {
    let (_d, mut s) = temp_store();
    run(&mut s, GOOD).unwrap();
    let bad = r#"{"type":"workspace","id":"ws-2","channel":"msp-1","name":"Fabrikam"}
{"type":"user","workspace":"ws-2","id":"u-2","protected":true}
{"type":"user","workspace":"ws-3","id":"u-3","protected":true}
"#;
    let err = run(&mut s, bad).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    assert_eq!(count(&s, "workspaces"), 1);
    assert_eq!(count(&s, "units"), 2);
}

#[test]
fn older_contradicting_record_is_rejected_but_agreeing_one_is_accepted() {
    let (_d, mut s) = temp_store();
    run(&mut s, GOOD).unwrap();
    // u-1 was protected on 2026-10-10 in ws-1: agreeing, unchanged.
    let ok = r#"{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-10T00:00:00Z"}"#;
    assert_eq!(run(&mut s, ok).unwrap().unchanged, 1);
    // Claiming it was unprotected then contradicts history.
    let bad = r#"{"type":"user","workspace":"ws-1","id":"u-1","protected":false,"at":"2026-10-10T00:00:00Z"}"#;
    let err = run(&mut s, bad).unwrap_err().to_string();
    assert!(err.contains("older than the last change"), "{err}");
}

#[test]
fn same_instant_conflict_is_rejected() {
    let (_d, mut s) = temp_store();
    let text = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"A"}
{"type":"module","workspace":"ws-1","module":"m","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"module","workspace":"ws-1","module":"m","enabled":false,"at":"2026-10-01T00:00:00Z"}
"#;
    let err = run(&mut s, text).unwrap_err().to_string();
    assert!(
        err.contains("line 4") && err.contains("same instant"),
        "{err}"
    );
}

#[test]
fn unit_moves_between_workspaces_close_and_open_intervals() {
    let (_d, mut s) = temp_store();
    let text = r#"{"type":"channel","id":"c","name":"C"}
{"type":"workspace","id":"w1","channel":"c","name":"W1"}
{"type":"workspace","id":"w2","channel":"c","name":"W2"}
{"type":"device","workspace":"w1","id":"d","protected":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w2","id":"d","protected":true,"at":"2026-10-15T00:00:00Z"}
"#;
    run(&mut s, text).unwrap();
    let rows: Vec<(String, Option<i64>)> = s
        .conn()
        .prepare("SELECT workspace_id, to_at FROM unit_intervals ORDER BY from_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "w1");
    assert!(rows[0].1.is_some());
    assert_eq!(rows[1], ("w2".to_string(), None));
}

#[test]
fn hostile_values_are_rejected_with_reasons() {
    let (_d, mut s) = temp_store();
    let long = "x".repeat(10_000);
    let text = format!(
        "{{\"type\":\"channel\",\"id\":\"c\",\"name\":\"{long}\"}}\n{{\"type\":\"channel\",\"id\":\"c2\",\"name\":\"a\\nb\"}}\n{{\"type\":\"channel\",\"id\":\"../a/b\",\"name\":\"Quote \\\" and ünïcödé\"}}\n"
    );
    let err = run(&mut s, &text).unwrap_err().to_string();
    assert!(err.contains("line 1: \"name\" is longer than"), "{err}");
    assert!(
        err.contains("line 2: \"name\" contains control characters"),
        "{err}"
    );
    assert!(!err.contains("line 3"), "{err}");
}

#[test]
fn overlong_line_is_rejected_without_holding_it() {
    let (_d, mut s) = temp_store();
    let text = format!(
        "{}\n{{\"type\":\"channel\",\"id\":\"c\",\"name\":\"C\"}}\n",
        "x".repeat(MAX_LINE_BYTES * 3)
    );
    let err = run(&mut s, &text).unwrap_err().to_string();
    assert!(err.contains("line 1: line is longer"), "{err}");
    assert!(!err.contains("line 2"), "{err}");
}
