//! Verifying a partner token: whose organisation it opens, and setting the integration `pending`.

use super::*;

pub(crate) fn unavailable(id: &str, e: &GradientError) -> ConnectorError {
    if e.kind == ErrorKind::Unauthorized {
        return ConnectorError::TokenRejected { id: id.to_string() };
    }
    ConnectorError::GradientUnavailable {
        id: id.to_string(),
        source: e.clone(),
        transient: e.kind.is_transient(),
    }
}

/// A pasted token Gradient accepted, whose organization no other connector holds.
pub(crate) struct CheckedPaste {
    pub(crate) integration: Integration,
    pub(crate) organization_id: String,
    pub(crate) channel_known: bool,
    pub(crate) workspaces: Vec<WorkspaceRow>,
}

/// One connector's result of `connector verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Connector id.
    pub id: String,
    /// Its state now.
    pub state: ConnectorState,
    /// What happened.
    pub note: String,
    /// How the check went.
    pub check: Check,
}

/// How one stored token's check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Gradient answered (accepted or rejected the token).
    Answered,
    /// Gradient could not be reached: the state is unchanged.
    Unreachable,
    /// No token is stored (disconnected): nothing was asked.
    NoToken,
}

/// Sets the integration `pending` unless Gradient already says `active`; returns the status now.
pub(crate) async fn set_pending(
    session: &PartnerSession,
    integration: &Integration,
) -> Result<String, GradientError> {
    let status = integration.status.clone().unwrap_or_default();
    if status == "active" {
        return Ok(status);
    }
    session
        .set_integration_status(IntegrationStatus::Pending)
        .await?;
    Ok("pending".into())
}

/// Verifies a token stored earlier (an `unverified` connector, or one rejected with another vendor
/// key) before a run uses it: reads the integration, sets it `pending` unless `active`, records the
/// connector connected (and, when it was not, writes `connector.connected` for its `audience`).
/// Returns the status Gradient now shows.
pub async fn verify(
    store: &StoreHandle,
    audience: &Audience,
    row_id: &str,
    token_set_at: Option<Millis>,
    session: &PartnerSession,
) -> Result<String, GradientError> {
    let integration = session.get_integration().await?.value;
    let status = set_pending(session, &integration).await?;
    let (id, st, name, org, hooks) = (
        row_id.to_string(),
        status.clone(),
        integration.name.clone(),
        integration.organization_id.clone(),
        audience.clone(),
    );
    let now = now_ms();
    match store
        .write(move |s| {
            connect_and_tell(
                s,
                &hooks,
                &id,
                token_set_at,
                Some(&st),
                name.as_deref(),
                org.as_deref(),
                now,
            )
        })
        .await
    {
        Ok(told) => woke(told),
        Err(e) => {
            tracing::error!(connector = %row_id, error = %e, "could not record the verified token")
        }
    }
    Ok(status)
}
