//! The inventory a run counts: every pull source is pulled before the run (a failed pull is
//! logged; the run goes on with the inventory as last pulled), then the inventory's age is judged
//! (`sources::judge_fresh`, from the pulls' own record: the store is read once); a run over a stale inventory pushes nothing.

use super::*;

/// Pulls every source, then judges the inventory: `Some(message)` when it is stale.
pub(super) async fn pull_and_judge(ctx: &SyncContext) -> Result<Option<String>, SyncError> {
    if ctx.config.sources.is_empty() {
        // Freshness is a rule of pull sources: with none, the inventory is what was imported.
        return Ok(None);
    }
    let pulls = crate::sources::pull_every(&ctx.store, &ctx.config).await?;
    Ok(crate::sources::judge_fresh(&ctx.store, &ctx.config, &pulls, now_ms()).await?)
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
