//! Common configuration mistakes are caught by `check-config` (exit 78, every problem in one
//! report) and by a reload (SIGHUP keeps the old configuration and logs why). The real binary.

use crate::common::*;

use gradient_connector::domain::UnitKind;
use gradient_connector_kit::{ConfigBuilder, Inventory, Service};

/// `check-config` with `broken` written beside the standard environment: exit 78; its stderr.
fn refused(broken: ConfigBuilder) -> String {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let cfg = env.write_config_as("broken.toml", &broken);
    let out = run_bin(&cfg, &["check-config"], None);
    assert_eq!(
        code(&out),
        78,
        "{}\n{}{}",
        broken.render(),
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn good() -> ConfigBuilder {
    Env::new("http://127.0.0.1:9", "", "").config_builder()
}

#[test]
fn a_misspelt_log_level_exits_78_naming_the_allowed_levels() {
    for level in ["warning", "debg"] {
        let err = refused(good().set("log", "level", level));
        assert!(
            err.contains(&format!("log.level: unknown log level \"{level}\"")),
            "{err}"
        );
        assert!(
            err.contains("trace, debug, info, warn, error, off"),
            "{err}"
        );
    }
}

#[test]
fn a_cron_that_never_fires_exits_78() {
    let err = refused(good().set("schedule", "cron", "0 0 2 31 2 *"));
    assert!(err.contains("schedule.cron"), "{err}");
    assert!(err.contains("no run in the next 400 days"), "{err}");
}

#[test]
fn a_cron_error_names_the_field_and_its_range() {
    let err = refused(good().set("schedule", "cron", "0 0 2 32 * *"));
    assert!(
        err.contains("day-of-month: 32 is out of range 1-31"),
        "{err}"
    );
    assert!(!err.contains("Component error"), "{err}");
}

#[test]
fn an_environment_override_is_named_by_its_variable() {
    let env = Env::new("http://127.0.0.1:9", "", "");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .arg("check-config")
        .env_remove("RUST_LOG")
        .env("GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT", "0")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT: must be between 1 and 256, found 0"
        ),
        "{err}"
    );
    assert!(err.contains("overrides gradient.max_in_flight"), "{err}");
}

#[test]
fn a_service_is_named_by_its_module() {
    let broken = good().service(Service::new(
        "edr",
        "EDR",
        UnitKind::Devices,
        "Security",
        "endpoint detection and response (EDR)",
    ));
    let err = refused(broken);
    // The third entry (index 2): the two standard services come first.
    assert!(
        err.contains(
            "service[2] (module \"edr\").category: unknown Gradient category \"Security\""
        ),
        "{err}"
    );
}

#[test]
fn every_mistake_is_in_one_report() {
    let broken = good()
        .set("log", "level", "warning")
        .set("schedule", "cron", "0 0 2 31 2 *")
        .service(Service::new(
            "edr",
            "EDR",
            UnitKind::Devices,
            "Security",
            "endpoint detection and response (EDR)",
        ));
    let err = refused(broken);
    assert!(err.contains("has 3 problem(s)"), "{err}");
    for needle in ["log.level", "schedule.cron", "service[2] (module \"edr\")"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn sighup_with_a_misspelt_log_level_keeps_the_old_configuration_and_logs_why() {
    let e = SimEnv::with_config(|c| c);
    e.import_inventory(&Inventory::small());
    e.connect("msp-a", "key-a");
    let d = Daemon::start(&e, &[]);
    e.env
        .write_config(&e.env.config_builder().set("log", "level", "warning"));
    d.signal("HUP");
    d.wait_log("keeping the old one");
    assert!(
        d.log().contains("log.level: unknown log level \"warning\""),
        "{}",
        d.log()
    );
    // The old level (info) still logs: a run is reported.
    d.signal("USR1");
    wait_for(
        "a run after the refused reload",
        || finished_runs(&e) == 1,
        || d.log(),
    );
    wait_for(
        "its summary line",
        || d.log().contains("run 1 "),
        || d.log(),
    );
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}
