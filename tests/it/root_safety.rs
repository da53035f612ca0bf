//! Root cannot break the service: commands run as root against a store another user owns refuse
//! (exit 1) and name `runuser -u OWNER -- gradient-connector …`; they leave nothing behind, and the
//! owner's next sync works. Needs root (CI runs as root): unprivileged, the case is skipped with a
//! line on stderr, unless `GRADIENT_CONNECTOR_TEST_PRIVILEGED=1` makes that a failure.

use crate::common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The service user of this test: present on every Debian system, never root.
const OWNER: &str = "nobody";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(out.status.success(), "no user {user}");
    stdout(&out).trim().parse().unwrap()
}

fn chown_r(path: &Path, user: &str) {
    let st = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `bin --config config args…` as `user` (through runuser) or as this process (root).
fn run_as(
    user: Option<&str>,
    bin: &Path,
    config: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    run_with(cmd, config, args, stdin)
}

/// Every file under `dir`: its owner and mode.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u32, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p, (m.uid(), m.mode() & 0o7777));
        }
    }
    out
}

#[test]
fn root_refuses_a_store_the_service_user_owns_and_the_service_user_still_works() {
    if !is_root() {
        assert!(
            std::env::var("GRADIENT_CONNECTOR_TEST_PRIVILEGED").as_deref() != Ok("1"),
            "root safety: not root, but GRADIENT_CONNECTOR_TEST_PRIVILEGED=1 requires it"
        );
        eprintln!("root safety skipped: needs root (to act as root and as {OWNER})");
        return;
    }
    let owner_uid = uid_of(OWNER);
    let e = SimEnv::new("", "");
    let dir = e.env.dir.path().to_path_buf();
    // The service user must reach the binary: a copy in its own directory (the build's target
    // directory may sit where it cannot look).
    let bin = dir.join("gradient-connector");
    std::fs::copy(BIN, &bin).unwrap();
    // A second configuration whose store does not exist yet, in a directory the owner holds.
    std::fs::create_dir(dir.join("fresh")).unwrap();
    let fresh = e.env.write_config_as(
        "fresh.toml",
        &e.env.config_builder().store_path("fresh/store.db"),
    );
    e.sim.add_msp("msp-a", "msp-a MSP", "key-a");
    let token = e.env.write("token-a", "key-a\n");
    chown_r(&dir, OWNER);
    let config = e.env.config.clone();

    // The service user sets up: an import, a paste.
    let inventory = two_msps(2, 3).to_jsonl();
    let out = run_as(
        Some(OWNER),
        &bin,
        &config,
        &["import", "-"],
        Some(&inventory),
    );
    assert_eq!(code(&out), 0, "import as {OWNER}: {}", stderr(&out));
    let out = run_as(
        Some(OWNER),
        &bin,
        &config,
        &[
            "connector",
            "add",
            "msp-a",
            "--token-file",
            token.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&out), 0, "connector add as {OWNER}: {}", stderr(&out));
    let before = listing(&dir);

    // Root: every command that touches the store refuses, naming the command to run instead.
    let config_s = config.to_str().unwrap();
    let attempts: [(&[&str], Option<&str>); 6] = [
        (&["sync"], None),
        (&["import", "-"], Some(inventory.as_str())),
        (&["status"], None),
        (&["history"], None),
        (&["connector", "list"], None),
        (&["check-config"], None),
    ];
    for (args, stdin) in attempts {
        let out = run_as(None, &bin, &config, args, stdin);
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "root {args:?}: {err}");
        let suggested = format!(
            "runuser -u {OWNER} -- gradient-connector --config {config_s} {}",
            args.join(" ")
        );
        assert!(
            err.contains(&suggested),
            "root {args:?} should suggest `{suggested}`: {err}"
        );
    }
    // Before the store exists: its directory's owner decides.
    let out = run_as(None, &bin, &fresh, &["import", "-"], Some(&inventory));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("runuser -u {OWNER} --")),
        "{}",
        stderr(&out)
    );
    // Root left nothing behind and changed no owner or mode.
    assert_eq!(
        listing(&dir),
        before,
        "root's refused commands changed the directory"
    );

    // The service user's sync still works, and everything stays the owner's.
    let out = run_as(Some(OWNER), &bin, &config, &["sync"], None);
    assert_eq!(
        code(&out),
        0,
        "sync as {OWNER} after root: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let snap = e.sim.snapshot();
    let sid = snap.service_id("Endpoint Security").unwrap();
    assert_eq!(
        snap.org("msp-a").unwrap().count("msp-a-ws2", sid),
        Some(2.0)
    );
    for (path, (uid, _)) in listing(&dir) {
        assert_eq!(uid, owner_uid, "{} is not {OWNER}'s", path.display());
    }
}
