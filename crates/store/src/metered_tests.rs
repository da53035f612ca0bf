//! Unit tests of `store::metered`: the worked month, the rules against a brute-force model, and
//! usage records through the import into counts.

use proptest::prelude::*;

use super::*;
use crate::counting::{count_as_of, count_month};
use crate::domain::UnitKind;
use crate::import::{import, ImportError};
use crate::time::{parse_rfc3339, Month};
use crate::Store;

#[test]
fn the_rules_on_a_worked_month() {
    // Month [0, 100): 10 from 0, 40 from 30, 20 from 60; enabled [0, 50) and [70, 100).
    let samples = [(0, 10), (30, 40), (60, 20)];
    let on = [(0, 50), (70, 100)];
    assert_eq!(
        quantity_over(&samples, &on, 0, 100, MonthlyCount::Peak),
        Some(40)
    );
    assert_eq!(
        quantity_over(&samples, &on, 0, 100, MonthlyCount::End),
        Some(20)
    );
    // 10×30 + 40×20 + 20×30 = 1,700 over 100.
    assert_eq!(
        quantity_over(&samples, &on, 0, 100, MonthlyCount::Average),
        Some(17)
    );
    // A sample while disabled (40 from 30) does not count for a stretch starting later...
    assert_eq!(
        quantity_over(&samples, &[(65, 100)], 0, 100, MonthlyCount::Peak),
        Some(20)
    );
    // ...and never enabled: no figure.
    assert_eq!(
        quantity_over(&samples, &[], 0, 100, MonthlyCount::Peak),
        None
    );
    // Before the first sample the quantity is 0; the average rounds up.
    assert_eq!(
        quantity_over(&[(50, 3)], &[(0, 100)], 0, 100, MonthlyCount::Average),
        Some(2)
    );
}

/// The brute-force model: every instant of the month, one at a time.
fn model(
    samples: &[Sample],
    on: &[(Millis, Millis)],
    end: Millis,
    how: MonthlyCount,
) -> Option<u64> {
    let enabled = |t: Millis| on.iter().any(|&(f, to)| f <= t && t < to);
    let value = |t: Millis| {
        samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(_, q)| *q)
            .unwrap_or(0)
    };
    if !(0..end).any(enabled) {
        return None;
    }
    Some(match how {
        MonthlyCount::End => {
            if !enabled(end - 1) {
                return None;
            }
            value(end - 1)
        }
        MonthlyCount::Average => {
            let area: u64 = (0..end).filter(|t| enabled(*t)).map(value).sum();
            area.div_ceil(end as u64)
        }
        _ => (0..end)
            .filter(|t| enabled(*t))
            .map(value)
            .max()
            .unwrap_or(0),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn the_rules_match_the_brute_force_model(
        mut times in proptest::collection::btree_set(-20i64..60, 0..8),
        values in proptest::collection::vec(0u64..1_000_000_000, 8),
        cuts in proptest::collection::btree_set(-10i64..70, 0..6),
    ) {
        let samples: Vec<Sample> = std::mem::take(&mut times).into_iter().zip(values).collect();
        // Enabled stretches from sorted cut points, paired up (disjoint, as module intervals are).
        let cuts: Vec<Millis> = cuts.into_iter().collect();
        let on: Vec<(Millis, Millis)> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0], c[1])).collect();
        let clipped: Vec<(Millis, Millis)> = on.iter().map(|&(f, t)| (f.max(0), t.min(50))).collect();
        // The store hands the rule the samples from the one in force at the month's start.
        let first = samples.partition_point(|(at, _)| *at <= 0).saturating_sub(1);
        for how in [MonthlyCount::Peak, MonthlyCount::End, MonthlyCount::Average] {
            prop_assert_eq!(
                quantity_over(&samples[first..], &on, 0, 50, how),
                model(&samples, &clipped, 50, how),
                "{:?} samples {:?} on {:?}", how, samples, on
            );
        }
    }
}

fn t(s: &str) -> Millis {
    parse_rfc3339(s).unwrap()
}

const HEAD: &str = r#"{"type":"channel","id":"c","name":"C","at":"2026-01-01T00:00:00Z"}
{"type":"workspace","id":"w1","channel":"c","name":"W1","at":"2026-01-01T00:00:00Z"}
{"type":"workspace","id":"w2","channel":"c","name":"W2","at":"2026-01-01T00:00:00Z"}
"#;

fn store_with(lines: &str) -> (tempfile::TempDir, Store) {
    let (dir, mut s) = crate::temp_store();
    import(
        &mut s,
        format!("{HEAD}{lines}").as_bytes(),
        t("2027-06-01T00:00:00Z"),
    )
    .unwrap();
    (dir, s)
}

fn backup(decimals: u8, monthly: Option<MonthlyCount>) -> Vec<ServiceUnit> {
    vec![ServiceUnit {
        monthly,
        decimals,
        ..ServiceUnit::new("backup", UnitKind::Quantity)
    }]
}

fn figure_of(figures: &[Figure], ws: &str) -> Option<String> {
    figures
        .iter()
        .find(|f| f.workspace_id == ws)
        .map(|f| f.unit_count.to_string())
}

/// w1: backup enabled from Oct 1; 100 GB from Oct 1, 512.25 from Oct 16, 300.001 from Nov 1.
/// w2: 40 GB of usage, but backup never enabled (no figure, never a zero).
const OCTOBER: &str = r#"{"type":"module","workspace":"w1","module":"backup","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"usage","workspace":"w1","module":"backup","quantity":100,"at":"2026-10-01T00:00:00Z"}
{"type":"usage","workspace":"w1","module":"backup","quantity":512.25,"at":"2026-10-16T00:00:00Z"}
{"type":"usage","workspace":"w1","module":"backup","quantity":300.001,"at":"2026-11-01T00:00:00Z"}
{"type":"usage","workspace":"w2","module":"backup","quantity":40,"at":"2026-10-01T00:00:00Z"}
"#;

#[test]
fn usage_records_count_daily_and_by_each_monthly_rule() {
    let (_d, s) = store_with(OCTOBER);
    let daily = |at: &str, decimals| count_as_of(s.conn(), &backup(decimals, None), t(at)).unwrap();
    assert_eq!(
        figure_of(&daily("2026-10-10T00:00:00Z", 2).figures, "w1").as_deref(),
        Some("100")
    );
    assert_eq!(
        figure_of(&daily("2026-10-20T00:00:00Z", 2).figures, "w1").as_deref(),
        Some("512.25")
    );
    // Rounded up to the service's decimals.
    assert_eq!(
        figure_of(&daily("2026-11-02T00:00:00Z", 2).figures, "w1").as_deref(),
        Some("300.01")
    );
    assert_eq!(
        figure_of(&daily("2026-11-02T00:00:00Z", 0).figures, "w1").as_deref(),
        Some("301")
    );
    assert_eq!(
        figure_of(&daily("2026-11-02T00:00:00Z", 6).figures, "w1").as_deref(),
        Some("300.001")
    );
    // Never enabled: no figure for w2.
    assert_eq!(
        figure_of(&daily("2026-10-20T00:00:00Z", 2).figures, "w2"),
        None
    );

    let (a, b) = Month {
        year: 2026,
        month: 10,
    }
    .bounds(chrono_tz::UTC);
    let month = |how| count_month(s.conn(), &backup(2, None), a, b, how).unwrap();
    assert_eq!(
        figure_of(&month(MonthlyCount::Peak).figures, "w1").as_deref(),
        Some("512.25")
    );
    assert_eq!(
        figure_of(&month(MonthlyCount::End).figures, "w1").as_deref(),
        Some("512.25")
    );
    // 15 days at 100 and 16 at 512.25 over 31 days: 9,696 / 31 = 312.774… → 312.78.
    assert_eq!(
        figure_of(&month(MonthlyCount::Average).figures, "w1").as_deref(),
        Some("312.78")
    );
    // A service's own rule wins over the run's.
    let own = count_month(
        s.conn(),
        &backup(2, Some(MonthlyCount::Average)),
        a,
        b,
        MonthlyCount::Peak,
    )
    .unwrap();
    assert_eq!(figure_of(&own.figures, "w1").as_deref(), Some("312.78"));
}

#[test]
fn a_disabled_metered_module_is_listed_disabled_with_no_figure() {
    let (_d, s) = store_with(&format!(
        "{OCTOBER}{}\n",
        r#"{"type":"module","workspace":"w1","module":"backup","enabled":false,"at":"2026-10-20T00:00:00Z"}"#
    ));
    let c = count_as_of(s.conn(), &backup(2, None), t("2026-10-25T00:00:00Z")).unwrap();
    assert!(c.figures.is_empty(), "{:?}", c.figures);
    assert_eq!(c.disabled, vec![("w1".to_string(), "backup".to_string())]);
    // In October it was enabled for a while: peak over that stretch only.
    let (a, b) = Month {
        year: 2026,
        month: 10,
    }
    .bounds(chrono_tz::UTC);
    let m = count_month(s.conn(), &backup(2, None), a, b, MonthlyCount::Peak).unwrap();
    assert_eq!(figure_of(&m.figures, "w1").as_deref(), Some("512.25"));
}

#[test]
fn bad_usage_lines_are_named_and_the_same_sample_again_is_unchanged() {
    let (_d, mut s) = store_with(OCTOBER);
    let bad = [
        (
            r#"{"type":"usage","workspace":"w1","module":"backup","quantity":-1}"#,
            "non-negative number",
        ),
        (
            r#"{"type":"usage","workspace":"w1","module":"backup","quantity":"12"}"#,
            "non-negative number",
        ),
        (
            r#"{"type":"usage","workspace":"w1","module":"backup","quantity":null}"#,
            "non-negative number",
        ),
        (
            r#"{"type":"usage","workspace":"w1","module":"backup"}"#,
            "missing field `quantity`",
        ),
        (
            r#"{"type":"usage","workspace":"nope","module":"backup","quantity":1}"#,
            "workspace \"nope\"",
        ),
        (
            r#"{"type":"usage","workspace":"w1","module":"backup","quantity":7,"at":"2026-10-01T00:00:00Z"}"#,
            "another record for the same instant",
        ),
    ];
    for (line, why) in bad {
        match import(&mut s, line.as_bytes(), t("2027-06-01T00:00:00Z")) {
            Err(ImportError::BadLines { lines, .. }) => {
                assert!(lines[0].reason.contains(why), "{line}: {:?}", lines[0]);
            }
            other => panic!("{line}: {other:?}"),
        }
    }
    let again = import(&mut s, OCTOBER.as_bytes(), t("2027-06-01T00:00:00Z")).unwrap();
    assert_eq!(again.unchanged, 5, "{again:?}");
}
