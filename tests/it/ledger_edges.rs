//! The ledger at the edges, through the real binary: a full disk stops a run at once, a crash is
//! told to the console at the next start, and the ledger never holds two rows for one pair of a run.

use crate::common::*;

use std::io::Write;
use std::process::Command;

use gradient_connector::domain::PairOutcome;
use gradient_connector::store::ledger::{HistoryFilter, LedgerEntry};
use gradient_connector::store::Store;
use gradient_connector_kit::{msp_id, Inventory, Units};

fn inventory(msps: usize, per: usize) -> Inventory {
    Inventory::msps(msps, per, |k| Units {
        devices: k % 7 + 1,
        users: k % 5 + 1,
    })
}

fn ledger_rows(store: &Store) -> Vec<LedgerEntry> {
    store
        .history(&HistoryFilter {
            limit: u32::MAX,
            ..HistoryFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect()
}

fn accepted_pushes(e: &SimEnv) -> usize {
    e.sim
        .snapshot()
        .pushes
        .iter()
        .filter(|p| p.status == 201)
        .count()
}

/// A tmpfs mounted at a path for the life of the guard (root only: CI runs this as root with
/// GRADIENT_CONNECTOR_TEST_PRIVILEGED=1, where a missing mount is a failure, never a skip).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var("GRADIENT_CONNECTOR_TEST_PRIVILEGED").as_deref() != Ok("1"),
                "mounting a tmpfs failed, but GRADIENT_CONNECTOR_TEST_PRIVILEGED=1 requires it"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    /// Fills the file system, then frees `leave` bytes: the next writes find that much room.
    fn fill_leaving(&self, leave: u64) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5a_u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_a_run_stops_sending_at_once_and_exits_1_naming_the_store() {
    let max_in_flight: usize = 8;
    let e = SimEnv::with_config(|c| {
        c.store_path("tiny/store.db")
            .set("gradient", "requests_per_second", 100)
            .set("gradient", "max_in_flight", max_in_flight as i64)
    });
    let Some(fs) = Tmpfs::mount(&e.env.path("tiny"), "48m") else {
        return;
    };
    e.import_inventory(&inventory(3, 150));
    for m in 0..3 {
        e.connect(&msp_id(m), &format!("key-{m}"));
    }
    let filler = fs.fill_leaving(200 * 1024);

    let out = e.run(&["sync"]);
    let store = e.env.path("tiny/store.db");
    // Room again, to read what the ledger holds.
    std::fs::remove_file(&filler).unwrap();
    let opened = Store::open(&store, std::time::Duration::from_secs(5)).unwrap();
    let pushed_rows = ledger_rows(&opened)
        .iter()
        .filter(|r| r.outcome == PairOutcome::Pushed)
        .count();
    let accepted = accepted_pushes(&e);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains(&store.display().to_string()),
        "the message names the store: {}",
        stderr(&out)
    );
    assert!(
        accepted < 3 * 150 * 2,
        "the run went on pushing after the ledger failed ({accepted} accepted)"
    );
    assert!(
        accepted <= pushed_rows + 2 * max_in_flight,
        "Gradient accepted {accepted} pushes, the ledger shows {pushed_rows}: more than the requests in flight were lost"
    );

    // With room again, the next run pushes everything and the ledger agrees with Gradient.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let runs: Vec<_> = opened.runs(10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].outcome.map(|o| o.as_str()), Some("ok"));
    assert!(
        matches!(
            runs[1].outcome.map(|o| o.as_str()),
            Some("failed" | "interrupted")
        ),
        "the stopped run is on record: {runs:?}"
    );
    eprintln!("accepted {accepted}, ledger rows pushed {pushed_rows}");
    drop(fs);
}

/// One plain HTTP/1.1 GET over the daemon's unix socket: (status, body).
fn get(socket: &std::path::Path, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn the_daemon_on_a_full_disk_logs_counts_and_is_not_ready_until_the_store_takes_writes() {
    let e = SimEnv::with_config(|c| c.store_path("tiny/store.db"));
    let Some(fs) = Tmpfs::mount(&e.env.path("tiny"), "16m") else {
        return;
    };
    e.import_inventory(&inventory(2, 60));
    for m in 0..2 {
        e.connect(&msp_id(m), &format!("key-{m}"));
    }
    let d = Daemon::start(&e, &[]);
    let socket = e.env.path("api.sock");
    assert_eq!(get(&socket, "/readyz").0, 200);
    let filler = fs.fill_leaving(200 * 1024);
    d.signal("USR1");
    d.wait_log("ledger rows could not be written");
    d.wait_log("the run stopped sending at once");
    let (status, body) = get(&socket, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unwritable"), "{body}");
    assert!(body.contains("tiny/store.db"), "{body}");
    let (_, metrics) = get(&socket, "/metrics");
    assert!(
        metrics.contains("gradient_connector_store_writable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gradient_connector_store_write_failures_total"),
        "{metrics}"
    );
    // Room again: ready again, with no restart (a probe write tries again 3 s after a refusal).
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        "/readyz ready again",
        || get(&socket, "/readyz").0 == 200,
        || get(&socket, "/readyz").1,
    );
    let (_, metrics) = get(&socket, "/metrics");
    assert!(
        metrics.contains("gradient_connector_store_writable 1"),
        "{metrics}"
    );
    d.stop();
    drop(fs);
}

#[test]
fn a_deadline_after_partial_progress_records_each_pair_once_and_keeps_what_was_pushed() {
    let e = SimEnv::new("run_deadline_secs = 2", "");
    e.import_inventory(&two_msps(40, 1));
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    e.sim
        .set_count_latency(std::time::Duration::from_millis(500));
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 75, "{}{}", stdout(&out), stderr(&out));
    assert!(
        !stderr(&out).contains("second ledger row"),
        "a pair was recorded twice: {}",
        stderr(&out)
    );
    let store = e.store();
    let run = store.runs(1).unwrap().remove(0);
    let rows: Vec<LedgerEntry> = ledger_rows(&store)
        .into_iter()
        .filter(|r| r.run_id == run.id)
        .collect();
    assert_eq!(rows.len(), 160, "every planned pair has one row");
    let pushed: Vec<&LedgerEntry> = rows
        .iter()
        .filter(|r| r.outcome == PairOutcome::Pushed)
        .collect();
    let failed = rows
        .iter()
        .filter(|r| r.outcome == PairOutcome::Failed)
        .count();
    assert!(
        !pushed.is_empty() && failed > 0,
        "partial progress: {} pushed, {failed} failed",
        pushed.len()
    );
    assert_eq!(pushed.len() + failed, 160);
    assert_eq!(run.tally.pushed as usize, pushed.len());
    // Each pushed row is a count the stand-in accepted.
    let snap = e.sim.snapshot();
    for r in pushed {
        assert!(
            snap.pushes.iter().any(|p| p.status == 201
                && p.org_id.as_deref() == Some(r.connector_id.as_str())
                && p.account_id.as_str() == Some(r.account_id.as_str())),
            "{r:?}"
        );
    }
}
