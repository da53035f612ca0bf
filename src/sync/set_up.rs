//! A connector's set-up in a run: verify an unverified token, or read the integration (its status
//! as Gradient shows it), and reconcile the accounts — one round trip for a connected connector,
//! while the run's catalogue is read — then record what Gradient showed.

use super::{Participant, SyncContext};
use crate::connector::{ensure_accounts, verify};
use crate::domain::ConnectorState;
use crate::gradient::GradientError;
use crate::store::ledger::WorkspaceRow;
use crate::time::now_ms;

/// What a connector's set-up found: run while the catalogue is read, before any push.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// An unverified token was verified now.
    pub verified: bool,
    /// The integration's status as Gradient shows it.
    pub status: Option<String>,
    /// Accounts created in Gradient.
    pub accounts_created: usize,
    /// Accounts renamed in Gradient.
    pub accounts_renamed: usize,
}

/// A connector's set-up calls: verification (unverified only) or a read of the integration (its
/// status as Gradient shows it now) together with the account reconciliation — one round trip for
/// a connected connector — then what Gradient showed is recorded. A failure decides every pair.
pub async fn prepare(
    ctx: &SyncContext,
    who: &Participant,
    workspaces: &[WorkspaceRow],
) -> Result<Prepared, GradientError> {
    let id = who.row.id.clone();
    let (verified, status, synced_at, acc) = if who.row.state == ConnectorState::Unverified {
        let st = verify(
            &ctx.store,
            &ctx.config.audience(),
            &id,
            who.row.token_set_at,
            &who.session,
        )
        .await?;
        let acc = ensure_accounts(&who.session, &id, workspaces).await?;
        (true, Some(st), None, acc)
    } else {
        let (integration, acc) = futures::join!(
            who.session.get_integration(),
            ensure_accounts(&who.session, &id, workspaces)
        );
        let i = integration?.value;
        (false, i.status, i.last_synced_at, acc?)
    };
    let (created, renamed) = (acc.created, acc.renamed);
    let (now, shown) = (now_ms(), status.clone());
    let recorded = ctx
        .store
        .write(move |s| {
            s.record_gradient_view(
                &id,
                shown.as_deref(),
                synced_at,
                acc.unmapped.as_deref(),
                now,
            )
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(connector = %who.row.id, error = %e, "could not record Gradient's view of the integration");
    }
    Ok(Prepared {
        verified,
        status,
        accounts_created: created,
        accounts_renamed: renamed,
    })
}
