//! Progress on a terminal: an import of a large file and a local sync run draw progress on stderr
//! when it is a terminal (a pty made by `script -qec`), and never when stderr is not a terminal,
//! with `--quiet`, or with `log.format = "json"`. The real binary.

use crate::common::*;

use std::process::Command;
use std::time::Duration;

use gradient_connector_kit::{Inventory, Units};

/// A large inventory file (two MSPs × 150 workspaces, 20 devices and 30 users each).
/// Returns the file and its number of records.
fn large_inventory(e: &SimEnv) -> (std::path::PathBuf, usize) {
    let inv = Inventory::msps(2, 150, |_| Units {
        devices: 20,
        users: 30,
    });
    (e.env.write("large.jsonl", &inv.to_jsonl()), inv.len())
}

/// Runs `args` of the binary inside a pseudo-terminal (`script -qec`); its whole terminal output.
fn in_pty(config: &std::path::Path, args: &str) -> String {
    let command = format!("{BIN} --config {} {args}", config.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .expect("`script` (util-linux) runs a command in a pseudo-terminal");
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_no_progress(text: &str, what: &str) {
    assert!(!text.contains('\r'), "{what}: carriage return in {text:?}");
    assert!(
        !text.contains("\u{1b}["),
        "{what}: escape sequence in {text:?}"
    );
    assert!(!text.contains("importing"), "{what}: {text:?}");
}

#[test]
fn without_a_terminal_there_are_no_progress_bytes() {
    let e = SimEnv::new("", "");
    let (file, _) = large_inventory(&e);
    let out = e.run(&["import", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_progress(&stderr(&out), "import stderr");
    assert_no_progress(&stdout(&out), "import stdout");
    e.connect("msp-0", "key-0");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_progress(&stderr(&out), "sync stderr");
    let out = e.run(&["sync", "--json"]);
    assert_no_progress(&stdout(&out), "sync --json");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout is JSON alone");
}

#[test]
fn on_a_terminal_an_import_and_a_sync_show_progress_unless_quiet_or_json_logs() {
    let e = SimEnv::new("", "");
    let (file, n) = large_inventory(&e);
    let summary = format!("imported {n} record(s)");
    let shown = in_pty(&e.env.config, &format!("import {}", file.display()));
    assert!(shown.contains("importing"), "{shown:?}");
    assert!(shown.contains(&summary), "{shown:?}");

    let quiet = in_pty(&e.env.config, &format!("--quiet import {}", file.display()));
    assert_no_progress(&quiet.replace("\r\n", "\n"), "--quiet");
    assert!(quiet.contains(&summary), "{quiet:?}");

    let json_logs = e.env.write_config_as(
        "json.toml",
        &e.env.config_builder().set("log", "format", "json"),
    );
    let json = in_pty(&json_logs, &format!("import {}", file.display()));
    assert_no_progress(&json.replace("\r\n", "\n"), "log.format=json");

    // A sync with many pairs against a slow stand-in: the pairs recorded so far.
    e.sim.add_msp("msp-0", "MSP 0", "key-0");
    e.add_token("msp-0", "key-0", 0);
    e.sim.set_latency(Duration::from_millis(5));
    let sync = in_pty(&e.env.config, "sync");
    assert!(sync.contains("pair(s) recorded"), "{sync:?}");
    // No log line or report line starts after the bar's text: the bar is taken off first.
    for segment in plain_segments(&sync) {
        assert!(
            !(segment.contains("pair(s) recorded")
                && (segment.contains("run 1 (") || segment.contains("INFO"))),
            "{segment:?} in {sync:?}"
        );
    }
}

/// The terminal output without escape sequences, cut at each carriage return and line feed.
fn plain_segments(text: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.split(['\r', '\n']).map(str::to_string).collect()
}
