//! What the page shows, read from the store the way `status` and `history` read it: the
//! connectors and the last runs; per connector its companies × services with the last pushed
//! count, the change from the push before, and the chart of every push of the pair.

use std::collections::{BTreeMap, HashMap};

use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::Serialize;

use crate::api::ApiState;
use crate::domain::{PairOutcome, UnitCount};
use crate::store::ledger::HistoryFilter;
use crate::store::StoreError;

/// Pushes read for a connector's charts (the newest first; older ones are left out).
const CHART_ROWS: u32 = 20_000;

/// One company × service row.
#[derive(Serialize)]
struct PairRow {
    account: String,
    company: String,
    module: String,
    service: String,
    count: String,
    unit: Option<String>,
    change: String,
    pushed_at: String,
    chart: String,
}

/// Text as HTML text (for the few strings written outside a template).
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The overview: connectors, the last runs, the outbox.
pub async fn index(state: &ApiState) -> Result<Value, StoreError> {
    let ctx = state.ctx();
    let cfg = ctx.config.clone();
    let (status, runs) = ctx
        .store
        .read(move |s| Ok((crate::status::status(s, &cfg)?, crate::status::runs(s, 10)?)))
        .await?;
    Ok(context! {
        signed_in => state.token.is_some(),
        connectors => Value::from(Serde(&status.connectors)),
        runs => Value::from(Serde(&runs)),
        events_pending => status.events.pending,
        events_failed => status.events.failed,
    })
}

/// One connector's page, or None when there is no such connector.
pub async fn connector(state: &ApiState, id: &str) -> Result<Option<Value>, StoreError> {
    let ctx = state.ctx();
    let quantities = ctx.config.quantity_names();
    let key = id.to_string();
    let read = ctx
        .store
        .read(move |s| {
            let Some(view) = crate::status::connector_status(s, &key, &quantities)? else {
                return Ok(None);
            };
            let rows = s.history(&HistoryFilter {
                connector: Some(key.clone()),
                run: None,
                changes: false,
                limit: CHART_ROWS,
            })?;
            let names: HashMap<String, String> = s
                .channel_workspaces(&key)?
                .into_iter()
                .map(|w| (w.id, w.name))
                .collect();
            Ok(Some((view, rows, names)))
        })
        .await?;
    let Some((view, rows, names)) = read else {
        return Ok(None);
    };
    // Every push of each pair, oldest first.
    let mut pushes: BTreeMap<(String, String), Vec<(i64, UnitCount)>> = BTreeMap::new();
    for r in rows.iter().rev() {
        if let (PairOutcome::Pushed, Some(n)) = (r.entry.outcome, r.entry.unit_count) {
            pushes
                .entry((r.entry.account_id.clone(), r.entry.module.clone()))
                .or_default()
                .push((r.entry.at, n));
        }
    }
    let pairs: Vec<PairRow> = view
        .last_known
        .iter()
        .map(|l| {
            let series = pushes
                .get(&(l.account.clone(), l.module.clone()))
                .cloned()
                .unwrap_or_default();
            let change = match series.len() {
                0 | 1 => "new".to_string(),
                n => series[n - 1].1.change_from(series[n - 2].1),
            };
            let points: Vec<(i64, f64)> = series.iter().map(|(t, n)| (*t, n.as_f64())).collect();
            PairRow {
                account: l.account.clone(),
                company: names
                    .get(&l.account)
                    .cloned()
                    .unwrap_or_else(|| l.account.clone()),
                module: l.module.clone(),
                service: l.service_name.clone().unwrap_or_else(|| l.module.clone()),
                count: l.unit_count.to_string(),
                unit: l.quantity_name.clone(),
                change,
                pushed_at: l.pushed_at.clone(),
                chart: super::chart::svg(&points),
            }
        })
        .collect();
    let sync_body = serde_json::json!({ "connector": view.id }).to_string();
    Ok(Some(context! {
        signed_in => state.token.is_some(),
        c => Value::from(Serde(&view)),
        pairs => Value::from(Serde(&pairs)),
        sync_body => sync_body,
    }))
}
