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

const SNAP_RULES: SnapshotRules = SnapshotRules {
    max_shrink_percent: 50,
    allow_shrink: false,
};

fn snap(s: &mut Store, text: &str, rules: SnapshotRules) -> Result<ImportSummary, ImportError> {
    import_snapshot(
        s,
        text.as_bytes(),
        parse_rfc3339("2026-11-10T00:00:00Z").unwrap(),
        rules,
    )
}

/// Protected units now, per workspace and kind.
fn protected(s: &Store) -> Vec<(String, String, i64)> {
    let mut stmt = s
        .conn()
        .prepare("SELECT workspace_id, kind, COUNT(*) FROM units WHERE protected = 1 GROUP BY 1, 2 ORDER BY 1, 2")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn removed(s: &Store, ws: &str) -> Option<i64> {
    s.conn()
        .query_row(
            "SELECT removed_at FROM workspaces WHERE id = ?1",
            [ws],
            |r| r.get(0),
        )
        .unwrap()
}

fn enabled(s: &Store, ws: &str, module: &str) -> bool {
    s.conn()
        .query_row(
            "SELECT enabled FROM modules WHERE workspace_id = ?1 AND module = ?2",
            [ws, module],
            |r| r.get(0),
        )
        .unwrap()
}

/// Two channels: msp-1 (ws-1 with 4 users and 2 devices, ws-2 with 2 users), msp-2 (ws-3).
const TWO_CHANNELS: &str = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"channel","id":"msp-2","name":"Beta IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso"}
{"type":"workspace","id":"ws-2","channel":"msp-1","name":"Fabrikam"}
{"type":"workspace","id":"ws-3","channel":"msp-2","name":"Initech"}
{"type":"module","workspace":"ws-1","module":"edr","enabled":true}
{"type":"module","workspace":"ws-1","module":"email","enabled":true}
{"type":"module","workspace":"ws-2","module":"edr","enabled":true}
{"type":"module","workspace":"ws-3","module":"edr","enabled":true}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true}
{"type":"user","workspace":"ws-1","id":"u-2","protected":true}
{"type":"user","workspace":"ws-1","id":"u-3","protected":true}
{"type":"user","workspace":"ws-1","id":"u-4","protected":true}
{"type":"device","workspace":"ws-1","id":"d-1","protected":true}
{"type":"device","workspace":"ws-1","id":"d-2","protected":true}
{"type":"user","workspace":"ws-2","id":"u-5","protected":true}
{"type":"user","workspace":"ws-2","id":"u-6","protected":true}
{"type":"user","workspace":"ws-3","id":"u-7","protected":true}
"#;

/// msp-1's nightly export: u-4, d-2 and the email module left ws-1; ws-2 is unchanged.
const MSP1_SNAPSHOT: &str = r#"{"type":"snapshot","at":"2026-11-05T00:00:00Z"}
{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso"}
{"type":"workspace","id":"ws-2","channel":"msp-1","name":"Fabrikam"}
{"type":"module","workspace":"ws-1","module":"edr","enabled":true}
{"type":"module","workspace":"ws-2","module":"edr","enabled":true}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true}
{"type":"user","workspace":"ws-1","id":"u-2","protected":true}
{"type":"user","workspace":"ws-1","id":"u-3","protected":true}
{"type":"device","workspace":"ws-1","id":"d-1","protected":true}
{"type":"user","workspace":"ws-2","id":"u-5","protected":true}
{"type":"user","workspace":"ws-2","id":"u-6","protected":true}
"#;

#[test]
fn a_snapshot_unprotects_disables_and_leaves_other_channels_alone_and_twice_changes_nothing() {
    let (_d, mut s) = temp_store();
    run(&mut s, TWO_CHANNELS).unwrap();
    let sum = snap(&mut s, MSP1_SNAPSHOT, SNAP_RULES).unwrap();
    assert_eq!(
        sum.snapshot,
        Some(Implied {
            unprotected: 2,
            disabled: 1,
            removed: 0
        }),
        "{sum}"
    );
    assert!(sum.to_string().contains("2 unit(s) unprotected"), "{sum}");
    assert_eq!(
        protected(&s),
        [
            ("ws-1".to_string(), "devices".to_string(), 1),
            ("ws-1".into(), "users".into(), 3),
            ("ws-2".into(), "users".into(), 2),
            ("ws-3".into(), "users".into(), 1),
        ]
    );
    assert!(!enabled(&s, "ws-1", "email"));
    assert!(enabled(&s, "ws-3", "edr"), "msp-2 is not named: untouched");
    // At the header's instant, not the import's.
    let closed: i64 = s
        .conn()
        .query_row(
            "SELECT to_at FROM unit_intervals i JOIN units u ON u.ref = i.unit WHERE u.id = 'u-4'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(closed, parse_rfc3339("2026-11-05T00:00:00Z").unwrap());
    let again = snap(&mut s, MSP1_SNAPSHOT, SNAP_RULES).unwrap();
    assert_eq!(again.snapshot, Some(Implied::default()), "{again}");
    assert_eq!(again.applied.values().sum::<usize>(), 0, "{again}");
}

#[test]
fn a_workspace_the_snapshot_does_not_list_is_removed() {
    let (_d, mut s) = temp_store();
    run(&mut s, TWO_CHANNELS).unwrap();
    // ws-2 (2 of msp-1's 8 units, 1 of its 2 workspaces: 50%, at the limit) is gone.
    let without_ws2: String = MSP1_SNAPSHOT
        .lines()
        .filter(|l| !l.contains("ws-2"))
        .map(|l| format!("{l}\n"))
        .collect();
    let sum = snap(&mut s, &without_ws2, SNAP_RULES).unwrap();
    assert_eq!(sum.snapshot.map(|i| i.removed), Some(1), "{sum}");
    assert!(removed(&s, "ws-2").is_some());
    assert!(removed(&s, "ws-1").is_none());
}

#[test]
fn the_shrink_guard_refuses_a_truncated_export_naming_the_channel_and_allow_shrink_accepts_it() {
    let (_d, mut s) = temp_store();
    run(&mut s, TWO_CHANNELS).unwrap();
    // The export stopped after its second line: every unit of msp-1 would go.
    let truncated = MSP1_SNAPSHOT.lines().take(3).collect::<Vec<_>>().join("\n");
    let before = protected(&s);
    let e = snap(&mut s, &truncated, SNAP_RULES).unwrap_err();
    let ImportError::SnapshotShrink {
        channels,
        max_percent,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*max_percent, 50);
    assert_eq!(
        channels,
        &[Shrink {
            channel: "msp-1".into(),
            units: 8,
            units_dropped: 8,
            workspaces: 2,
            workspaces_dropped: 1,
        }]
    );
    let text = e.to_string();
    assert!(
        text.contains("\"msp-1\": 8 of 8 protected unit(s)") && text.contains("--allow-shrink"),
        "{text}"
    );
    assert_eq!(protected(&s), before, "nothing applied");
    let allowed = SnapshotRules {
        allow_shrink: true,
        ..SNAP_RULES
    };
    let sum = snap(&mut s, &truncated, allowed).unwrap();
    assert_eq!(sum.snapshot.map(|i| i.unprotected), Some(8), "{sum}");
}

#[test]
fn a_snapshot_header_is_a_bad_line_anywhere_but_first_and_in_a_records_import() {
    let (_d, mut s) = temp_store();
    let header = r#"{"type":"snapshot","at":"2026-11-05T00:00:00Z"}"#;
    let e = run(&mut s, &format!("{header}\n")).unwrap_err();
    assert!(e.to_string().contains("only as the first line"), "{e}");
    let late = format!("{}{header}\n", TWO_CHANNELS);
    let e = snap(&mut s, &late, SNAP_RULES).unwrap_err();
    assert!(e.to_string().contains("line 19"), "{e}");
}
