//! Unit tests of `store::counting`.

use super::*;
use crate::time::{parse_rfc3339, Month};
use crate::{import::import, Store};

fn t(s: &str) -> Millis {
    parse_rfc3339(s).unwrap()
}

fn store_with(lines: &str) -> (tempfile::TempDir, Store) {
    let (dir, mut s) = crate::temp_store();
    let head = r#"{"type":"channel","id":"c","name":"C","at":"2026-01-01T00:00:00Z"}
{"type":"workspace","id":"w1","channel":"c","name":"W1","at":"2026-01-01T00:00:00Z"}
{"type":"workspace","id":"w2","channel":"c","name":"W2","at":"2026-01-01T00:00:00Z"}
"#;
    import(
        &mut s,
        format!("{head}{lines}").as_bytes(),
        t("2027-06-01T00:00:00Z"), // imported after all the history it loads
    )
    .unwrap();
    (dir, s)
}

fn svcs() -> Vec<ServiceUnit> {
    vec![
        ServiceUnit::new("edr", UnitKind::Devices),
        ServiceUnit::new("mail", UnitKind::Users),
    ]
}

/// Counts of `month` of 2026, as a calendar month in `zone`, by `how`.
fn month(s: &Store, month: u32, zone: chrono_tz::Tz, how: MonthlyCount) -> Counts {
    let (a, b) = Month { year: 2026, month }.bounds(zone);
    count_month(s.conn(), &svcs(), a, b, how).unwrap()
}

fn fig(c: &Counts, ws: &str, m: &str) -> Option<u64> {
    c.figures
        .iter()
        .find(|f| f.workspace_id == ws && f.module == m)
        .map(|f| f.unit_count.whole_part())
}

const BASIC: &str = r#"{"type":"module","workspace":"w1","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"module","workspace":"w1","module":"mail","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d1","protected":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d2","protected":true,"at":"2026-10-05T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d3","protected":false,"at":"2026-10-05T00:00:00Z"}
{"type":"user","workspace":"w1","id":"u1","protected":true,"at":"2026-10-05T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d2","protected":false,"at":"2026-10-10T00:00:00Z"}
"#;

#[test]
fn peak_in_reads_ends_before_starts_at_one_instant() {
    let p = |from: Millis, to: Option<Millis>| Piece { from, to };
    let mut ev = Vec::new();
    // [0,10) and [10,20) touch but never overlap; the open one covers the whole span.
    let pieces = [p(0, Some(10)), p(10, Some(20)), p(-5, None)];
    assert_eq!(peak_in(&pieces, 0, 20, &mut ev), 2);
    // Two that overlap on [5,10), and one outside the span.
    let pieces = [p(0, Some(10)), p(5, None), p(30, None)];
    assert_eq!(peak_in(&pieces, 0, 20, &mut ev), 2);
    assert_eq!(peak_in(&pieces, 10, 20, &mut ev), 1);
    assert_eq!(peak_in(&[], 0, 20, &mut ev), 0);
}

#[test]
fn as_of_counts_only_protected_units_of_the_right_kind() {
    let (_d, s) = store_with(BASIC);
    let c = count_as_of(s.conn(), &svcs(), t("2026-10-06T00:00:00Z")).unwrap();
    assert_eq!(fig(&c, "w1", "edr"), Some(2));
    assert_eq!(fig(&c, "w1", "mail"), Some(1));
    // w2 has no module enabled: no figure, not zero.
    assert_eq!(fig(&c, "w2", "edr"), None);
    let c = count_as_of(s.conn(), &svcs(), t("2026-10-10T00:00:00Z")).unwrap();
    assert_eq!(fig(&c, "w1", "edr"), Some(1), "interval end is exclusive");
    // Before the module was enabled: nothing at all.
    let c = count_as_of(s.conn(), &svcs(), t("2026-09-30T00:00:00Z")).unwrap();
    assert!(c.figures.is_empty() && c.disabled.is_empty());
}

#[test]
fn enabled_module_without_units_counts_zero() {
    let (_d, s) = store_with(
        r#"{"type":"module","workspace":"w2","module":"mail","enabled":true,"at":"2026-10-01T00:00:00Z"}"#,
    );
    let c = count_as_of(s.conn(), &svcs(), t("2026-10-06T00:00:00Z")).unwrap();
    assert_eq!(fig(&c, "w2", "mail"), Some(0));
}

#[test]
fn disabled_module_gives_no_figure_and_is_listed() {
    let lines = format!(
        "{BASIC}{}\n",
        r#"{"type":"module","workspace":"w1","module":"edr","enabled":false,"at":"2026-10-20T00:00:00Z"}"#
    );
    let (_d, s) = store_with(&lines);
    let c = count_as_of(s.conn(), &svcs(), t("2026-10-21T00:00:00Z")).unwrap();
    assert_eq!(fig(&c, "w1", "edr"), None);
    assert_eq!(c.disabled, vec![("w1".to_string(), "edr".to_string())]);
    assert_eq!(fig(&c, "w1", "mail"), Some(1));
}

#[test]
fn month_peak_end_distinct_with_unit_protected_and_unprotected_within_the_month() {
    let (_d, s) = store_with(BASIC);
    let peak = month(&s, 10, chrono_tz::UTC, MonthlyCount::Peak);
    assert_eq!(fig(&peak, "w1", "edr"), Some(2)); // d1 + d2 between the 5th and the 10th
    let end = month(&s, 10, chrono_tz::UTC, MonthlyCount::End);
    assert_eq!(fig(&end, "w1", "edr"), Some(1));
    let distinct = month(&s, 10, chrono_tz::UTC, MonthlyCount::Distinct);
    assert_eq!(fig(&distinct, "w1", "edr"), Some(2));
}

#[test]
fn peak_is_the_highest_simultaneous_count_not_the_distinct_total() {
    // d1 protected 1st-5th, d2 5th-10th, d3 10th-: never more than one at a time.
    let lines = r#"{"type":"module","workspace":"w1","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d1","protected":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d1","protected":false,"at":"2026-10-05T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d2","protected":true,"at":"2026-10-05T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d2","protected":false,"at":"2026-10-10T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d3","protected":true,"at":"2026-10-10T00:00:00Z"}
"#;
    let (_d, s) = store_with(lines);
    let peak = month(&s, 10, chrono_tz::UTC, MonthlyCount::Peak);
    assert_eq!(fig(&peak, "w1", "edr"), Some(1));
    let distinct = month(&s, 10, chrono_tz::UTC, MonthlyCount::Distinct);
    assert_eq!(fig(&distinct, "w1", "edr"), Some(3));
}

#[test]
fn module_disabled_mid_month() {
    // Module on 1st-15th; d1 all month; d2 only from the 20th (module off by then).
    let lines = r#"{"type":"module","workspace":"w1","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"module","workspace":"w1","module":"edr","enabled":false,"at":"2026-10-15T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d1","protected":true,"at":"2026-09-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d2","protected":true,"at":"2026-10-20T00:00:00Z"}
"#;
    let (_d, s) = store_with(lines);
    let peak = month(&s, 10, chrono_tz::UTC, MonthlyCount::Peak);
    assert_eq!(fig(&peak, "w1", "edr"), Some(1));
    let distinct = month(&s, 10, chrono_tz::UTC, MonthlyCount::Distinct);
    assert_eq!(fig(&distinct, "w1", "edr"), Some(1));
    // At the month's end the module is off: no figure, listed as disabled.
    let end = month(&s, 10, chrono_tz::UTC, MonthlyCount::End);
    assert_eq!(fig(&end, "w1", "edr"), None);
    assert_eq!(end.disabled.len(), 1);
    // November: disabled the whole month.
    let nov = month(&s, 11, chrono_tz::UTC, MonthlyCount::Peak);
    assert!(nov.figures.is_empty());
    assert_eq!(nov.disabled, vec![("w1".to_string(), "edr".to_string())]);
}

#[test]
fn unit_moved_between_workspaces_counts_in_each_while_there() {
    let lines = r#"{"type":"module","workspace":"w1","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"module","workspace":"w2","module":"edr","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"d1","protected":true,"at":"2026-10-01T00:00:00Z"}
{"type":"device","workspace":"w2","id":"d1","protected":true,"at":"2026-10-15T00:00:00Z"}
"#;
    let (_d, s) = store_with(lines);
    let c = count_as_of(s.conn(), &svcs(), t("2026-10-20T00:00:00Z")).unwrap();
    assert_eq!(fig(&c, "w1", "edr"), Some(0));
    assert_eq!(fig(&c, "w2", "edr"), Some(1));
    let d = month(&s, 10, chrono_tz::UTC, MonthlyCount::Distinct);
    assert_eq!(fig(&d, "w1", "edr"), Some(1));
    assert_eq!(fig(&d, "w2", "edr"), Some(1));
}

#[test]
fn dst_month_boundaries_in_new_york() {
    // A device protected only during the first 3 UTC hours of 2026-11-01 — still October 31 in
    // New York (EDT, UTC-4) — and one protected in the last UTC hours of 2026-12-01 00:00-05:00,
    // i.e. still November there.
    let lines = r#"{"type":"module","workspace":"w1","module":"edr","enabled":true,"at":"2026-09-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"oct","protected":true,"at":"2026-11-01T00:00:00Z"}
{"type":"device","workspace":"w1","id":"oct","protected":false,"at":"2026-11-01T03:00:00Z"}
{"type":"device","workspace":"w1","id":"nov","protected":true,"at":"2026-12-01T01:00:00Z"}
{"type":"device","workspace":"w1","id":"nov","protected":false,"at":"2026-12-01T04:30:00Z"}
"#;
    let (_d, s) = store_with(lines);
    let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let oct = month(&s, 10, ny, MonthlyCount::Distinct);
    assert_eq!(fig(&oct, "w1", "edr"), Some(1));
    let nov = month(&s, 11, ny, MonthlyCount::Distinct);
    assert_eq!(fig(&nov, "w1", "edr"), Some(1));
    // In UTC months the same data falls the other way.
    let oct_utc = month(&s, 10, chrono_tz::UTC, MonthlyCount::Distinct);
    assert_eq!(fig(&oct_utc, "w1", "edr"), Some(0));
}
