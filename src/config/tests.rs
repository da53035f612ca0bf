//! Tests of configuration loading: every problem names its key.

use super::*;

const GOOD: &str = r#"
[gradient]
base_url = "http://127.0.0.1:9"
vendor_api_key_file = "key"
[store]
path = "store.db"
[schedule]
cadence = "monthly"
cron = "0 0 8 1 * *"
timezone = "America/New_York"
[[service]]
module = "edr"
name = "EDR"
unit = "devices"
category = "security"
subcategory = "endpoint detection and response (EDR)"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = Config::load_with_env(&path, env);
    (dir, r)
}

fn problems(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
    match load(text, env).1 {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn has(problems: &[Problem], key: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.key == key && p.message.contains(needle))
}

#[test]
fn good_config_loads_with_defaults_and_relative_paths() {
    let (dir, r) = load(GOOD, &[]);
    let c = r.unwrap();
    assert_eq!(c.schedule.cadence, Cadence::Monthly);
    assert_eq!(c.schedule.timezone, chrono_tz::America::New_York);
    assert_eq!(c.gradient.client.requests_per_second, 90);
    assert_eq!(c.gradient.client.max_attempts, 6);
    assert_eq!(c.schedule.monthly_count, MonthlyCount::Peak);
    assert_eq!(c.store.path, dir.path().join("store.db"));
    assert_eq!(c.services[0].unit, UnitKind::Devices);
    assert_eq!(c.services[0].description, "EDR");
}

#[test]
fn environment_overrides_keys_and_numbers_keep_leading_zeros_as_text() {
    let (_d, r) = load(
        GOOD,
        &[
            ("GRADIENT_CONNECTOR__SCHEDULE__TIMEZONE", "UTC"),
            ("GRADIENT_CONNECTOR__GRADIENT__REQUESTS_PER_SECOND", "50"),
            ("GRADIENT_CONNECTOR__STORE__PATH", "/tmp/00123.db"),
        ],
    );
    let c = r.unwrap();
    assert_eq!(c.schedule.timezone, chrono_tz::UTC);
    assert_eq!(c.gradient.client.requests_per_second, 50);
    assert_eq!(c.store.path, PathBuf::from("/tmp/00123.db"));
}

#[test]
fn every_problem_is_collected_and_names_its_key() {
    let text = r#"
colour = "blue"
[gradient]
base_url = "http://gradient.example.com"
requests_per_second = 150
max_in_flight = "many"
typo_key = 1
[schedule]
cron = "0 2 * * *"
timezone = "Mars/Olympus"
catch_up = "maybe"
monthly_count = "avg"
[log]
format = "xml"
[[service]]
module = "edr"
name = "EDR"
unit = "seats"
category = "Security"
subcategory = "edr"
[[service]]
module = "edr"
name = "EDR"
unit = "users"
category = "security"
subcategory = "email security"
"#;
    let p = problems(text, &[]);
    assert!(has(&p, "colour", "unknown"), "{p:?}");
    assert!(has(&p, "gradient.base_url", "https"), "{p:?}");
    assert!(
        has(&p, "gradient.requests_per_second", "between 1 and 100"),
        "{p:?}"
    );
    assert!(has(&p, "gradient.max_in_flight", "whole number"), "{p:?}");
    assert!(has(&p, "gradient.typo_key", "unknown key"), "{p:?}");
    assert!(
        has(&p, "schedule.cron", "6") || has(&p, "schedule.cron", "fields"),
        "{p:?}"
    );
    assert!(has(&p, "schedule.timezone", "IANA"), "{p:?}");
    assert!(has(&p, "schedule.catch_up", "true or false"), "{p:?}");
    assert!(has(&p, "schedule.monthly_count", "peak"), "{p:?}");
    assert!(has(&p, "log.format", "text"), "{p:?}");
    assert!(has(&p, "service[0].unit", "users"), "{p:?}");
    assert!(has(&p, "service[0].category", "case-sensitive"), "{p:?}");
    assert!(has(&p, "service[0].subcategory", "subcategory"), "{p:?}");
    assert!(has(&p, "service[1].module", "duplicate"), "{p:?}");
    assert!(has(&p, "service[1].name", "duplicate"), "{p:?}");
    assert_eq!(p.len(), 15, "{p:#?}");
}

#[test]
fn wrong_types_and_missing_fields_are_named() {
    let text = r#"
[store]
path = 5
[[service]]
name = "X"
unit = "users"
category = "backup"
"#;
    let p = problems(text, &[]);
    assert!(has(&p, "store.path", "must be a string"), "{p:?}");
    assert!(has(&p, "service[0].module", "missing"), "{p:?}");
    assert!(has(&p, "service[0].subcategory", "missing"), "{p:?}");
}

#[test]
fn odd_keys_are_named_quoted() {
    // Found by the config_loader fuzz target: an empty quoted key.
    let p = problems("''='[}'\n[log]\n\"a b\" = 1\n", &[]);
    assert!(has(&p, "\"\"", "unknown"), "{p:?}");
    assert!(has(&p, "log.\"a b\"", "unknown key"), "{p:?}");
    assert!(p.iter().all(|x| !x.key.is_empty()));
}

#[test]
fn no_service_is_a_problem() {
    let p = problems("[schedule]\ncadence = \"daily\"\n", &[]);
    assert!(has(&p, "service", "no [[service]]"), "{p:?}");
}

#[test]
fn loopback_http_is_allowed_and_other_schemes_are_not() {
    for (url, ok) in [
        ("http://127.0.0.1:8080", true),
        ("http://localhost:1", true),
        ("http://[::1]:1", true),
        ("https://app.usegradient.com", true),
        ("http://10.0.0.1", false),
        ("ftp://127.0.0.1", false),
    ] {
        let text = GOOD.replace("http://127.0.0.1:9", url);
        let (_d, r) = load(&text, &[]);
        assert_eq!(r.is_ok(), ok, "{url}: {r:?}");
    }
}

#[test]
fn vendor_key_is_loaded_trimmed_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, r) = load(GOOD, &[]);
    let c = r.unwrap();
    let key = dir.path().join("key");
    // Missing file.
    let (p, _) = c.check_vendor_key();
    assert!(
        has(&p, "gradient.vendor_api_key_file", "cannot read"),
        "{p:?}"
    );
    // Empty file.
    std::fs::write(&key, "  \n").unwrap();
    let (p, _) = c.check_vendor_key();
    assert!(has(&p, "gradient.vendor_api_key_file", "empty"), "{p:?}");
    // Good key, but readable by others: a warning that never shows the key.
    std::fs::write(&key, "s3cret-vendor-key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (p, w) = c.check_vendor_key();
    assert!(p.is_empty(), "{p:?}");
    assert!(
        has(&w, "gradient.vendor_api_key_file", "chmod 600"),
        "{w:?}"
    );
    assert!(!format!("{w:?}").contains("s3cret"));
    use secrecy::ExposeSecret;
    assert_eq!(
        c.load_vendor_key().unwrap().expose_secret(),
        "s3cret-vendor-key"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, w) = c.check_vendor_key();
    assert!(w.is_empty());
}
