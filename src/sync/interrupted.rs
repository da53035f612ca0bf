//! Runs that a crash (kill -9, power loss) or an abandoned shutdown left open: closed as
//! `interrupted`, and — in the same transaction — one `connector.synced` event per connector that
//! has ledger rows in them (outcome `interrupted`, `pushed` = what the ledger shows Gradient
//! accepted), so the console hears of every push that reached Gradient.

use std::collections::HashMap;

use super::{synced_events, SyncError, SyncedPart};
use crate::config::Config;
use crate::domain::{EventKind, RunOutcome};
use crate::store::ledger::RunLock;
use crate::store::{Store, StoreError, StoreHandle};
use crate::time::Millis;

/// Closes every unfinished run and writes its events (call while holding the run lock, or when
/// the unfinished run is this process's own, abandoned). Returns the runs closed.
pub fn close_interrupted(s: &Store, config: &Config, now: Millis) -> Result<Vec<i64>, StoreError> {
    let targets = config.targets(EventKind::ConnectorSynced);
    let names: HashMap<String, String> = config
        .services
        .iter()
        .map(|sv| (sv.module.clone(), sv.name.clone()))
        .collect();
    let mut told = false;
    let closed = s.atomically(|s| {
        let ids = s.mark_unfinished_interrupted(now)?;
        for &run in &ids {
            let mut parts: Vec<SyncedPart> = s
                .run_tally_by_connector(run)?
                .into_iter()
                .map(|(connector, tally)| SyncedPart {
                    connector,
                    tally,
                    outcome: RunOutcome::Interrupted,
                })
                .collect();
            parts.sort_by(|a, b| a.connector.cmp(&b.connector));
            let pushed = s.pushed_in_run(run)?;
            for data in synced_events(run, &parts, &pushed, &names, &config.quantity_names()) {
                // Written when a webhook or the connector's contacts want it (see the outbox).
                told |= s
                    .enqueue_event(EventKind::ConnectorSynced, &data, &targets, now)?
                    .is_some();
            }
        }
        Ok(ids)
    })?;
    if !closed.is_empty() {
        tracing::warn!(
            runs = ?closed,
            "run(s) stopped before finishing (crash, kill or abandoned shutdown): recorded as interrupted, and the console is told what they pushed"
        );
        if told {
            crate::store::outbox::wake();
        }
    }
    Ok(closed)
}

/// At the daemon's start: closes the runs a crash left open, unless another process (a `sync`)
/// holds the run lock — its own start of a run closes them.
pub async fn close_interrupted_at_start(
    store: &StoreHandle,
    config: std::sync::Arc<Config>,
    now: Millis,
) -> Result<Vec<i64>, SyncError> {
    let _lock = match RunLock::try_acquire(store.path()) {
        Ok(l) => l,
        Err(StoreError::RunInProgress) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(store
        .write(move |s| close_interrupted(s, &config, now))
        .await?)
}
