//! Property tests: arbitrary import lines and configuration files never panic, and every rejection
//! names its line (import) or key (configuration).

use std::time::Duration;

use gradient_connector::config::{Config, ConfigError};
use gradient_connector::domain::UnitKind;
use gradient_connector::store::import::{import, ImportError};
use gradient_connector::store::run_inputs::CountQuestion;
use gradient_connector::store::Store;
use gradient_connector_kit::Inventory as Records;
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() {
            f.to_string()
        } else {
            "1e999".into()
        }),
        ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"2026-10-01T00:00:00Z\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

fn record_line() -> impl Strategy<Value = String> {
    let ty = prop_oneof![
        Just("channel"),
        Just("workspace"),
        Just("module"),
        Just("user"),
        Just("device"),
        Just("gadget")
    ];
    let field = prop_oneof![
        Just("id"),
        Just("name"),
        Just("channel"),
        Just("workspace"),
        Just("module"),
        Just("enabled"),
        Just("protected"),
        Just("at"),
        Just("type"),
        Just("extra")
    ];
    (ty, proptest::collection::vec((field, json_value()), 0..7)).prop_map(|(ty, fields)| {
        let mut parts = vec![format!("\"type\":\"{ty}\"")];
        for (k, v) in fields {
            parts.push(format!("\"{k}\":{v}"));
        }
        format!("{{{}}}", parts.join(","))
    })
}

fn any_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => record_line(),
        1 => "[^\n]{0,40}",
        1 => Just(r#"{"type":"channel","id":"c1","name":"C"}"#.to_string()),
        1 => Just(r#"{"type":"workspace","id":"w1","channel":"c1","name":"W"}"#.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn import_never_panics_and_names_every_bad_line(lines in proptest::collection::vec(any_line(), 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
        let text = lines.join("\n");
        match import(&mut store, text.as_bytes(), 1_790_000_000_000) {
            Ok(summary) => prop_assert!(summary.lines <= lines.len()),
            Err(ImportError::BadLines { lines: bad, total }) => {
                prop_assert!(total >= 1 && bad.len() == total.min(1000));
                for b in &bad {
                    prop_assert!(b.line >= 1 && b.line <= lines.len(), "line {} of {}", b.line, lines.len());
                    prop_assert!(!b.reason.is_empty());
                }
                // Nothing applied.
                prop_assert_eq!(store.inventory_size().unwrap().channels, 0);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_import(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
        let _ = import(&mut store, bytes.as_slice(), 0);
    }
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9 /:._*-]{0,20}".prop_map(|s| format!("\"{s}\"")),
        Just("\"0 0 8 1 * *\"".to_string()),
        Just("\"America/New_York\"".to_string()),
        Just("\"security\"".to_string()),
        Just("[1, 2]".to_string()),
        Just("1.5".to_string()),
    ]
}

fn toml_file() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[gradient]"),
        Just("[store]"),
        Just("[schedule]"),
        Just("[log]"),
        Just("[[service]]"),
        Just("[weird]")
    ];
    let key = prop_oneof![
        Just("base_url"),
        Just("requests_per_second"),
        Just("max_in_flight"),
        Just("path"),
        Just("cron"),
        Just("timezone"),
        Just("cadence"),
        Just("catch_up"),
        Just("monthly_count"),
        Just("format"),
        Just("level"),
        Just("module"),
        Just("name"),
        Just("unit"),
        Just("category"),
        Just("subcategory"),
        Just("typo")
    ];
    proptest::collection::vec(
        (
            section,
            proptest::collection::btree_map(key, toml_value(), 0..5),
        ),
        0..6,
    )
    .prop_map(|sections| {
        let mut s = String::new();
        for (head, kv) in sections {
            s.push_str(head);
            s.push('\n');
            for (k, v) in kv {
                s.push_str(&format!("{k} = {v}\n"));
            }
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn config_never_panics_and_every_problem_names_a_key(text in prop_oneof![toml_file(), "[^\0]{0,200}"]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        match Config::load_with_env(&path, Default::default()) {
            Ok(_) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(!p.key.is_empty() && !p.message.is_empty(), "{:?}", p);
                }
            }
            Err(e @ ConfigError::Unreadable { .. }) => prop_assert!(e.to_string().contains("c.toml")),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}

/// A tiny reference model: state of the module and of each device, day by day.
#[derive(Debug, Clone)]
struct History {
    module: Vec<(u32, bool)>,       // (day, enabled), increasing days
    devices: Vec<Vec<(u32, bool)>>, // per device: (day, protected), increasing days
}

fn history() -> impl Strategy<Value = History> {
    let changes = || {
        proptest::collection::btree_map(0u32..50, any::<bool>(), 0..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
    };
    (changes(), proptest::collection::vec(changes(), 0..6))
        .prop_map(|(module, devices)| History { module, devices })
}

fn state_at(events: &[(u32, bool)], t: f64) -> bool {
    events
        .iter()
        .rfind(|(d, _)| (*d as f64) <= t)
        .is_some_and(|(_, on)| *on)
}

const BASE: &str = "2026-09-20";
/// Channels and workspaces exist from here on.
const YEAR_START: &str = "2026-01-01T00:00:00Z";
const OCT_START: f64 = 11.0; // 2026-10-01 is day 11 after 2026-09-20
const OCT_END: f64 = 42.0;

fn day(d: u32) -> String {
    let base = chrono::NaiveDate::parse_from_str(BASE, "%Y-%m-%d").unwrap();
    format!("{}T00:00:00Z", base + chrono::Duration::days(d as i64))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn monthly_peak_and_distinct_match_a_brute_force_model(h in history()) {
        let mut inv = Records::new();
        inv.at(YEAR_START).channel("c", "C").workspace("w", "c", "W");
        for (d, on) in &h.module {
            inv.at(&day(*d)).module("w", "m", *on);
        }
        for (i, events) in h.devices.iter().enumerate() {
            for (d, on) in events {
                inv.at(&day(*d)).device("w", &format!("d{i}"), *on);
            }
        }
        let text = inv.to_jsonl();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
        import(&mut store, text.as_bytes(), 0).unwrap();

        // Reference: every instant that matters is a whole day (or the window's start).
        let mut instants: Vec<f64> = vec![OCT_START];
        instants.extend((0..50).map(|d| d as f64).filter(|d| *d > OCT_START && *d < OCT_END));
        let mut peak: Option<u64> = None;
        let mut seen = std::collections::BTreeSet::new();
        for &t in &instants {
            if !state_at(&h.module, t) {
                continue;
            }
            let on: Vec<usize> = (0..h.devices.len()).filter(|i| state_at(&h.devices[*i], t)).collect();
            peak = Some(peak.unwrap_or(0).max(on.len() as u64));
            seen.extend(on);
        }
        let services = vec![gradient_connector::store::counting::ServiceUnit::new("m", gradient_connector::domain::UnitKind::Devices)];
        let (a, b) = gradient_connector::time::Month { year: 2026, month: 10 }.bounds(chrono_tz::UTC);
        for (how, want) in [
            (gradient_connector::domain::MonthlyCount::Peak, peak),
            (gradient_connector::domain::MonthlyCount::Distinct, peak.map(|_| seen.len() as u64)),
        ] {
            let got = store.count(&services, CountQuestion::Month { from: a, to: b, how }).unwrap();
            let got = got.figures.first().map(|f| f.unit_count.whole_part());
            prop_assert_eq!(got, want, "{:?} for {:?}", how, h);
        }
    }
}

/// Several workspaces, both unit kinds, units moving between workspaces, modules switched on and off.
#[derive(Debug, Clone)]
struct Inventory {
    /// Per (workspace, module): (day, enabled), increasing days.
    modules: Vec<Vec<(u32, bool)>>,
    /// Per unit: is it a device, and its moves.
    units: Vec<(bool, Moves)>,
}

/// (day, workspace the unit is protected in, or None), increasing days.
type Moves = Vec<(u32, Option<usize>)>;

const WORKSPACES: usize = 3;
const MODULES: [(&str, gradient_connector::domain::UnitKind); 2] = [
    ("edr", gradient_connector::domain::UnitKind::Devices),
    ("mail", gradient_connector::domain::UnitKind::Users),
];

fn inventory() -> impl Strategy<Value = Inventory> {
    let switches = proptest::collection::btree_map(0u32..50, any::<bool>(), 0..4)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    let moves =
        proptest::collection::btree_map(0u32..50, proptest::option::of(0..WORKSPACES), 0..5)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        proptest::collection::vec(switches, WORKSPACES * MODULES.len()),
        proptest::collection::vec((any::<bool>(), moves), 0..10),
    )
        .prop_map(|(modules, units)| Inventory { modules, units })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// The streamed sweep that computes `peak` agrees with the same figures stated as one SQL
    /// statement (`month_query`, which the test above checks against a brute-force model).
    #[test]
    fn monthly_peak_sweep_matches_the_sql_statement(inv in inventory()) {
        use gradient_connector::store::counting::ServiceUnit;
        let mut records = Records::new();
        records.at(YEAR_START).channel("c", "C");
        for w in 0..WORKSPACES {
            records.workspace(&format!("w{w}"), "c", "W");
        }
        for (i, switches) in inv.modules.iter().enumerate() {
            let (w, (module, _)) = (i / MODULES.len(), MODULES[i % MODULES.len()]);
            for (d, on) in switches {
                records.at(&day(*d)).module(&format!("w{w}"), module, *on);
            }
        }
        for (i, (device, moves)) in inv.units.iter().enumerate() {
            let kind = if *device { UnitKind::Devices } else { UnitKind::Users };
            // An unprotected record still names a workspace: the last one the unit was in.
            let mut last = 0;
            for (d, w) in moves {
                last = w.unwrap_or(last);
                records.at(&day(*d)).unit(kind, &format!("w{last}"), &format!("u{i}"), w.is_some());
            }
        }
        let text = records.to_jsonl();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
        import(&mut store, text.as_bytes(), 0).unwrap();
        let services: Vec<ServiceUnit> = MODULES
            .iter()
            .map(|(m, u)| ServiceUnit::new(*m, *u))
            .collect();
        let (a, b) = gradient_connector::time::Month { year: 2026, month: 10 }.bounds(chrono_tz::UTC);
        let question = CountQuestion::Month { from: a, to: b, how: gradient_connector::domain::MonthlyCount::Peak };
        let mut got: Vec<(String, String, u64)> = store
            .count(&services, question)
            .unwrap()
            .figures
            .into_iter()
            .map(|f| (f.workspace_id, f.module, f.unit_count.whole_part()))
            .collect();
        got.sort();
        let want = store.count_by_statement(&services, question).unwrap();
        prop_assert_eq!(got, want, "{:?}", inv);
    }
}
