//! A run's close: in one transaction, offboarding settled, the outcome recorded, and the events
//! the run owes the console (`connector.synced` per connector that took part,
//! `connector.mapping_needed` for what is newly unmapped).

use super::*;

/// Closes the run in one transaction: settles offboarding, records the outcome, and writes one
/// `connector.synced` event per connector that took part.
pub(super) async fn close(
    ctx: &SyncContext,
    report: &RunReport,
    interrupted: bool,
) -> Result<(), SyncError> {
    let config = &ctx.config;
    let (run_id, outcome, tally, message) = (
        report.run_id,
        report.outcome,
        report.tally,
        report.message.clone(),
    );
    let finished = now_ms();
    let targets = config.targets(EventKind::ConnectorSynced);
    let parts: Vec<SyncedPart> = report
        .connectors
        .iter()
        .map(|c| SyncedPart {
            connector: c.id.clone(),
            tally: c.tally,
            outcome: plan::connector_outcome(
                &c.tally,
                c.state == Some(ConnectorState::TokenRejected),
                interrupted,
            ),
        })
        .collect();
    let names: HashMap<String, String> = config
        .services
        .iter()
        .map(|s| (s.module.clone(), s.name.clone()))
        .collect();
    let quantities = config.quantity_names();
    let mapping_targets = config.targets(EventKind::ConnectorMappingNeeded);
    let unmapped_pairs: Vec<(String, Vec<(String, String)>)> = report
        .connectors
        .iter()
        .filter(|c| !interrupted && c.state == Some(ConnectorState::Connected))
        .map(|c| (c.id.clone(), c.unmapped.clone()))
        .collect();
    let told = ctx
        .store
        .write(move |s| {
            s.atomically(|s| {
                let settled = s.settle_offboarding(run_id, finished)?;
                if settled > 0 {
                    tracing::info!(
                        accounts = settled,
                        "offboarded accounts got their final zero"
                    );
                }
                s.finish_run(run_id, outcome, &tally, message.as_deref(), finished)?;
                let mut told = false;
                // `connector.mapping_needed` for what is newly unmapped, with the run's close.
                for (connector, pairs) in &unmapped_pairs {
                    told |= tell_mapping(
                        s,
                        connector,
                        pairs,
                        run_id,
                        &names,
                        &mapping_targets,
                        finished,
                    )?;
                }
                // `connector.synced`, one per connector that took part, with the run's close
                // (written when a webhook or a connector's contacts want it: see the outbox).
                if parts.is_empty() {
                    return Ok(told);
                }
                let pushed = s.pushed_in_run(run_id)?;
                for data in synced_events(run_id, &parts, &pushed, &names, &quantities) {
                    told |= s
                        .enqueue_event(EventKind::ConnectorSynced, &data, &targets, finished)?
                        .is_some();
                }
                Ok(told)
            })
        })
        .await?;
    if told {
        crate::store::outbox::wake();
    }
    Ok(())
}

/// Compares what connector `id` needs mapped now with what the console was last told; writes
/// `connector.mapping_needed` for what is new (inside the caller's transaction) and remembers now.
/// Returns whether an event was written.
fn tell_mapping(
    s: &crate::store::Store,
    id: &str,
    pairs: &[(String, String)],
    run_id: i64,
    service_names: &HashMap<String, String>,
    targets: &Targets,
    now: Millis,
) -> Result<bool, StoreError> {
    let Some(row) = s.connector(id)? else {
        return Ok(false);
    };
    let current = mapping::unmapped_now(&row.unmapped_accounts, pairs);
    let before: mapping::Unmapped = s
        .mapping_told(id)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if current == before {
        return Ok(false);
    }
    let remembered = serde_json::to_string(&current).unwrap_or_default();
    s.set_mapping_told(id, &remembered)?;
    let Some(new) = mapping::news(&before, &current) else {
        return Ok(false);
    };
    let account_names: HashMap<String, String> = s
        .channel_workspaces(id)?
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let data = mapping::event_data(id, run_id, &new, &account_names, service_names);
    tracing::info!(connector = %id, accounts = new.accounts.len(), services = new.services.len(), "the MSP has new accounts or services to map in Gradient");
    Ok(
        s.enqueue_event(EventKind::ConnectorMappingNeeded, &data, targets, now)?
            .is_some(),
    )
}
