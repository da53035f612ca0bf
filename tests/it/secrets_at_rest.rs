//! Secrets at rest and the store's lifecycle (issue 14 part B): partner tokens sealed in the store
//! (never plain or base64 in the file or its WAL, after a paste, a disconnect, in a backup, and
//! after the migration of a plain token an older build left), key rotation, the store key as a
//! config problem, key files that are not regular files, online backup while the daemon runs, the
//! integrity check on a damaged copy, and the repair of future-dated history.

use crate::common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use gradient_connector_kit::Inventory;

const KEY_A: &str = "partner-AAAA-5e1f0c7d";
const KEY_B: &str = "partner-BBBB-9a2d4e61";

/// Every form a token could take in a file: plain, and base64 in the three usual alphabets.
fn forms(token: &str) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut v = vec![token.as_bytes().to_vec()];
    for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        // A base64 run of the token, at each of the three alignments inside a longer text.
        for skip in 0..3 {
            let enc = e.encode(format!("{}{token}", "x".repeat(skip)));
            // Characters from the first 3-byte group that starts inside the token on: they depend
            // on the token's bytes only (the last group may mix with what follows: left out).
            let start = if skip == 0 { 0 } else { 4 };
            v.push(enc.as_bytes()[start..enc.len() - 4].to_vec());
        }
    }
    v
}

/// Panics when `path` (or its `-wal`) holds any form of any of `tokens`.
fn assert_no_token_bytes(what: &str, path: &Path, tokens: &[&str]) {
    let mut files = vec![path.to_path_buf()];
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    files.push(wal.into());
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for t in tokens {
            for form in forms(t) {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                    "{what}: {} holds token bytes ({})",
                    f.display(),
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }
}

fn setup() -> SimEnv {
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(2, 3));
    e
}

/// A run of the binary that must end within `limit` (a key file that hangs it fails the test).
fn run_within(config: &Path, args: &[&str], limit: Duration) -> std::process::Output {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, ended) = wait_within(child, limit);
    assert!(
        ended,
        "{args:?} did not finish within {limit:?} (a key file was read that must not be)"
    );
    out
}

#[test]
fn tokens_never_sit_in_the_store_file_after_add_disconnect_or_in_a_backup() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    e.connect("msp-b", KEY_B);
    assert_no_token_bytes("after connector add", &e.env.store_path(), &[KEY_A, KEY_B]);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let backup = e.env.path("backup.db");
    let out = e.run(&["store", "backup", backup.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_no_token_bytes("in a backup", &backup, &[KEY_A, KEY_B]);
    // The backup holds the connectors (sealed tokens included).
    let b = gradient_connector::store::Store::open(&backup, Duration::from_secs(5)).unwrap();
    let (ids, plain) = b.token_keys().unwrap();
    assert_eq!((ids.len(), plain), (1, 0), "two sealed tokens, one key");
    drop(b);
    // A backup never overwrites.
    let out = e.run(&["store", "backup", backup.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("never overwrites"),
        "{}",
        stderr(&out)
    );

    let out = e.run(&["connector", "disconnect", "msp-a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_token_bytes("after disconnect", &e.env.store_path(), &[KEY_A, KEY_B]);
    // msp-b still syncs.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_plain_token_left_by_an_older_build_is_sealed_and_its_bytes_wiped_while_the_daemon_runs() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    // What an older build left: the token in plain text (written the way it did).
    {
        let c = rusqlite::Connection::open(e.env.store_path()).unwrap();
        c.execute(
            "UPDATE connectors SET token = ?1, token_key_id = NULL WHERE id = 'msp-a'",
            [KEY_A],
        )
        .unwrap();
    }
    // Without a key it cannot be used: a configuration problem that says what to do.
    let no_key = e
        .env
        .config_builder()
        .store_key_file(e.env.path("missing-store-key"));
    let cfg = e.env.write_config_as("no-key.toml", &no_key);
    let out = run_bin(&cfg, &["sync"], None);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("store.key_file")
            && stderr(&out).contains("gradient-connector store new-key"),
        "{}",
        stderr(&out)
    );
    // The daemon (with the key) seals it at start, and its bytes leave the file and the WAL while
    // it runs (no close-time checkpoint helps here).
    let d = Daemon::start(&e, &[]);
    wait_for(
        "the token sealed",
        || e.store().token_keys().unwrap().1 == 0,
        || d.log(),
    );
    assert_no_token_bytes("after sealing", &e.env.store_path(), &[KEY_A]);
    // And the sealed token works.
    let runs_before = finished_runs(&e);
    d.signal("USR1");
    wait_for("a run", || finished_runs(&e) > runs_before, || d.log());
    let pushed = e
        .sim
        .snapshot()
        .pushes
        .iter()
        .filter(|p| p.org_id.as_deref() == Some("msp-a"))
        .count();
    assert!(pushed > 0, "{}", d.log());
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn rotate_key_reseals_every_token_and_every_connector_keeps_working() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    e.connect("msp-b", KEY_B);
    let old_id = e.store().token_keys().unwrap().0;
    let new_key = e.env.path("store-key.new");
    let out = e.run(&["store", "new-key", new_key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // new-key never overwrites.
    let out = e.run(&["store", "new-key", new_key.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    // Rotating to the key in use is refused.
    let current = e.env.path("store-key");
    let out = e.run(&["store", "rotate-key", current.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    let out = e.run(&["store", "rotate-key", new_key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-sealed 2 partner tokens"),
        "{}",
        stdout(&out)
    );
    let new_id = e.store().token_keys().unwrap().0;
    assert_ne!(old_id, new_id);
    assert_eq!(new_id.len(), 1);
    // Until the key file is swapped, the old key is refused with a clear message.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sealed with another key"),
        "{}",
        stderr(&out)
    );
    let out = e.run(&["check-config"]);
    assert_eq!(code(&out), 78);
    assert!(stderr(&out).contains("store.key_file"), "{}", stderr(&out));
    // The swap: the new key becomes the configured one; every connector pushes.
    std::fs::rename(&new_key, &current).unwrap();
    let before = e.sim.snapshot().pushes.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let snap = e.sim.snapshot();
    for msp in ["msp-a", "msp-b"] {
        assert!(
            snap.pushes[before..]
                .iter()
                .any(|p| p.org_id.as_deref() == Some(msp)),
            "{msp} pushed after the rotation"
        );
    }
    assert_no_token_bytes("after rotation", &e.env.store_path(), &[KEY_A, KEY_B]);
}

#[test]
fn key_files_that_are_not_regular_files_are_refused_at_once_in_one_report() {
    let e = SimEnv::new("", "");
    let fifo = e.env.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let hook_fifo = e.env.path("hook-fifo");
    assert!(Command::new("mkfifo")
        .arg(&hook_fifo)
        .status()
        .unwrap()
        .success());
    let cfg = e
        .env
        .config_builder()
        .vendor_key_file(&fifo)
        .store_key_file("/dev/zero")
        .webhook(gradient_connector_kit::Webhook::new(
            "http://127.0.0.1:9/hook",
            &hook_fifo,
        ));
    let path = e.env.write_config_as("hostile.toml", &cfg);
    let out = run_within(&path, &["check-config"], Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("has 3 problem(s)"), "{err}");
    for key in [
        "gradient.vendor_api_key_file",
        "store.key_file",
        "webhook[0].secret_file",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    assert!(err.contains("not a regular file"), "{err}");
    // With another configuration problem, they are in the same report.
    let also_bad = e
        .env
        .write_config_as("worse.toml", &cfg.clone().set("schedule", "cron", "never"));
    let out = run_within(&also_bad, &["check-config"], Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("has 4 problem(s)"), "{err}");
    for key in [
        "schedule.cron",
        "gradient.vendor_api_key_file",
        "store.key_file",
        "webhook[0].secret_file",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    // A command that needs them refuses at once too.
    let out = run_within(&path, &["sync"], Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let out = run_within(&path, &["run"], Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
}

#[test]
fn backup_while_the_daemon_runs_is_consistent_and_check_finds_a_damaged_copy() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    e.connect("msp-b", KEY_B);
    let d = Daemon::start(&e, &[]);
    // Runs go on while backups are taken.
    for i in 0..3 {
        d.signal("USR1");
        let backup = e.env.path(&format!("b{i}.db"));
        let out = e.run(&["store", "backup", backup.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let copy = e.env.config_builder().store_path(&backup);
        let cfg = e.env.write_config_as(&format!("b{i}.toml"), &copy);
        let out = run_bin(&cfg, &["store", "check"], None);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_no_token_bytes("backup while running", &backup, &[KEY_A, KEY_B]);
    }
    let (c, _) = d.stop();
    assert_eq!(c, 0);

    // A damaged copy: a page in the middle overwritten.
    let damaged = e.env.path("damaged.db");
    std::fs::copy(e.env.path("b2.db"), &damaged).unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let page = 16384;
    assert!(bytes.len() >= 4 * page, "{} bytes", bytes.len());
    for b in &mut bytes[2 * page + 8..3 * page - 8] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let copy = e.env.config_builder().store_path(&damaged);
    let cfg = e.env.write_config_as("damaged.toml", &copy);
    let out = run_bin(&cfg, &["store", "check"], None);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("integrity") || stderr(&out).contains("malformed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_shows_the_ledger_and_points_at_future_dated_history_which_repair_redates() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = e.status_json();
    assert!(s["ledger"]["rows"].as_u64().unwrap() > 0, "{s}");
    assert!(s["ledger"]["oldest_at"].as_str().unwrap().ends_with('Z'));
    assert!(s["ledger"]["store_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["future_dated_records"], 0);
    let text = stdout(&e.run(&["status"]));
    assert!(text.contains("ledger: "), "{text}");

    // What an older build accepted: a record dated 9999-12-31.
    {
        let c = rusqlite::Connection::open(e.env.store_path()).unwrap();
        c.execute(
            "UPDATE units SET changed_at = 253402214400000 WHERE rowid IN (SELECT rowid FROM units LIMIT 1)",
            [],
        )
        .ok();
        c.execute(
            "UPDATE channels SET changed_at = 253402214400000 WHERE id = 'msp-a'",
            [],
        )
        .unwrap();
    }
    let s = e.status_json();
    assert!(s["future_dated_records"].as_u64().unwrap() > 0, "{s}");
    let text = stdout(&e.run(&["status"]));
    assert!(text.contains("store repair-future"), "{text}");
    let out = e.run(&["check-config"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("store repair-future"),
        "{}",
        stderr(&out)
    );
    let out = e.run(&["store", "repair-future"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("re-dated"), "{}", stdout(&out));
    assert_eq!(e.status_json()["future_dated_records"], 0);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_running_daemon_takes_the_rotated_key_on_sighup() {
    let e = setup();
    e.connect("msp-a", KEY_A);
    e.connect("msp-b", KEY_B);
    let d = Daemon::start(&e, &[]);
    let new_key = e.env.path("store-key.new");
    let out = e.run(&["store", "new-key", new_key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = e.run(&["store", "rotate-key", new_key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::rename(&new_key, e.env.path("store-key")).unwrap();
    d.signal("HUP");
    d.wait_log("configuration reloaded");
    let (runs_before, pushes_before) = (finished_runs(&e), e.sim.snapshot().pushes.len());
    d.signal("USR1");
    wait_for(
        "a run after the reload",
        || finished_runs(&e) > runs_before,
        || d.log(),
    );
    let snap = e.sim.snapshot();
    for msp in ["msp-a", "msp-b"] {
        assert!(
            snap.pushes[pushes_before..]
                .iter()
                .any(|p| p.org_id.as_deref() == Some(msp)),
            "{msp} pushed with the rotated key: {}",
            d.log()
        );
    }
    assert!(!d.log().contains("sealed with another key"), "{}", d.log());
    let (c, _) = d.stop();
    assert_eq!(c, 0);
}

#[test]
fn retention_prunes_old_ledger_rows_after_a_run_and_keeps_each_pairs_newest_push() {
    let e = SimEnv::with_config(|c| c.set("store", "ledger_retention_days", 30));
    e.import_inventory(&two_msps(2, 3));
    e.connect("msp-a", KEY_A);
    for _ in 0..2 {
        let out = e.run(&["sync"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    // 2 runs × 4 pairs, all fresh: nothing is pruned.
    assert_eq!(e.store().ledger_stats().unwrap().rows, 8);
    let last_known = e.store().last_known(None).unwrap();
    // Make both runs 40 days old (what time would have done).
    {
        let c = rusqlite::Connection::open(e.env.store_path()).unwrap();
        let old = gradient_connector::time::now_ms() - 40 * 86_400_000;
        c.execute("UPDATE ledger SET at = ?1", [old]).unwrap();
        c.execute(
            "UPDATE runs SET started_at = ?1, finished_at = ?1 + 1000",
            [old],
        )
        .unwrap();
    }
    // One pair is not pushed by the next run: its newest push stays the old run's.
    e.import_inventory(Inventory::new().module("msp-a-ws1", "email_security", false));
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Run 1 is gone with its rows; of run 2 only the newest push of the pair run 3 did not push.
    let ids: Vec<i64> = runs(&e).iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![2, 3]);
    let of_run = |run: &str| -> Vec<serde_json::Value> {
        let out = e.run(&["history", "--json", "--run", run, "--limit", "100"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let kept = of_run("2");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["account_id"], "msp-a-ws1");
    assert_eq!(kept[0]["module"], "email_security");
    assert_eq!(kept[0]["outcome"], "pushed");
    assert!(!of_run("3").is_empty());
    // last_known is never pruned: every pair is still there, the disabled one unchanged.
    let now_known = e.store().last_known(None).unwrap();
    assert_eq!(now_known.len(), last_known.len());
    let pair = |l: &&gradient_connector::store::ledger::LastKnown| {
        l.account == "msp-a-ws1" && l.service == "email_security"
    };
    assert_eq!(
        now_known.iter().find(pair),
        last_known.iter().find(pair),
        "the disabled pair keeps its last-known value"
    );
}

#[test]
fn old_outbox_events_are_pruned_after_a_run_even_when_no_daemon_delivers_them() {
    // A webhook nobody delivers to (only the CLI runs): its events stay pending, and a run still
    // keeps the outbox short. Any event goes after 30 days, delivered or not.
    let e = SimEnv::with_config(|c| {
        c.webhook(gradient_connector_kit::Webhook::new(
            "http://127.0.0.1:9/hooks",
            "webhook-secret",
        ))
    });
    let secret = e
        .env
        .write("webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    e.import_inventory(&two_msps(1, 3));
    e.connect("msp-a", KEY_A);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let c = rusqlite::Connection::open(e.env.store_path()).unwrap();
    let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert!(
        count("SELECT count(*) FROM events") > 0,
        "events were written"
    );
    let old = gradient_connector::time::now_ms() - 31 * 86_400_000;
    c.execute("UPDATE events SET created_at = ?1", [old])
        .unwrap();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM events WHERE created_at <= {old}"
        )),
        0,
        "the old events were pruned"
    );
    assert!(
        count("SELECT count(*) FROM events") > 0,
        "the new run's events stay"
    );
}

/// A configuration as the contract writes it — no `store.key_file` — works out of the box: the
/// key is made beside the store at first use (0600), tokens are sealed under it, and
/// `check-config` warns where the key lives (exit 0) without creating anything.
#[test]
fn without_store_key_file_a_key_beside_the_store_is_made_at_first_use_and_check_config_warns() {
    let e = setup();
    e.env
        .write_config(&e.env.config_builder().unset("store", "key_file"));
    let mut beside = e.env.store_path().into_os_string();
    beside.push(".key");
    let beside = std::path::PathBuf::from(beside);

    let out = e.run(&["check-config"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("store.key_file") && said.contains("beside the store"),
        "{said}"
    );
    assert!(!beside.exists(), "check-config creates nothing");

    e.connect("msp-a", KEY_A);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&beside).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key beside the store is private");
    assert_eq!(e.store().token_keys().unwrap().1, 0, "no plain token");
    let before = e.sim.snapshot().pushes.len();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        e.sim.snapshot().pushes.len() > before,
        "the sealed token pushed"
    );
    assert_no_token_bytes("the store", &e.env.store_path(), &[KEY_A]);
    // The key named explicitly must exist: a missing one stays a configuration problem.
    let named = e
        .env
        .config_builder()
        .store_key_file(e.env.path("missing-store-key"));
    let cfg = e.env.write_config_as("named.toml", &named);
    let out = run_bin(&cfg, &["sync"], None);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
}
