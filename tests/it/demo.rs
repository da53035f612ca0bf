//! `gradient-connector demo`: the whole product in one command, on 127.0.0.1 only.

use crate::common::*;

#[test]
fn demo_tours_the_product_and_leaves_nothing_behind() {
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    for needle in [
        "gradient-sim) on http://127.0.0.1:",
        "integration pending, 9 accounts created",
        "First sync: run 1",
        "404",
        "kept ",
        "token_rejected",
        "connector add msp-bluesky --token-file",
        "After `connector add` with the new token: run 4 (cli, daily",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("partner-key-"), "a token was printed");
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("working directory "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
}

#[test]
fn demo_keep_leaves_a_usable_store() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = std::process::Command::new(BIN)
        .args(["demo", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status = run_bin(
        &keep.join("gradient-connector.toml"),
        &["status", "--json"],
        None,
    );
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["connectors"].as_array().unwrap().len(), 3);
    assert_eq!(v["last_run"]["outcome"], "ok");
}

#[test]
fn demo_help_does_not_offer_config_and_a_config_is_refused_not_ignored() {
    let help = std::process::Command::new(BIN)
        .args(["demo", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--keep"), "{text}");
    assert!(!text.contains("--config"), "{text}");
    for args in [
        &["--config", "/nonexistent.toml", "demo"][..],
        &["demo", "--config", "/nonexistent.toml"][..],
    ] {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("demo reads no configuration file"), "{err}");
    }
}
