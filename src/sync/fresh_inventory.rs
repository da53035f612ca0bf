//! The inventory a run counts: every pull source is pulled before the run (a failed pull is
//! logged; the run goes on with the inventory as last pulled), then the inventory's age is judged
//! (`sources::check_fresh`); a run over a stale inventory pushes nothing.

use super::*;

/// Pulls every source, then judges the inventory: `Some(message)` when it is stale.
pub(super) async fn pull_and_judge(ctx: &SyncContext) -> Result<Option<String>, SyncError> {
    if !ctx.config.sources.is_empty() {
        crate::sources::pull_all(&ctx.store, &ctx.config, None)
            .await
            .map_err(|e| match e {
                crate::sources::SourcesError::Store(e) => SyncError::Store(e),
                other => SyncError::Store(StoreError::Damaged(other.to_string())),
            })?;
    }
    Ok(crate::sources::check_fresh(&ctx.store, &ctx.config, now_ms()).await?)
}

/// A run over a stale inventory: nothing is pushed, the run is recorded `failed` with the
/// reason (`stale inventory: …`), exit 75.
pub(super) async fn refuse_stale(
    ctx: &SyncContext,
    mut report: RunReport,
    message: String,
    started: Instant,
) -> Result<RunReport, SyncError> {
    tracing::error!(run_id = report.run_id, "{message}");
    report.outcome = RunOutcome::Failed;
    report.stopped_by = Some(StopKind::StaleInventory);
    report.message = Some(message);
    report.duration_ms = started.elapsed().as_millis() as u64;
    close(ctx, &report, false).await?;
    metrics::counter!("gradient_connector_runs_total", "outcome" => report.outcome.as_str())
        .increment(1);
    Ok(report)
}
