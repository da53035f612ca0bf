//! The real binary: check-config on good and broken configs, import atomicity, usage errors.

use crate::common::*;

#[test]
fn example_config_passes_check_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = run_bin(
        &std::path::Path::new(root).join("config/gradient-connector.toml"),
        &["check-config"],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("configuration OK"));
    assert!(!stdout(&out).contains("example-vendor-key-not-a-real-secret"));
}

#[test]
fn broken_configs_exit_78_naming_each_key() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let good = env.config_builder();
    let cases = [
        (
            good.clone().set("schedule", "cron", "0 2 * * *"),
            "schedule.cron",
        ),
        (
            good.clone().set("schedule", "timezone", "Europe/Atlantis"),
            "schedule.timezone",
        ),
        (
            good.clone().set("schedule", "cadence", "weekly"),
            "schedule.cadence",
        ),
        (
            good.clone().set_unchecked("schedule", "nonsense", 1),
            "schedule.nonsense",
        ),
    ];
    for (broken, key) in cases {
        let cfg = env.write_config_as("broken.toml", &broken);
        let line = broken.render();
        let out = run_bin(&cfg, &["check-config"], None);
        assert_eq!(code(&out), 78, "{line}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{line}: {}", stderr(&out));
    }
    // A missing vendor key file is a configuration problem too.
    std::fs::remove_file(env.path("vendor-api-key")).unwrap();
    let out = env.run(&["check-config"], None);
    assert_eq!(code(&out), 78);
    assert!(
        stderr(&out).contains("gradient.vendor_api_key_file"),
        "{}",
        stderr(&out)
    );
    // And a config file that does not exist.
    let out = run_bin(&env.path("nope.toml"), &["check-config"], None);
    assert_eq!(code(&out), 78);
    assert!(stderr(&out).contains("nope.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    assert_eq!(code(&env.run(&["frobnicate"], None)), 2);
    assert_eq!(code(&env.run(&["sync", "--bogus"], None)), 2);
    let out = env.run(&["--help"], None);
    assert_eq!(code(&out), 0);
    for cmd in [
        "run",
        "sync",
        "check-config",
        "import",
        "connector",
        "status",
        "history",
        "demo",
    ] {
        assert!(stdout(&out).contains(cmd), "help lacks {cmd}");
    }
}

const GOOD: &str = r#"{"type":"channel","id":"msp-1","name":"Acme IT"}
{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso Ltd"}
{"type":"module","workspace":"ws-1","module":"endpoint_security","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-02T09:00:00Z"}
{"type":"device","workspace":"ws-1","id":"d-1","protected":false}
"#;

fn dump(env: &Env) -> String {
    let c = rusqlite::Connection::open(env.store_path()).unwrap();
    let mut out = String::new();
    for table in [
        "channels",
        "workspaces",
        "modules",
        "module_intervals",
        "units",
        "unit_intervals",
    ] {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.unwrap()));
        }
    }
    out
}

#[test]
fn import_good_then_bad_leaves_the_good_state_and_is_idempotent() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let good = env.write("good.jsonl", GOOD);
    let out = env.run(&["import", good.to_str().unwrap()], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 channel, 1 workspace, 1 module, 1 user, 1 device"),
        "{}",
        stdout(&out)
    );
    let after_good = dump(&env);
    assert!(after_good.contains("Contoso Ltd"));

    let bad = "{\"type\":\"workspace\",\"id\":\"ws-2\",\"channel\":\"msp-1\",\"name\":\"Fabrikam\"}\n{\"type\":\"user\",\"workspace\":\"ws-9\",\"id\":\"u-2\",\"protected\":true}\n{oops\n";
    let out = env.run(&["import", "-"], Some(bad));
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("ws-9"), "{err}");
    assert!(
        err.contains("line 3") && err.contains("not valid JSON"),
        "{err}"
    );
    assert_eq!(dump(&env), after_good, "a bad import must apply nothing");

    // The same good file again (via stdin) changes nothing.
    let out = env.run(&["import"], Some(GOOD));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("5 unchanged"), "{}", stdout(&out));
    assert_eq!(dump(&env), after_good);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.store_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_systemd_credential_wins_and_a_readable_store_is_warned_about() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let creds = env.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vendor-api-key"), "credential-key\n").unwrap();
    // The configured key file is gone: only the credential can satisfy check-config.
    std::fs::remove_file(env.path("vendor-api-key")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .arg("check-config")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("creds/vendor-api-key"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("credential-key"));

    // A store readable by others is a warning naming store.path.
    std::fs::write(env.path("vendor-api-key"), "k\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        env.path("vendor-api-key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(code(&env.run(&["import", "-"], Some(""))), 0);
    std::fs::set_permissions(env.store_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["check-config"], None);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("warning: store.path") && stderr(&out).contains("chmod 600"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn logs_drop_timestamps_under_journald_and_can_be_json() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--config")
            .arg(&env.config)
            .arg("sync")
            .env_remove("RUST_LOG");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stderr(&out)
    };
    // No connector: the run's one summary line is logged at info.
    let plain = run(&[]);
    let line = plain
        .lines()
        .find(|l| l.contains("run 1 (cli"))
        .expect("summary line")
        .to_string();
    assert!(line.starts_with("20"), "a timestamp first: {line}");
    let journald = run(&[("JOURNAL_STREAM", "8:12345")]);
    let line = journald
        .lines()
        .find(|l| l.contains("(cli, daily"))
        .expect("summary line")
        .to_string();
    assert!(
        !line.starts_with("20"),
        "journald adds its own timestamps: {line}"
    );
    env.write_config(&env.config_builder().set("log", "format", "json"));
    let json = run(&[]);
    let line = json
        .lines()
        .find(|l| l.contains("(cli, daily"))
        .expect("summary line");
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["level"], "INFO");
}
