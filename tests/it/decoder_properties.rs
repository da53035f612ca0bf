//! Fuzzing the decoders of Gradient's answers (catalogue, accounts, organization) as the import
//! parser is fuzzed in `tests/properties.rs`: arbitrary JSON built from the words Gradient uses,
//! and arbitrary bytes, never panic; each answer is either a typed error or a value that satisfies
//! the strictness rules (a catalogue only from a `skus` list whose entries have ids and names, an
//! account list only from a list, an integration only from an object, never from an error object).

use gradient_connector::gradient::answer::{
    accounts_answer, error_in_body, integration_answer, vendor_answer,
};
use gradient_connector::gradient::ErrorKind;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const CASES: u32 = 2048;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("data"),
        Just("skus"),
        Just("id"),
        Just("_id"),
        Just("name"),
        Just("status"),
        Just("statusCode"),
        Just("message"),
        Just("accounts"),
        Just("organizationId"),
        Just("isMapped"),
        Just("lastSyncedAt"),
        Just("extra"),
    ]
    .prop_map(str::to_string)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (100u64..600).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("   ")),
        Just(json!("1900-01-01T00:00:00.000Z")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An id or name as Gradient might send it (mostly plausible, sometimes not).
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => "[a-z0-9]{1,6}".prop_map(|s| Some(json!(s))),
        1 => leaf().prop_map(Some),
        1 => Just(None),
    ]
}

/// Answers shaped like the real ones (a catalogue, an account list, an integration), wrapped or
/// bare, with fields that may be missing, null or of the wrong type.
fn shaped() -> impl Strategy<Value = Value> {
    let entry = (field(), field(), field(), field())
        .prop_map(|(id, legacy, name, org)| {
            let mut m = Map::new();
            for (k, v) in [
                ("id", id),
                ("_id", legacy),
                ("name", name),
                ("organizationId", org),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
        .boxed();
    let list = proptest::collection::vec(entry.clone(), 0..5)
        .prop_map(Value::Array)
        .boxed();
    let inner = prop_oneof![
        list.clone().prop_map(|l| json!({"name": "Us", "skus": l})),
        list.clone().prop_map(|l| json!({"accounts": l})),
        list,
        entry,
        leaf(),
    ];
    (inner, 0..4u8, value()).prop_map(|(inner, wrap, extra)| match wrap {
        0 => inner,
        1 => json!({"status": 200, "message": "ok", "data": inner}),
        2 => json!({"data": inner}),
        _ => json!({"statusCode": 503, "message": extra, "data": inner}),
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => shaped().prop_map(|v| v.to_string().into_bytes()),
        3 => value().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => "[^\0]{0,60}".prop_map(String::into_bytes),
    ]
}

/// `{status, message, data}` or `{data}` → data (as the decoders unwrap), when `keep` is absent.
fn unwrapped(v: &Value, keep: &str) -> Value {
    match v {
        Value::Object(m) if m.contains_key("data") && !m.contains_key(keep) => m["data"].clone(),
        other => other.clone(),
    }
}

fn parsed(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, .. ProptestConfig::default() })]

    #[test]
    fn catalogue_answers_are_strict(bytes in body()) {
        match vendor_answer(&bytes) {
            Ok(vendor) => {
                let v = parsed(&bytes).expect("only JSON decodes");
                prop_assert!(error_in_body(&v).is_none(), "an error object is never a catalogue");
                let inner = unwrapped(&v, "skus");
                prop_assert!(inner.get("skus").is_some_and(Value::is_array), "a skus list");
                prop_assert_eq!(inner["skus"].as_array().map(Vec::len), Some(vendor.skus.len()));
                for s in &vendor.skus {
                    prop_assert!(!s.id.trim().is_empty() && !s.name.trim().is_empty(), "{:?}", s);
                }
            }
            Err(e) => prop_assert!(e.kind == ErrorKind::Decode, "{:?}", e),
        }
    }

    #[test]
    fn account_answers_are_lists_or_errors(bytes in body()) {
        match accounts_answer(&bytes) {
            Ok(accounts) => {
                let v = parsed(&bytes).expect("only JSON decodes");
                prop_assert!(error_in_body(&v).is_none());
                let inner = unwrapped(&v, "accounts");
                let list = inner.as_array().or_else(|| inner.get("accounts").and_then(Value::as_array));
                prop_assert!(list.is_some(), "only a list is an account list: {}", v);
                prop_assert!(accounts.len() <= list.map(Vec::len).unwrap_or(0));
            }
            Err(e) => prop_assert!(e.kind == ErrorKind::Decode, "{:?}", e),
        }
    }

    #[test]
    fn organization_answers_are_objects_or_errors(bytes in body()) {
        match integration_answer(&bytes) {
            Ok(_) => {
                let v = parsed(&bytes).expect("only JSON decodes");
                prop_assert!(error_in_body(&v).is_none());
                prop_assert!(unwrapped(&v, "organizationId").is_object(), "{}", v);
            }
            Err(e) => prop_assert!(e.kind == ErrorKind::Decode, "{:?}", e),
        }
    }
}
