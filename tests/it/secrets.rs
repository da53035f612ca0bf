//! No secret leaks: every command, at debug and trace log levels, with known keys; neither key nor
//! the base64 GRADIENT-TOKEN header may appear in stdout or stderr.

use crate::common::*;

use base64::Engine;

const PARTNER: &str = "partner-SECRET-7f3a9c";

fn secrets() -> Vec<String> {
    let header =
        base64::engine::general_purpose::STANDARD.encode(format!("{VENDOR_KEY}:{PARTNER}"));
    vec![VENDOR_KEY.to_string(), PARTNER.to_string(), header]
}

/// The store key's text in the current test's directory (set by `remember_store_key`).
fn store_key() -> Option<String> {
    STORE_KEY.with(|k| k.borrow().clone())
}

thread_local! {
    static STORE_KEY: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn remember_store_key(e: &SimEnv) {
    let text = std::fs::read_to_string(e.env.path("store-key")).unwrap();
    STORE_KEY.with(|k| *k.borrow_mut() = Some(text.trim().to_string()));
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let text = format!("{}{}", stdout(out), stderr(out));
    for s in secrets().into_iter().chain(store_key()) {
        assert!(
            !text.contains(&s),
            "{what} printed a secret ({} chars of output)",
            text.len()
        );
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "every command, one after another, under one scan"
)]
#[test]
fn no_command_prints_a_key_at_debug_or_trace() {
    let e = SimEnv::new("", "");
    e.import(
        r#"{"type":"channel","id":"msp-a","name":"A"}
{"type":"workspace","id":"ws-1","channel":"msp-a","name":"One"}
{"type":"module","workspace":"ws-1","module":"email_security","enabled":true,"at":"2026-10-01T00:00:00Z"}
{"type":"user","workspace":"ws-1","id":"u1","protected":true,"at":"2026-10-01T00:00:00Z"}
"#,
    );
    e.sim.add_msp("msp-a", "A", PARTNER);
    remember_store_key(&e);
    let token = e.env.write("token", PARTNER);
    for level in ["debug", "trace"] {
        let backup = e.env.path(&format!("backup-{level}.db"));
        let run = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = std::process::Command::new(BIN);
            cmd.arg("--config")
                .arg(&e.env.config)
                .args(args)
                .env("RUST_LOG", level);
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            if let Some(t) = stdin {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
            } else {
                drop(child.stdin.take());
            }
            child.wait_with_output().unwrap()
        };
        let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
            (
                "connector add (file)",
                vec![
                    "connector",
                    "add",
                    "msp-a",
                    "--token-file",
                    token.to_str().unwrap(),
                ],
                None,
            ),
            (
                "connector add (stdin)",
                vec!["connector", "add", "msp-a", "--token-file", "-"],
                Some(PARTNER),
            ),
            ("sync", vec!["sync"], None),
            ("sync --json", vec!["sync", "--json"], None),
            ("dry-run", vec!["sync", "--dry-run"], None),
            ("dry-run --json", vec!["sync", "--dry-run", "--json"], None),
            ("status", vec!["status"], None),
            ("status --json", vec!["status", "--json"], None),
            ("history", vec!["history"], None),
            ("history --json", vec!["history", "--json"], None),
            ("connector list", vec!["connector", "list"], None),
            (
                "connector list --json",
                vec!["connector", "list", "--json"],
                None,
            ),
            ("check-config", vec!["check-config"], None),
            ("store check", vec!["store", "check"], None),
            (
                "store backup",
                vec!["store", "backup", backup.to_str().unwrap()],
                None,
            ),
            ("store repair-future", vec!["store", "repair-future"], None),
        ];
        for (what, args, stdin) in cases {
            let out = run(&args, stdin);
            assert!(matches!(code(&out), 0 | 75), "{what}: {}", stderr(&out));
            assert_clean(&format!("{what} at {level}"), &out);
        }
        // A rejected token: its error paths must not echo it either.
        e.sim.rotate_key("msp-a", "another");
        let out = run(&["sync"], None);
        assert_eq!(code(&out), 75);
        assert_clean(&format!("sync with a rejected token at {level}"), &out);
        let out = run(
            &[
                "connector",
                "add",
                "msp-a",
                "--token-file",
                token.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code(&out), 1);
        assert_clean(
            &format!("connector add with a rejected token at {level}"),
            &out,
        );
        e.sim.rotate_key("msp-a", PARTNER);
        let out = run(&["connector", "disconnect", "msp-a"], None);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_clean(&format!("connector disconnect at {level}"), &out);
    }
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !text.contains("demo-vendor-key") && !text.contains("partner-key-msp"),
        "demo leaked a key"
    );
}

#[test]
fn debug_output_of_the_running_parts_never_holds_a_key() {
    let e = SimEnv::new("", "");
    let cfg = gradient_connector::config::Config::load(&e.env.config).unwrap();
    let ctx = gradient_connector::sync::SyncContext::new(std::sync::Arc::new(cfg)).unwrap();
    let session = ctx
        .client
        .partner(&secrecy::SecretString::from(PARTNER.to_string()));
    let text = format!(
        "{ctx:?} {session:?} {:?}",
        ctx.config.load_vendor_key().unwrap()
    );
    for s in secrets() {
        assert!(!text.contains(&s), "{text}");
    }
    // The store key prints as its id only.
    let key = gradient_connector::store::key::StoreKey::new(ctx.config.load_store_key().unwrap());
    let printed = format!("{key:?} {:?}", ctx.config);
    let text = std::fs::read_to_string(e.env.path("store-key")).unwrap();
    assert!(!printed.contains(text.trim()), "{printed}");
    assert!(printed.contains(key.id()), "{printed}");
}
