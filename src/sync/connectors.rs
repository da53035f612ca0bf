//! The connectors of one run: who takes part, the catalogue read once, every connector's part
//! concurrently, and the run-wide outcomes (every token rejected, 403).

use super::*;

/// Catalogue, then every connector. `Err` carries the reason the run was aborted.
pub(super) async fn run_connectors(
    ctx: &SyncContext,
    setup: &Setup,
    control: &RunControl,
    rec: &Recorder,
    report: &mut RunReport,
) -> Result<(), RunStop> {
    let now = now_ms();
    let (participants, rejected_before) = take_part(ctx, setup, rec, report, now);
    if participants.is_empty() {
        if report.connectors.is_empty() {
            report.message = Some("no connected connector: add one with `gradient-connector connector add ID --token-file PATH`".into());
        }
        return Ok(());
    }

    // The catalogue, read once with the first token Gradient accepts, while every connector's
    // set-up (its integration and its accounts) runs: a connector starts pushing as soon as both
    // its own set-up and the catalogue are done.
    let readers: Vec<(String, PartnerSession)> = participants
        .iter()
        .map(|p| (p.row.id.clone(), p.session.clone()))
        .collect();
    let catalogue = resolve_catalogue(ctx, readers, control).boxed().shared();
    let halt = HaltFlag::default();
    let scope = Scope {
        ctx,
        control,
        recorder: rec.clone(),
        halt: &halt,
    };
    let parallel = ctx.config.gradient.client.max_in_flight.max(1);
    let (scope, catalogue_ref) = (&scope, &catalogue);
    let results: Vec<ConnectorReport> = stream::iter(participants)
        .map(|p| async move {
            let workspaces = setup.by_channel.get(&p.row.id).cloned().unwrap_or_default();
            // Planned under the service ids the store holds; the pushes that wait for the set-up
            // take this run's from the catalogue.
            let plan = plans_for(setup, &[p.row.id.as_str()], &setup.stored_service_ids)
                .remove(&p.row.id)
                .unwrap_or_default();
            let who = p.clone();
            let opening = async move {
                let (prepared, read) = futures::join!(
                    set_up::prepare(ctx, &who, &workspaces),
                    catalogue_ref.clone()
                );
                // The catalogue could not be read: the run fails (below); only what a headstart
                // pushed went out.
                let (service_ids, _) = read.map_err(|_| SetUpFailure::Catalogue)?;
                let prepared = prepared.map_err(SetUpFailure::Connector)?;
                Ok((prepared, Arc::new(service_ids)))
            };
            ConnectorRun::new(scope, p, plan).run(opening).await
        })
        .buffer_unordered(parallel)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    // Reports first: counts a headstart got accepted before the catalogue failed are the run's.
    report.connectors.extend(results);
    report.connectors.sort_by(|a, b| a.id.cmp(&b.id));
    catalogue.await?;
    if every_one_rejected(report, &rejected_before) {
        return Err(RunStop::EveryTokenRejected {
            connectors: report.connectors.len(),
        });
    }
    if halt.get() == Halt::Forbidden {
        return Err(RunStop::Forbidden);
    }
    Ok(())
}

/// Who takes part in a run: connected (and unverified) connectors with a token. A connector still
/// rejected under today's vendor key sends nothing — its pairs are recorded `rejected` here; one
/// rejected under another vendor key is verified again. Returns the participants and the ids of
/// the connectors rejected before this run.
pub(super) fn take_part<'s>(
    ctx: &SyncContext,
    setup: &'s Setup,
    rec: &Recorder,
    report: &mut RunReport,
    now: Millis,
) -> (Vec<Participant>, Vec<&'s str>) {
    let mut participants = Vec::new();
    // A connector rejected with another vendor key than today's is verified again: the vendor key
    // was the likely cause, and it has changed.
    let fp = ctx.vendor_key_fp.as_str();
    let still_rejected = |row: &ConnectorRow| {
        row.state == ConnectorState::TokenRejected && row.rejected_key_fp.as_deref() == Some(fp)
    };
    let rejected_before: Vec<&str> = setup
        .connectors
        .iter()
        .filter(|(row, token)| still_rejected(row) && token.is_some())
        .map(|(row, _)| row.id.as_str())
        .collect();
    let mut stale_plans = plans_for(setup, &rejected_before, &setup.stored_service_ids);
    for (row, token) in &setup.connectors {
        match (row.state, token) {
            (ConnectorState::Disconnected, _) | (_, None) => continue,
            (ConnectorState::TokenRejected, Some(_)) if still_rejected(row) => {
                // Never send with a rejected token; its pairs are recorded as rejected.
                let plan = stale_plans.remove(&row.id).unwrap_or_default();
                let mut cr = ConnectorReport {
                    id: row.id.clone(),
                    state: Some(ConnectorState::TokenRejected),
                    note: Some(format!(
                        "token rejected by Gradient: paste the MSP's new token with `gradient-connector connector add {} --token-file PATH`",
                        row.id
                    )),
                    ..ConnectorReport::default()
                };
                rec.rejected(&mut cr, &plan, now);
                rec.disabled(&mut cr, &plan, now);
                report.connectors.push(cr);
            }
            (state, Some(token)) => {
                let mut row = row.clone();
                if state == ConnectorState::TokenRejected {
                    tracing::info!(connector = %row.id, "the vendor key changed since this token was rejected: verifying it again");
                    row.state = ConnectorState::Unverified;
                }
                participants.push(Participant {
                    session: ctx.client.partner(token),
                    row,
                })
            }
        }
    }
    (participants, rejected_before)
}

/// Whether at least two connectors took part and Gradient rejected every one of them in this run.
pub(super) fn every_one_rejected(report: &RunReport, rejected_before: &[&str]) -> bool {
    let fresh: Vec<&ConnectorReport> = report
        .connectors
        .iter()
        .filter(|c| !rejected_before.contains(&c.id.as_str()))
        .collect();
    fresh.len() >= 2
        && fresh
            .iter()
            .all(|c| c.state == Some(ConnectorState::TokenRejected))
}

/// Reads the catalogue with the first accepted token and creates missing services once.
/// Returns module → service id, and the connectors whose token was rejected on the way (each of
/// those hears it again from its own set-up, which decides its pairs).
pub(super) async fn resolve_catalogue(
    ctx: &SyncContext,
    readers: Vec<(String, PartnerSession)>,
    control: &RunControl,
) -> Result<(HashMap<String, String>, HashMap<String, GradientError>), RunStop> {
    let mut rejected = HashMap::new();
    let mut found = None;
    for (id, session) in readers {
        if control.stop.is_cancelled() {
            return Err(RunStop::StoppedBeforeCatalogue);
        }
        match session.get_vendor().await {
            Ok(v) => {
                found = Some((session, v.value));
                break;
            }
            Err(e) if e.kind == ErrorKind::Unauthorized => {
                rejected.insert(id, e);
            }
            Err(e) => return Err(RunStop::CatalogueUnreadable(e)),
        }
    }
    let Some((reader, vendor)) = found else {
        // Every token was rejected: nothing to read with.
        return Ok((HashMap::new(), rejected));
    };
    let ids = ensure_services(&reader, &vendor, &ctx.config.services, &ctx.store).await;
    ensure_vendor_profile(ctx, &reader, &vendor).await;
    Ok((ids, rejected))
}

/// Sets the vendor profile's portal and support URLs when the configuration manages them and
/// Gradient shows something else (best effort: a failure is logged, the run goes on).
pub(super) async fn ensure_vendor_profile(
    ctx: &SyncContext,
    session: &PartnerSession,
    vendor: &Vendor,
) {
    let g = &ctx.config.gradient;
    let wanted = VendorProfile {
        integration_portal_url: g.integration_portal_url.as_ref().map(|u| u.to_string()),
        vendor_support_page_url: g.support_page_url.as_ref().map(|u| u.to_string()),
        ..VendorProfile::default()
    };
    let changes = profile_changes(vendor, &wanted);
    if changes.is_empty() {
        return;
    }
    match session.update_vendor_profile(&changes).await {
        Ok(_) => tracing::info!("vendor profile updated in Gradient (portal / support URLs)"),
        Err(e) => {
            tracing::warn!(error = %e, "could not update the vendor profile; the next run tries again")
        }
    }
}

/// Marks a connector `token_rejected` (guarded by its token generation) and builds its report.
pub(super) async fn reject_connector(
    ctx: &SyncContext,
    row: &ConnectorRow,
    err: &GradientError,
) -> ConnectorReport {
    let reason = ctx
        .lifecycle()
        .record_rejection(&row.id, row.token_set_at)
        .await;
    tracing::error!(connector = %row.id, "{reason} ({})", crate::domain::escape(&err.message));
    ConnectorReport {
        id: row.id.clone(),
        state: Some(ConnectorState::TokenRejected),
        note: Some(reason),
        ..ConnectorReport::default()
    }
}
