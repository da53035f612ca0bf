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
fn a_relative_unix_socket_resolves_against_the_configurations_directory() {
    let (dir, r) = load(
        &format!("{GOOD}[api]\nlisten = \"unix:run/api.sock\"\n"),
        &[],
    );
    let c = r.unwrap();
    assert_eq!(
        c.api.listen,
        ApiListen::Unix(dir.path().join("run/api.sock"))
    );
    assert_eq!(c.inventory.max_snapshot_shrink_percent, 50);
    let (_d, r) = load(
        &format!("{GOOD}[api]\nlisten = \"unix:/run/x.sock\"\n"),
        &[],
    );
    assert_eq!(
        r.unwrap().api.listen,
        ApiListen::Unix(PathBuf::from("/run/x.sock"))
    );
    assert!(has(
        &problems(&format!("{GOOD}[api]\nlisten = \"unix:\"\n"), &[]),
        "api.listen",
        "needs a path"
    ));
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
    // An entry is named by its index and its module.
    assert!(
        has(&p, "service[0] (module \"edr\").unit", "users"),
        "{p:?}"
    );
    assert!(
        has(&p, "service[0] (module \"edr\").category", "case-sensitive"),
        "{p:?}"
    );
    assert!(
        has(&p, "service[0] (module \"edr\").subcategory", "subcategory"),
        "{p:?}"
    );
    assert!(
        has(&p, "service[1] (module \"edr\").module", "duplicate"),
        "{p:?}"
    );
    assert!(
        has(&p, "service[1] (module \"edr\").name", "duplicate"),
        "{p:?}"
    );
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

const MINIMAL: &str = r#"
[[service]]
module = "edr"
name = "EDR"
unit = "users"
category = "backup"
subcategory = "cloud backup"
"#;

#[test]
fn every_default_passes_its_own_check_and_lands_in_its_field() {
    for k in KEYS {
        if let Fallback::Value(text) = k.default {
            let read = k
                .kind
                .read(config::ValueKind::String(text.into()), Path::new("/"));
            assert!(read.is_ok(), "{}.{}: {read:?}", k.section, k.name);
        }
    }
    let (_d, r) = load(MINIMAL, &[]);
    let c = r.unwrap();
    let g = &c.gradient.client;
    assert_eq!(g.base_url.as_str(), "https://app.usegradient.com/");
    assert_eq!(
        (g.requests_per_second, g.max_in_flight, g.max_attempts),
        (90, 64, 6)
    );
    assert_eq!(g.request_timeout, Duration::from_secs(30));
    assert_eq!(g.retry_initial_delay, Duration::from_millis(500));
    assert_eq!(g.retry_max_delay, Duration::from_secs(30));
    assert_eq!(
        c.gradient.vendor_api_key_file,
        PathBuf::from("/etc/gradient-connector/vendor-api-key")
    );
    assert_eq!(
        c.store.path,
        PathBuf::from("/var/lib/gradient-connector/store.db")
    );
    assert_eq!(c.store.busy_timeout, Duration::from_secs(30));
    let s = &c.schedule;
    assert_eq!(
        (s.cadence, s.cron.as_str()),
        (Cadence::Daily, "0 0 2 * * *")
    );
    assert_eq!((s.timezone, s.catch_up), (chrono_tz::UTC, true));
    assert_eq!(s.monthly_count, MonthlyCount::Peak);
    assert_eq!(
        (c.log.format, c.log.level.as_str()),
        (LogFormat::Text, "info")
    );
    let svc = &c.services[0];
    assert_eq!(
        (svc.unit, svc.description.as_str()),
        (UnitKind::Users, "EDR")
    );
    assert_eq!((&svc.support_article, &svc.support_contact), (&None, &None));
}

#[test]
fn the_schedule_is_parsed_once_at_load() {
    let (_d, r) = load(GOOD, &[]);
    let c = r.unwrap();
    assert_eq!(c.schedule.parsed.expr(), c.schedule.cron);
    assert_eq!(c.schedule.parsed.tz(), c.schedule.timezone);
    let from = crate::time::parse_rfc3339("2026-10-15T00:00:00Z").unwrap();
    let next = c.schedule.parsed.next_after(from).unwrap();
    assert_eq!(crate::time::format_ms(next), "2026-11-01T13:00:00Z");
}

#[test]
fn the_table_declares_each_key_once_and_documents_its_words() {
    let mut seen = std::collections::HashSet::new();
    for k in KEYS {
        assert!(
            seen.insert((k.section, k.name)),
            "{}.{} twice",
            k.section,
            k.name
        );
        assert!(!k.doc.contains('|') && !k.doc.contains('\n'), "{}", k.name);
        if let Kind::Word(words) = k.kind {
            for w in words() {
                assert!(
                    k.doc.contains(&format!("`{w}`")),
                    "{}.{}: the doc does not name `{w}`",
                    k.section,
                    k.name
                );
            }
        }
        if let Fallback::SameAs(other) = k.default {
            assert!(KEYS
                .iter()
                .any(|o| o.section == k.section && o.name == other));
        }
    }
    assert_eq!(LogFormat::words(), &["text", "json"]);
    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
}

#[test]
fn words_read_through_the_environment_and_problems_list_the_table() {
    let (_d, r) = load(
        MINIMAL,
        &[
            ("GRADIENT_CONNECTOR__LOG__FORMAT", "json"),
            ("GRADIENT_CONNECTOR__SCHEDULE__CADENCE", "monthly"),
            ("GRADIENT_CONNECTOR__SCHEDULE__CATCH_UP", "false"),
        ],
    );
    let c = r.unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.schedule.cadence, Cadence::Monthly);
    assert!(!c.schedule.catch_up);

    let text = MINIMAL.replace("unit = \"users\"\n", "module_id = 1\n")
        + "[store]\nbogus = 1\n[schedule]\ncadence = \"weekly\"\n";
    let text = text.replace("module = \"edr\"", "module = \"  \"");
    let p = problems(&text, &[]);
    assert!(has(&p, "store.bogus", "path, busy_timeout_secs"), "{p:?}");
    assert!(
        has(&p, "schedule.cadence", "must be \"daily\" or \"monthly\""),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "service[0].unit",
            "missing: one of \"users\", \"devices\", \"quantity\""
        ),
        "{p:?}"
    );
    assert!(has(&p, "service[0].module", "must not be empty"), "{p:?}");
    assert!(has(&p, "service[0].module_id", "support_contact"), "{p:?}");
    assert_eq!(p.len(), 5, "{p:#?}");
}

#[test]
fn webhooks_are_optional_and_every_bad_value_names_its_key() {
    let (_d, r) = load(GOOD, &[]);
    assert!(r.unwrap().webhooks.is_empty(), "no [[webhook]]: none");
    let text = format!(
        "{GOOD}\n[[webhook]]\nurl = \"https://console.example/hooks\"\nsecret_file = \"hook.secret\"\n\
         [[webhook]]\nurl = \"http://127.0.0.1:8080/h\"\nsecret_file = \"/etc/s\"\nevents = [\"connector.synced\", \"connector.synced\"]\n"
    );
    let (_d, r) = load(&text, &[]);
    let c = r.unwrap();
    assert_eq!(c.webhooks.len(), 2);
    assert_eq!(
        c.webhooks[0].events.len(),
        crate::domain::EventKind::words().len(),
        "default: every event"
    );
    assert_eq!(c.webhooks[0].secret_file, _d.path().join("hook.secret"));
    assert_eq!(
        c.webhooks[1].events,
        vec![crate::domain::EventKind::ConnectorSynced]
    );
    assert_eq!(
        c.webhook_targets(crate::domain::EventKind::ConnectorConnected),
        vec!["https://console.example/hooks".to_string()]
    );
    assert_eq!(
        c.webhook_targets(crate::domain::EventKind::ConnectorSynced)
            .len(),
        2
    );

    let bad = format!(
        "{GOOD}\n[[webhook]]\nurl = \"http://console.example/hooks\"\nevents = [\"connector.exploded\"]\ncolour = 1\n\
         [[webhook]]\nurl = \"https://a.example/\"\nsecret_file = \"s\"\nevents = []\n\
         [[webhook]]\nurl = \"https://b.example/\"\nsecret_file = \"s\"\n\
         [[webhook]]\nurl = \"https://b.example/\"\nsecret_file = \"s\"\n"
    );
    let p = problems(&bad, &[]);
    assert!(has(&p, "webhook[0].url", "https"), "{p:?}");
    assert!(has(&p, "webhook[0].secret_file", "missing"), "{p:?}");
    assert!(
        has(
            &p,
            "webhook[0].events",
            "unknown entry \"connector.exploded\""
        ),
        "{p:?}"
    );
    assert!(has(&p, "webhook[0].colour", "unknown key"), "{p:?}");
    assert!(has(&p, "webhook[1].events", "at least one"), "{p:?}");
    assert!(has(&p, "webhook[3].url", "duplicate"), "{p:?}");
    assert!(
        has(
            &problems(&format!("webhook = 3\n{GOOD}"), &[]),
            "webhook",
            "array of tables"
        ),
        "a non-array is refused"
    );
}

#[test]
fn webhook_secrets_are_read_capped_checked_and_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "{GOOD}\n[[webhook]]\nurl = \"https://console.example/hooks\"\nsecret_file = \"hook.secret\"\n"
    );
    let (dir, r) = load(&text, &[]);
    let c = r.unwrap();
    let file = dir.path().join("hook.secret");
    let (p, _) = c.check_webhook_secrets();
    assert!(has(&p, "webhook[0].secret_file", "cannot read"), "{p:?}");
    std::fs::write(&file, "not-a-whsec-secret-but-long-enough\n").unwrap();
    let (p, _) = c.check_webhook_secrets();
    assert!(has(&p, "webhook[0].secret_file", "whsec_"), "{p:?}");
    assert!(!format!("{p:?}").contains("not-a-whsec"), "{p:?}");
    std::fs::write(&file, format!("whsec_{}", "A".repeat(5000))).unwrap();
    let (p, _) = c.check_webhook_secrets();
    assert!(
        has(&p, "webhook[0].secret_file", "larger than 4096"),
        "{p:?}"
    );
    std::fs::write(&file, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (p, w) = c.check_webhook_secrets();
    assert!(p.is_empty(), "{p:?}");
    assert!(has(&w, "webhook[0].secret_file", "chmod 600"), "{w:?}");
    assert!(!format!("{w:?}{:?}", c.webhooks[0].load_secret(0)).contains("MfKQ"));
}

#[test]
fn a_misspelt_log_level_is_refused_naming_the_levels_and_filters_still_pass() {
    for bad in ["warning", "debg", "info,warning"] {
        let p = problems(&format!("{GOOD}\n[log]\nlevel = \"{bad}\"\n"), &[]);
        assert!(has(&p, "log.level", "unknown log level"), "{bad}: {p:?}");
        assert!(
            has(&p, "log.level", "trace, debug, info, warn, error, off"),
            "{bad}: {p:?}"
        );
    }
    for good in [
        "warn",
        "ERROR",
        "info,gradient_connector=debug",
        "gradient_connector::sync=trace",
    ] {
        let (_d, r) = load(&format!("{GOOD}\n[log]\nlevel = \"{good}\"\n"), &[]);
        assert_eq!(r.unwrap().log.level, good);
    }
}

#[test]
fn an_environment_override_is_named_by_its_variable() {
    let p = problems(
        GOOD,
        &[
            ("GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT", "0"),
            ("GRADIENT_CONNECTOR__LOG__LEVEL", "warning"),
        ],
    );
    assert!(
        has(
            &p,
            "GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT",
            "must be between 1 and 256, found 0"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT",
            "overrides gradient.max_in_flight"
        ),
        "{p:?}"
    );
    assert!(
        has(&p, "GRADIENT_CONNECTOR__LOG__LEVEL", "unknown log level"),
        "{p:?}"
    );
    assert_eq!(p.len(), 2, "{p:#?}");
}

#[test]
fn a_cron_that_never_fires_is_a_problem_of_schedule_cron() {
    let text = GOOD.replace("0 0 8 1 * *", "0 0 2 31 2 *");
    let p = problems(&text, &[]);
    assert!(
        has(&p, "schedule.cron", "no run in the next 400 days"),
        "{p:?}"
    );
}
