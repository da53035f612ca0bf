//! Status: what the connector knows, assembled for operators — `status`, `history`, `connector list`
//! and the dry-run plan, as JSON-ready views here and as human tables in [`render`]. Read-only;
//! never prints a token.

mod render;

pub use render::{
    columns, render_connectors, render_dry_run, render_history, render_report, render_status,
};

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::domain::UnitCount;
use crate::domain::{PairOutcome, Tally};
use crate::store::ledger::{ConnectorRow, HistoryFilter, LastKnown, LedgerRow, RunLock, RunRow};
use crate::store::{Store, StoreError};

use crate::time::{format_ms, now_ms, Millis};

/// Module → (service name, Gradient id), as the store knows them.
type ServiceNames = HashMap<String, (String, String)>;

/// What status knows of the services: their names and ids in Gradient (from the store) and the
/// unit names of quantity services (from the configuration: module → `GB`).
pub struct Services<'a> {
    names: &'a ServiceNames,
    quantities: &'a HashMap<String, String>,
}

/// A pair as shown in status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PairView {
    /// Account id.
    pub account: String,
    /// Module (service): the module id, as `service` has always been.
    pub service: String,
    /// The module id (the same as `service`).
    pub module: String,
    /// The service's name in Gradient (None until the service is created).
    pub service_name: Option<String>,
    /// Count involved (for disabled pairs: the last known value).
    pub unit_count: Option<UnitCount>,
    /// A quantity service's unit name (`GB`); null for unit services.
    pub quantity_name: Option<String>,
    /// Outcome of its latest push.
    pub outcome: PairOutcome,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: String,
}

/// One last-known value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastKnownView {
    /// Account id.
    pub account: String,
    /// Module (service): the module id, as `service` has always been.
    pub service: String,
    /// The module id (the same as `service`).
    pub module: String,
    /// The service's name in Gradient (None until the service is created).
    pub service_name: Option<String>,
    /// Last count Gradient accepted.
    pub unit_count: UnitCount,
    /// A quantity service's unit name (`GB`); null for unit services.
    pub quantity_name: Option<String>,
    /// When.
    pub pushed_at: String,
}

/// One connector in status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectorView {
    /// Id.
    pub id: String,
    /// Who at the MSP is mailed (`[email]`); shown by `GET /v1/connectors/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    /// State.
    pub state: crate::domain::ConnectorState,
    /// Why.
    pub state_reason: Option<String>,
    /// Integration status Gradient last reported.
    pub gradient_status: Option<String>,
    /// Organisation name Gradient reported.
    pub organization_name: Option<String>,
    /// When Gradient last saw a sync (None: never).
    pub gradient_synced_at: Option<String>,
    /// Accounts Gradient says the MSP has not mapped yet (when Gradient says so).
    pub unmapped_accounts: Vec<String>,
    /// Token last verified.
    pub verified_at: Option<String>,
    /// Last run without failures.
    pub last_success_at: Option<String>,
    /// Counts per outcome in the last run.
    pub last_run_counts: Option<Tally>,
    /// Last pushed counts.
    pub last_known: Vec<LastKnownView>,
    /// Pairs Gradient answered 404 for (not mapped by the MSP yet).
    pub unmapped: Vec<PairView>,
    /// Pairs whose latest push failed or was rejected.
    pub failing: Vec<PairView>,
    /// Pairs whose module is disabled (Gradient keeps the last known value).
    pub disabled: Vec<PairView>,
    /// What the operator should look at (a connector whose id names no channel of the inventory).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A run as the control API's `/v1/runs` lists it: `outcome` is null while the run is going.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunItem {
    /// Id.
    pub id: i64,
    /// What started it.
    pub trigger: String,
    /// `daily` or `monthly`.
    pub cadence: String,
    /// Period label.
    pub period: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339), null while running.
    pub finished_at: Option<String>,
    /// `ok`, `partial`, `failed`, `interrupted`; null while running.
    pub outcome: Option<String>,
    /// Counts per outcome.
    pub counts: Tally,
}

/// The last run in status: the run as `/v1/runs` lists it, and its message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    /// The run (its fields are this object's own in JSON).
    #[serde(flatten)]
    pub run: RunItem,
    /// Why it failed or was interrupted, when it did.
    pub message: Option<String>,
}

fn run_item(r: &RunRow, outcome: Option<String>) -> RunItem {
    RunItem {
        id: r.id,
        trigger: r.trigger.clone(),
        cadence: r.cadence.clone(),
        period: r.period.clone(),
        started_at: format_ms(r.started_at),
        finished_at: r.finished_at.map(format_ms),
        outcome,
        counts: r.tally,
    }
}

/// The newest `limit` runs.
pub fn runs(store: &Store, limit: u32) -> Result<Vec<RunItem>, StoreError> {
    store
        .runs(limit)?
        .iter()
        .map(|r| live_item(store, r))
        .collect()
}

/// One run (`GET /v1/runs/{id}`); None when there is no such run.
pub fn run(store: &Store, id: i64) -> Result<Option<RunItem>, StoreError> {
    store.run(id)?.map(|r| live_item(store, &r)).transpose()
}

/// A run as the API shows it: a run still going has `outcome` null and the counts its ledger holds
/// so far (its record gets its counts when it closes).
fn live_item(store: &Store, r: &RunRow) -> Result<RunItem, StoreError> {
    let mut item = run_item(r, r.outcome.map(|o| o.as_str().to_string()));
    if r.finished_at.is_none() {
        let mut so_far = Tally::default();
        for t in store.run_tally_by_connector(r.id)?.values() {
            so_far.merge(t);
        }
        item.counts = so_far;
    }
    Ok(item)
}

/// The whole status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Connectors.
    pub connectors: Vec<ConnectorView>,
    /// The newest run, or null.
    pub last_run: Option<RunView>,
    /// Whether a run holds the run lock now.
    pub running: bool,
    /// Next scheduled run per the configuration.
    pub next_scheduled_run: Option<String>,
    /// Cadence and schedule.
    pub schedule: String,
    /// Where the control API listens (per the configuration).
    pub api: String,
    /// Webhook events not delivered yet, and given up.
    pub events: crate::store::outbox::OutboxCounts,
    /// The ledger's row count, oldest row, and the store's size.
    pub ledger: crate::store::lifecycle::LedgerStats,
    /// Inventory times dated in the future (older builds accepted them); repaired by
    /// `gradient-connector store repair-future`.
    pub future_dated_records: u64,
    /// Modules enabled in the inventory that no `[[service]]` names: never pushed.
    pub unreported_modules: Vec<crate::store::import::UnreportedModule>,
    /// The pull sources (`[[source]]`) with their last pulls; a `stale` one stops every run.
    pub sources: Vec<crate::sources::SourceView>,
}

fn run_view(r: &RunRow, running: bool) -> RunView {
    let outcome = match (r.outcome, running) {
        (Some(o), _) => Some(o.as_str().to_string()),
        (None, true) => None,
        // Unfinished and nobody holds the lock: it died; the next run records it as interrupted.
        (None, false) => Some("interrupted".into()),
    };
    RunView {
        run: run_item(r, outcome),
        message: r.message.clone(),
    }
}

fn pair_view(r: &LedgerRow, names: &Services) -> PairView {
    PairView {
        account: r.entry.account_id.clone(),
        service: r.entry.module.clone(),
        module: r.entry.module.clone(),
        service_name: names.names.get(&r.entry.module).map(|(n, _)| n.clone()),
        unit_count: r.entry.unit_count,
        quantity_name: names.quantities.get(&r.entry.module).cloned(),
        outcome: r.entry.outcome,
        reason: r.entry.reason.clone(),
        at: format_ms(r.entry.at),
    }
}

fn last_known_view(l: &LastKnown, names: &Services) -> LastKnownView {
    LastKnownView {
        account: l.account.clone(),
        service: l.service.clone(),
        module: l.service.clone(),
        service_name: names.names.get(&l.service).map(|(n, _)| n.clone()),
        unit_count: l.unit_count,
        quantity_name: names.quantities.get(&l.service).cloned(),
        pushed_at: format_ms(l.pushed_at),
    }
}

/// The outcomes status lists per connector: unmapped, failing and disabled pairs.
const LISTED: [PairOutcome; 4] = [
    PairOutcome::Unmapped,
    PairOutcome::Failed,
    PairOutcome::Rejected,
    PairOutcome::SkippedDisabled,
];

/// One connector's view from its row, its listed pairs' newest rows, its last-known values and
/// its counts in the last run.
fn connector_view(
    c: ConnectorRow,
    rows: &[LedgerRow],
    known: &[LastKnown],
    last_run_counts: Option<Tally>,
    (channels, names): (&[String], &Services),
) -> ConnectorView {
    let pick = |o: &[PairOutcome]| -> Vec<PairView> {
        rows.iter()
            .filter(|r| o.contains(&r.entry.outcome))
            .map(|r| pair_view(r, names))
            .collect()
    };
    ConnectorView {
        contacts: None,
        state: c.state,
        state_reason: c.state_reason,
        gradient_status: c.gradient_status,
        organization_name: c.organization_name,
        gradient_synced_at: c.gradient_synced_at.map(format_ms),
        unmapped_accounts: c.unmapped_accounts,
        verified_at: c.verified_at.map(format_ms),
        last_success_at: c.last_success_at.map(format_ms),
        last_run_counts,
        last_known: known.iter().map(|l| last_known_view(l, names)).collect(),
        unmapped: pick(&[PairOutcome::Unmapped]),
        failing: pick(&[PairOutcome::Failed, PairOutcome::Rejected]),
        disabled: pick(&[PairOutcome::SkippedDisabled]),
        warnings: channel_warning(&c.id, channels).into_iter().collect(),
        id: c.id,
    }
}

/// A connector reports the workspaces of the channel its id names: when the inventory has no such
/// channel, every run says `ok` with nothing pushed, for ever. Pure; `channels` sorted or not.
pub fn channel_warning(id: &str, channels: &[String]) -> Option<String> {
    if channels.iter().any(|c| c == id) {
        return None;
    }
    let near: Vec<String> = channels
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(id) || c.trim() == id.trim())
        .map(|c| format!("{c:?}"))
        .collect();
    Some(if near.is_empty() {
        format!("no channel {id:?} in the inventory: this connector reports nothing until the inventory names a channel with exactly this id")
    } else {
        format!(
            "no channel {id:?} in the inventory (ids are exact and case-sensitive; the inventory has {}): this connector reports nothing until they match",
            near.join(", ")
        )
    })
}

/// One connector's status (what `GET /v1/connectors/{id}` answers), read with that connector's
/// rows only — its cost does not grow with the number of connectors. `None`: no such connector.
/// `quantities`: [`Config::quantity_names`].
pub fn connector_status(
    store: &Store,
    id: &str,
    quantities: &HashMap<String, String>,
) -> Result<Option<ConnectorView>, StoreError> {
    let Some(c) = store.connector(id)? else {
        return Ok(None);
    };
    let last_run_counts = match store.last_run()? {
        Some(r) => Some(store.run_tally_of(r.id, id)?).filter(|t| *t != Tally::default()),
        None => None,
    };
    let rows = store.latest_with_outcome(&LISTED, Some(id))?;
    let known = store.last_known(Some(id))?;
    let channels = store.channel_ids()?;
    let names = store.service_ids()?;
    let names = Services {
        names: &names,
        quantities,
    };
    let mut view = connector_view(c, &rows, &known, last_run_counts, (&channels, &names));
    view.contacts = Some(store.contacts(id)?);
    Ok(Some(view))
}

/// Every connector's view, read with one query per kind of row for all of them.
fn connector_views(
    store: &Store,
    last: Option<&RunRow>,
    quantities: &HashMap<String, String>,
) -> Result<Vec<ConnectorView>, StoreError> {
    let mut last_counts: HashMap<String, Tally> = match last {
        Some(r) => store.run_tally_by_connector(r.id)?,
        None => HashMap::new(),
    };
    let mut by_connector: HashMap<String, Vec<LedgerRow>> = HashMap::new();
    for row in store.latest_with_outcome(&LISTED, None)? {
        by_connector
            .entry(row.entry.connector_id.clone())
            .or_default()
            .push(row);
    }
    let mut known: HashMap<String, Vec<LastKnown>> = HashMap::new();
    for l in store.last_known(None)? {
        known.entry(l.connector_id.clone()).or_default().push(l);
    }
    let channels = store.channel_ids()?;
    let names = store.service_ids()?;
    let names = Services {
        names: &names,
        quantities,
    };
    Ok(store
        .connectors()?
        .into_iter()
        .map(|c: ConnectorRow| {
            let rows = by_connector.remove(&c.id).unwrap_or_default();
            let known = known.remove(&c.id).unwrap_or_default();
            let counts = last_counts.remove(&c.id);
            connector_view(c, &rows, &known, counts, (&channels, &names))
        })
        .collect())
}

/// Assembles the status from the store and the configuration.
pub fn status(store: &Store, config: &Config) -> Result<Status, StoreError> {
    let running = RunLock::is_held(store.path());
    let last = store.last_run()?;
    let connectors = connector_views(store, last.as_ref(), &config.quantity_names())?;
    let next = config
        .schedule
        .parsed
        .next_after(now_ms())
        .ok()
        .map(format_ms);
    Ok(Status {
        connectors,
        last_run: last.as_ref().map(|r| run_view(r, running)),
        running,
        next_scheduled_run: next,
        schedule: format!(
            "{} at \"{}\" {}",
            config.schedule.cadence.as_str(),
            config.schedule.cron,
            config.schedule.timezone
        ),
        api: config.api.listen.to_string(),
        events: store.outbox_counts()?,
        ledger: store.ledger_stats()?,
        future_dated_records: store.future_dated(now_ms())?,
        unreported_modules: store.unreported_modules(&config.service_modules())?,
        sources: crate::sources::views(config, &store.source_pulls()?, now_ms()),
    })
}

/// History rows. `changes`: pushes whose count differs from the pair's previous push; a pair's
/// first push counts as a change (Gradient had no figure before it; its `previous_count` is null).
pub fn history(store: &Store, f: &HistoryFilter) -> Result<Vec<LedgerRow>, StoreError> {
    store.history(f)
}

/// "What changed in the last run": the changes (as [`history`]'s `changes`) recorded by the newest
/// run, whatever its outcome or trigger, optionally of one connector. `None` before the first run.
pub fn history_since_last_run(
    store: &Store,
    f: &HistoryFilter,
) -> Result<Option<(i64, Vec<LedgerRow>)>, StoreError> {
    let Some(last) = store.last_run()? else {
        return Ok(None);
    };
    let f = HistoryFilter {
        connector: f.connector.clone(),
        run: Some(last.id),
        changes: true,
        limit: f.limit,
    };
    Ok(Some((last.id, store.history(&f)?)))
}

/// Milliseconds as an optional string, for JSON.
pub fn ms(v: Option<Millis>) -> Option<String> {
    v.map(format_ms)
}

pub use crate::domain::escape;

#[cfg(test)]
mod escape_tests {
    use super::{columns, escape};

    #[test]
    fn columns_line_up_whatever_the_widths() {
        let rows = vec![
            vec!["ID".to_string(), "STATE".into(), "REASON".into()],
            vec![
                "a-very-long-connector-id-indeed".to_string(),
                "connected".into(),
                "".into(),
            ],
            vec!["b".to_string(), "token_rejected".into(), "why".into()],
        ];
        let text = columns(&rows);
        let starts: Vec<usize> = text
            .lines()
            .map(|l| {
                l.find("STATE")
                    .or(l.find("connected"))
                    .or(l.find("token_rejected"))
                    .unwrap()
            })
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");
    }

    #[test]
    fn control_characters_never_reach_a_terminal_raw() {
        let forged = "bad\x1b[2K\rrun 999 ok\nnext\u{202e}";
        let shown = escape(forged);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert_eq!(shown, "bad\\u{1b}[2K\\u{d}run 999 ok\\u{a}next\\u{202e}");
        assert_eq!(escape("Contoso Ltd — é"), "Contoso Ltd — é");
    }
}

#[cfg(test)]
mod connector_status_tests {
    use super::{connector_status, connector_views, HashMap};
    use crate::domain::{Cadence, PairOutcome, RunOutcome, Tally, Trigger};
    use crate::store::ledger::LedgerEntry;

    fn entry(run: i64, connector: &str, account: &str, outcome: PairOutcome) -> LedgerEntry {
        LedgerEntry::for_test(run, connector, account, outcome, 1_000)
    }

    /// The one-connector path answers exactly what the all-connectors path says of that
    /// connector, whatever mix of outcomes its pairs have.
    #[test]
    fn one_connectors_status_is_its_entry_in_the_whole_status() {
        let (_dir, mut s) = crate::store::temp_store();
        for c in ["a", "b", "c"] {
            s.set_token(c, &secrecy::SecretString::from(format!("t-{c}")), 1)
                .unwrap();
            s.mark_connected(c, Some(1), Some("pending"), None, None, 1)
                .unwrap();
        }
        let (r1, _) = s
            .open_run(Trigger::Cli, Cadence::Daily, "p", None, 10)
            .unwrap();
        s.record(&[
            entry(r1, "a", "w1", PairOutcome::Pushed),
            entry(r1, "a", "w2", PairOutcome::Failed),
            entry(r1, "b", "w3", PairOutcome::Unmapped),
        ])
        .unwrap();
        s.finish_run(r1, RunOutcome::Partial, &Tally::default(), None, 20)
            .unwrap();
        let (r2, _) = s
            .open_run(Trigger::Cli, Cadence::Daily, "p", None, 30)
            .unwrap();
        s.record(&[
            entry(r2, "a", "w2", PairOutcome::Pushed),
            entry(r2, "a", "w4", PairOutcome::SkippedDisabled),
            entry(r2, "b", "w5", PairOutcome::Rejected),
        ])
        .unwrap();
        let last = s.last_run().unwrap();
        let all = connector_views(&s, last.as_ref(), &HashMap::new()).unwrap();
        assert_eq!(all.len(), 3);
        for view in &all {
            let mut one = connector_status(&s, &view.id, &HashMap::new())
                .unwrap()
                .unwrap();
            // Only the one-connector answer lists the connector's mail contacts.
            assert_eq!(one.contacts.take(), Some(Vec::new()));
            assert_eq!(
                serde_json::to_value(&one).unwrap(),
                serde_json::to_value(view).unwrap(),
                "connector {}",
                view.id
            );
        }
        let a = connector_status(&s, "a", &HashMap::new()).unwrap().unwrap();
        assert!(a.failing.is_empty(), "w2 pushed in the newer run: {a:?}");
        assert_eq!(a.disabled.len(), 1);
        assert_eq!(a.last_run_counts.map(|t| t.pushed), Some(1));
        assert!(connector_status(&s, "c", &HashMap::new())
            .unwrap()
            .unwrap()
            .last_run_counts
            .is_none());
        assert!(connector_status(&s, "nope", &HashMap::new())
            .unwrap()
            .is_none());
    }
}

#[cfg(test)]
mod channel_warning_tests {
    use super::channel_warning;

    #[test]
    fn a_connector_without_its_channel_is_warned_about_and_a_near_miss_is_named() {
        let channels = vec!["globex".to_string(), "msp-a".to_string()];
        assert_eq!(channel_warning("msp-a", &channels), None);
        let w = channel_warning("Globex", &channels).unwrap();
        assert!(
            w.contains("no channel \"Globex\"") && w.contains("\"globex\""),
            "{w}"
        );
        let w = channel_warning("initech", &channels).unwrap();
        assert!(w.contains("no channel \"initech\" in the inventory"), "{w}");
        assert!(!w.contains("globex"), "{w}");
    }
}
