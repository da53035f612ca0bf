//! The capacity benchmark's snapshot figures: the import file as a nightly full export
//! (`import --snapshot`, a header line first) into a fresh store, then the same snapshot again
//! (everything unchanged) against a plain re-import of the same records.

use super::*;

/// Runs `import` with `args` against `store`; the wall time, asserting success.
fn timed_import(dir: &Path, store: &Path, args: &[&str], file: &Path) -> f64 {
    let cfg = write_config(dir, "http://127.0.0.1:9", store, 90, 8);
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let mut command = Command::new(BIN);
    command.args(["--config", cfg.to_str().unwrap(), "import"]);
    command.args(args).arg(file);
    let out = command.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "import {}: {} in {secs:.2} s",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ")
    );
    secs
}

/// `file` (plain import records) as a snapshot as of now: a header line, then every record.
fn as_snapshot(file: &Path, into: &Path) {
    let now = gradient_connector::time::format_ms(gradient_connector::time::now_ms());
    let mut w = std::io::BufWriter::new(std::fs::File::create(into).unwrap());
    writeln!(w, "{}", json!({"type": "snapshot", "at": now})).unwrap();
    let mut r = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    std::io::copy(&mut r, &mut w).unwrap();
    w.flush().unwrap();
}

/// The figures: a first snapshot import (records/s), the same snapshot again and a plain
/// re-import of the same records (seconds each, and their ratio).
pub(crate) fn measure_snapshot(dir: &Path, file: &Path, lines: usize) -> Value {
    let snapshot = dir.join("snapshot.jsonl");
    as_snapshot(file, &snapshot);
    let store = fresh(&dir.join("snapshot.db"));
    let first = timed_import(dir, &store, &["--snapshot"], &snapshot);
    let again = timed_import(dir, &store, &["--snapshot"], &snapshot);
    let plain_again = timed_import(dir, &store, &[], file);
    json!({
        "records": lines,
        "first_secs": first,
        "records_per_sec": lines as f64 / first,
        "again_secs": again,
        "plain_again_secs": plain_again,
        "again_vs_plain": again / plain_again.max(0.001),
    })
}
