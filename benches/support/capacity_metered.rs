//! The capacity benchmark's metered figures: 40,000 quantity pairs (10,000 workspaces × 4 metered
//! services, a usage sample every third day of October each), counted for October by `peak` and by
//! `average` — the monthly plan's counting step, the one part that differs between the two rules.

use super::*;
use gradient_connector::store::counting::ServiceUnit;

const WORKSPACES: usize = 10_000;
const MODULES: [&str; 4] = ["backup", "archive", "m365-backup", "storage"];

/// Generates the store (through the import) and times each rule, best of five.
pub(crate) fn measure_metered(dir: &Path) -> Value {
    let path = fresh(&dir.join("metered.db"));
    let mut store = Store::open(&path, Duration::from_secs(5)).unwrap();
    let mut records = 0usize;
    for chunk in 0..10 {
        let mut inv = Inventory::new();
        if chunk == 0 {
            inv.at(OCTOBER_2026).channel("mc", "Metered MSP");
        }
        for w in chunk * WORKSPACES / 10..(chunk + 1) * WORKSPACES / 10 {
            let ws = format!("mw-{w}");
            inv.at(OCTOBER_2026)
                .workspace(&ws, "mc", &format!("Customer {w}"));
            for m in MODULES {
                inv.module(&ws, m, true);
            }
            for day in (1..=31).step_by(3) {
                inv.at(&format!("2026-10-{day:02}T06:00:00Z"));
                for (i, m) in MODULES.iter().enumerate() {
                    let q = ((w * 7 + day * 13 + i * 101) % 5000) as f64 + 0.25;
                    inv.usage(&ws, m, q);
                }
            }
        }
        records += inv.len();
        let text = inv.to_jsonl();
        gradient_connector::store::import::import(&mut store, text.as_bytes(), now_ms()).unwrap();
    }
    let services: Vec<ServiceUnit> = MODULES
        .iter()
        .map(|m| ServiceUnit::new(*m, UnitKind::Quantity))
        .collect();
    let (from, to) = Month {
        year: 2026,
        month: 10,
    }
    .bounds(chrono_tz::UTC);
    let time = |how: MonthlyCount| -> (f64, usize) {
        let mut best = f64::INFINITY;
        let mut pairs = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let counts = store
                .count(&services, CountQuestion::Month { from, to, how })
                .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            pairs = counts.figures.len();
        }
        (best, pairs)
    };
    let (peak, pairs) = time(MonthlyCount::Peak);
    let (average, _) = time(MonthlyCount::Average);
    println!(
        "metered: {records} records, {pairs} quantity pairs; October by peak {peak:.2} s, by average {average:.2} s"
    );
    json!({
        "records": records,
        "pairs": pairs,
        "peak_secs": peak,
        "average_secs": average,
        "average_vs_peak": average / peak.max(0.000_001),
    })
}
