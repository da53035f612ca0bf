//! One time format: every instant in every `--json` output is an RFC 3339 UTC string (never epoch
//! milliseconds). The real binary after a sync against the stand-in.

use crate::common::*;

use serde_json::Value;

/// Every field named like an instant (`…_at`, `timestamp`) anywhere in `v`: null or RFC 3339 UTC.
/// Returns how many instants were checked.
fn check_times(v: &Value, path: &str, what: &str) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                let here = format!("{path}.{k}");
                let is_time = k.ends_with("_at") || k == "timestamp";
                match (is_time, x) {
                    (true, Value::Null) => 0,
                    (true, Value::String(s)) => {
                        chrono::DateTime::parse_from_rfc3339(s)
                            .unwrap_or_else(|e| panic!("{what} {here} = {s:?}: {e}"));
                        assert!(s.ends_with('Z'), "{what} {here} is not UTC: {s:?}");
                        1
                    }
                    (true, other) => panic!("{what} {here} is not an RFC 3339 string: {other}"),
                    (false, x) => check_times(x, &here, what),
                }
            })
            .sum(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| check_times(x, &format!("{path}[{i}]"), what))
            .sum(),
        _ => 0,
    }
}

#[test]
fn every_json_output_writes_instants_as_rfc3339_utc() {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(1, 1));
    e.connect("msp-a", "key-a");
    let out = e.run(&["sync", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut checked = 0;
    for args in [
        &["sync", "--json"][..],
        &["sync", "--dry-run", "--json"][..],
        &["connector", "list", "--json"][..],
        &["status", "--json"][..],
        &["history", "--json"][..],
        &["history", "--json", "--since-last-run"][..],
    ] {
        let out = e.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", stdout(&out)));
        checked += check_times(&v, "", &format!("{args:?}"));
    }
    // connector list: verified_at, last_success_at, token_set_at at least; status and history more.
    assert!(checked >= 10, "only {checked} instants seen");
    let list: Value =
        serde_json::from_slice(&e.run(&["connector", "list", "--json"]).stdout).unwrap();
    assert!(list[0]["token_set_at"].is_string(), "{list}");
}
