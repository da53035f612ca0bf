//! Pull sources of kind `command` and the inventory's freshness, on the real binary against
//! gradient-sim: a source is pulled before every run and by `source pull`, each pull in one
//! transaction (a non-zero exit, a bad line or a timeout applies nothing), its stderr logged
//! escaped; a stale inventory pushes nothing (exit 75), says so in `status`, and tells the console
//! once per stale spell; a signalled run, a `source pull` and an `import` at once each wait their
//! turn for the store's one writer and lose nothing.

use crate::common::*;
use gradient_connector::domain::EventKind;
use gradient_connector_kit::{Inventory, Source, Webhook};
use serde_json::Value;

/// A stand-in, msp-a connected, and a command source (`sh -c SCRIPT`) configured by `edit`.
fn env_with(
    source: Source,
    edit: impl FnOnce(gradient_connector_kit::ConfigBuilder) -> gradient_connector_kit::ConfigBuilder,
) -> SimEnv {
    let e = SimEnv::with_config(|c| edit(c.source(source)));
    e.sim.add_msp("msp-a", "msp-a MSP", "key-a");
    e
}

/// `/bin/sh -c` running `script` (the test's program; the daemon runs argv without a shell).
fn sh(name: &str, script: &str, mode: &str) -> Source {
    Source::command(name, &["/bin/sh", "-c", script], mode)
}

fn sources_json(e: &SimEnv) -> Vec<Value> {
    let out = e.run(&["source", "list", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The vendor's export, as a file a command source reads (kept while the directory lives).
fn export_file(inventory: &Inventory) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, inventory.to_jsonl()).unwrap();
    (dir, file)
}

fn channels(e: &SimEnv) -> Vec<String> {
    e.store().channel_ids().unwrap()
}

#[test]
fn a_command_source_is_pulled_before_every_run_and_feeds_it() {
    let (_dir, file) = export_file(&two_msps(2, 3));
    let e = env_with(
        sh("export", &format!("cat {}", file.display()), "snapshot"),
        |c| c,
    );
    // The first pull (here by hand) makes the channel known, so the connector can be added.
    let out = e.run(&["source", "pull"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(channels(&e).contains(&"msp-a".to_string()));
    e.add_token("msp-a", "key-a", 0);
    let listed = sources_json(&e);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["outcome"], "ok", "{listed:?}");
    assert_eq!(listed[0]["mode"], "snapshot");
    assert_eq!(listed[0]["stale"], false);
    // The export changes; the run pulls it first and pushes what it says.
    let mut fewer = two_msps(2, 3);
    fewer
        .at("2026-11-01T00:00:00Z")
        .user("msp-a-ws1", "msp-a-ws1-u0", false);
    std::fs::write(&file, fewer.to_jsonl()).unwrap();
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let snap = e.sim.snapshot();
    let mail = snap.service_id("Email Security").unwrap().to_string();
    assert_eq!(
        snap.org("msp-a").unwrap().count("msp-a-ws1", &mail),
        Some(3.0)
    );
    assert!(sources_json(&e)[0]["records"].as_u64().unwrap() > 10);
}

#[test]
fn a_failing_command_applies_nothing_and_says_why() {
    let good = Inventory::small().to_jsonl();
    let cases = [
        // Valid lines, then a non-zero exit.
        (
            format!("printf '%s' '{good}'; echo 'oops' >&2; exit 3"),
            "exit status: 3",
        ),
        // A bad line among good ones.
        (
            format!("printf '%s' '{good}'; echo '{{\"type\":\"bogus\"}}'"),
            "bad line",
        ),
    ];
    for (script, why) in cases {
        let e = env_with(sh("export", &script, "records"), |c| c);
        let out = e.run(&["source", "pull", "export"]);
        assert_eq!(code(&out), 75, "{script}: {}{}", stdout(&out), stderr(&out));
        assert!(channels(&e).is_empty(), "{script}: something was applied");
        let listed = sources_json(&e);
        assert_eq!(listed[0]["outcome"], "failed");
        let message = listed[0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{script}: {message}");
    }
}

#[test]
fn a_command_over_its_timeout_is_killed_and_applies_nothing_and_stderr_is_logged_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let good = Inventory::small().to_jsonl();
    let script = format!(
        "echo $$ > {}; printf '\\033[31mred\\n' >&2; printf '%s' '{good}'; exec sleep 30",
        pid_file.display()
    );
    let e = env_with(sh("slow", &script, "records").timeout_secs(1), |c| c);
    let started = std::time::Instant::now();
    let out = e.run(&["source", "pull"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(channels(&e).is_empty(), "a timed-out pull applied records");
    let message = sources_json(&e)[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("longer than 1 s"), "{message}");
    // The program is gone (killed, not left running).
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    wait_for(
        "the killed program to be gone",
        || !proc_dir.exists(),
        || pid.clone(),
    );
    // Its stderr was logged, the escape character shown, never sent raw to the terminal.
    let err = stderr(&out);
    assert!(err.contains("source stderr"), "{err}");
    assert!(err.contains("red") && !err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn a_stale_inventory_pushes_nothing_exits_75_and_tells_the_console_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let e = env_with(sh("export", "exit 1", "records"), |c| {
        c.set("inventory", "max_age_hours", 1)
            .webhook(Webhook::new("http://127.0.0.1:9/hook", &secret))
    });
    // The inventory came by import once; the source never succeeded.
    e.import_inventory(&Inventory::small());
    e.add_token("msp-a", "key-a", 0);
    let before = e.sim.snapshot().pushes.len();
    for _ in 0..2 {
        let out = e.run(&["sync"]);
        assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
        assert!(
            stdout(&out).contains("stale inventory") || stderr(&out).contains("stale inventory")
        );
    }
    assert_eq!(e.sim.snapshot().pushes.len(), before, "a stale run pushed");
    let runs = runs(&e);
    assert!(
        runs.iter().all(|r| r.4.as_deref() == Some("failed")),
        "{runs:?}"
    );
    let status = e.status_json();
    assert_eq!(status["sources"][0]["stale"], true, "{status:#}");
    assert!(
        status["last_run"]["message"]
            .as_str()
            .unwrap()
            .starts_with("stale inventory"),
        "{status:#}"
    );
    // Told once for the spell, not once per run.
    let told = e.store().events_of(EventKind::InventoryStale).unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    let body: Value = serde_json::from_str(&told[0].1).unwrap();
    assert_eq!(body["data"]["sources"][0]["name"], "export", "{body}");
    assert_eq!(body["data"]["max_age_hours"], 1);
    let human = stdout(&e.run(&["status"]));
    assert!(human.contains("STALE"), "{human}");
}

/// The store's writers at once: a signalled run (which pulls the source first), a `source pull`
/// and a CLI `import`, while the source is slow. Each waits its turn for the one writer; every
/// record lands, both pulls succeed, and the run pushes what the source said.
#[test]
fn a_signalled_run_a_source_pull_and_an_import_at_once_lose_nothing() {
    let (_dir, file) = export_file(&two_msps(2, 3));
    let e = env_with(
        sh(
            "export",
            &format!(
                "sleep 0.3; head -n 5 {f}; sleep 0.3; cat {f}",
                f = file.display()
            ),
            "records",
        ),
        |c| c.set("schedule", "catch_up", false),
    );
    let out = e.run(&["source", "pull"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    e.add_token("msp-a", "key-a", 0);
    let mut other = Inventory::new();
    other.undated().channel("msp-c", "msp-c IT");
    other
        .undated()
        .workspace("msp-c-ws1", "msp-c", "Customer msp-c-ws1");
    other.at("2026-10-02T00:00:00Z").protected(
        "msp-c-ws1",
        gradient_connector::domain::UnitKind::Users,
        4,
    );
    let other_file = e.env.write("other.jsonl", &other.to_jsonl());

    let d = Daemon::start(&e, &[]);
    d.signal("USR1");
    let (import, pull) = std::thread::scope(|s| {
        let import = s.spawn(|| e.run(&["import", other_file.to_str().unwrap()]));
        let pull = s.spawn(|| e.run(&["source", "pull"]));
        (import.join().unwrap(), pull.join().unwrap())
    });
    assert_eq!(code(&import), 0, "{}{}", stdout(&import), stderr(&import));
    assert_eq!(code(&pull), 0, "{}{}", stdout(&pull), stderr(&pull));
    wait_for(
        "the signalled run to finish",
        || {
            e.store()
                .runs(10)
                .unwrap()
                .iter()
                .any(|r| r.trigger == "signal" && r.finished_at.is_some())
        },
        || d.log(),
    );
    let run = e
        .store()
        .runs(10)
        .unwrap()
        .into_iter()
        .find(|r| r.trigger == "signal")
        .unwrap();
    assert_eq!(
        run.outcome,
        Some(gradient_connector::domain::RunOutcome::Ok),
        "{run:?}\n{}",
        d.log()
    );
    assert!(run.tally.pushed > 0, "{run:?}");
    let mut known = channels(&e);
    known.sort();
    assert_eq!(known, ["msp-a", "msp-b", "msp-c"]);
    let listed = sources_json(&e);
    assert_eq!(listed[0]["outcome"], "ok", "{listed:?}");
    let snap = e.sim.snapshot();
    let mail = snap.service_id("Email Security").unwrap().to_string();
    assert_eq!(
        snap.org("msp-a").unwrap().count("msp-a-ws1", &mail),
        Some(4.0)
    );
}
