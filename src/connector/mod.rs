//! Connector lifecycle: one connector per MSP (channel) — pasting a partner token (store, verify,
//! set the integration `pending`, create the channel's accounts), disconnecting, listing.
//!
//! States: `unverified` (token stored, not accepted yet) → `connected` → `token_rejected` (a 401:
//! the MSP generated a new key; nothing is sent until a new token is added) → `connected` again via
//! `connector add`; `disconnected` (token forgotten, history kept).

mod accounts;

pub use accounts::{account_changes, ensure_accounts, AccountChanges, AccountSync};

use std::io::Read;
use std::path::Path;

use secrecy::SecretString;
use serde::Serialize;

use crate::domain::ConnectorId;
use crate::domain::ConnectorState;
use crate::gradient::{ErrorKind, IntegrationStatus};
use crate::gradient::{GradientClient, GradientError, PartnerSession};
use crate::store::StoreError;
use crate::store::StoreHandle;
use crate::time::{now_ms, Millis};

/// Longest accepted token.
const MAX_TOKEN_BYTES: usize = 4096;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The token file is unusable.
    #[error("the token {0}")]
    BadToken(String),
    /// No such connector.
    #[error("there is no connector {0:?}; `gradient-connector connector list` shows them")]
    Unknown(String),
    /// Gradient refused or could not be reached; the token is kept, the connector stays unverified.
    #[error("connector {id}: the token is stored but could not be verified: {reason}")]
    NotVerified {
        /// Connector.
        id: String,
        /// Why.
        reason: String,
        /// Whether retrying later may work.
        transient: bool,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectorError {
    /// Whether trying again later may work (Gradient unreachable, store busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::NotVerified {
                transient: true,
                ..
            } | ConnectorError::Store(StoreError::Busy)
        )
    }
}

/// Reads a pasted token from a file or standard input (`-`).
pub fn read_token(path: &Path) -> Result<SecretString, ConnectorError> {
    let mut raw = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_TOKEN_BYTES as u64 + 1)
            .read_to_end(&mut raw)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_BYTES as u64 + 1).read_to_end(&mut raw))
    };
    result.map_err(|e| {
        ConnectorError::BadToken(format!("file {} cannot be read: {e}", path.display()))
    })?;
    let text =
        String::from_utf8(raw).map_err(|_| ConnectorError::BadToken("is not UTF-8 text".into()))?;
    validate_token(&text)
}

/// Trims a pasted token and rejects empty ones and ones containing white space or control
/// characters. Error messages never contain the token.
pub fn validate_token(raw: &str) -> Result<SecretString, ConnectorError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(ConnectorError::BadToken(format!(
            "is longer than {MAX_TOKEN_BYTES} bytes; paste only the partner API key"
        )));
    }
    let t = raw.trim();
    if t.is_empty() {
        return Err(ConnectorError::BadToken(
            "is empty; paste the partner API key the MSP generated in Gradient".into(),
        ));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConnectorError::BadToken(
            "contains white space or control characters; paste the partner API key alone, on one line".into(),
        ));
    }
    Ok(SecretString::from(t.to_string()))
}

/// What `connector add` did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    /// Connector id.
    pub id: ConnectorId,
    /// Integration status in Gradient now.
    pub gradient_status: String,
    /// Accounts created.
    pub accounts_created: usize,
    /// Accounts renamed.
    pub accounts_renamed: usize,
    /// Whether the inventory knows the channel.
    pub channel_known: bool,
}

/// Stores (or replaces) a connector's token, verifies it and creates the channel's accounts.
pub async fn add(
    store: &StoreHandle,
    client: &GradientClient,
    id: &ConnectorId,
    token: SecretString,
) -> Result<AddReport, ConnectorError> {
    let now = now_ms();
    let (cid, tok) = (id.to_string(), token.clone());
    let (channel_known, workspaces) = store
        .write(move |s| {
            s.set_token(&cid, &tok, now)?;
            let known = s.channel_exists(&cid)?;
            let ws: Vec<_> = s
                .workspaces()?
                .into_iter()
                .filter(|w| w.channel_id == cid)
                .collect();
            Ok((known, ws))
        })
        .await?;
    if !channel_known {
        tracing::warn!(connector = %id, "the inventory has no channel with this id yet; import it so that its workspaces are synced");
    }
    let session = client.partner(&token);
    let status = match verify(store, id, Some(now), &session).await {
        Ok(s) => s,
        Err(e) => {
            let reason = if e.kind == ErrorKind::Unauthorized {
                "this token was rejected by Gradient (401) — was a newer one generated? Ask the MSP for the current partner API key and add it again".to_string()
            } else {
                e.to_string()
            };
            let (cid, r) = (id.to_string(), reason.clone());
            store
                .write(move |s| {
                    s.set_connector_state(&cid, Some(now), ConnectorState::Unverified, &r, now_ms())
                })
                .await?;
            return Err(ConnectorError::NotVerified {
                id: id.to_string(),
                reason,
                transient: e.kind.is_transient(),
            });
        }
    };
    // Gradient recommends reconciling accounts whenever a partner authenticates: this also
    // recreates accounts deleted by a disconnect on Gradient's side.
    let accounts = match ensure_accounts(&session, id, &workspaces).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(connector = %id, error = %e, "accounts could not be reconciled now; the next run does it");
            Default::default()
        }
    };
    Ok(AddReport {
        id: id.clone(),
        gradient_status: status,
        accounts_created: accounts.created,
        accounts_renamed: accounts.renamed,
        channel_known,
    })
}

/// Tells Gradient the integration is `inactive` (best effort), forgets the token, keeps history.
/// Returns whether Gradient was told.
pub async fn disconnect(
    store: &StoreHandle,
    client: &GradientClient,
    id: &ConnectorId,
) -> Result<bool, ConnectorError> {
    let cid = id.to_string();
    let (row, token) = store
        .read(move |s| Ok((s.connector(&cid)?, s.token(&cid)?)))
        .await?;
    if row.is_none() {
        return Err(ConnectorError::Unknown(id.to_string()));
    }
    let mut told = false;
    if let Some(token) = token {
        match client
            .partner(&token)
            .set_integration_status(IntegrationStatus::Inactive)
            .await
        {
            Ok(_) => told = true,
            Err(e) => {
                tracing::warn!(connector = %id, error = %e, "could not tell Gradient the integration is inactive; the token is forgotten anyway")
            }
        }
    }
    let cid = id.to_string();
    store
        .write(move |s| s.disconnect(&cid, "disconnected by the operator", now_ms()))
        .await?;
    Ok(told)
}

/// Verifies a token: reads the integration, sets it `pending` unless Gradient already says `active`,
/// and records the connector as connected. Returns the status Gradient now shows.
pub async fn verify(
    store: &StoreHandle,
    row_id: &str,
    token_set_at: Option<Millis>,
    session: &PartnerSession,
) -> Result<String, GradientError> {
    let integration = session.get_integration().await?.value;
    let mut status = integration.status.clone().unwrap_or_default();
    if status != "active" {
        session
            .set_integration_status(IntegrationStatus::Pending)
            .await?;
        status = "pending".into();
    }
    let (id, st, name) = (row_id.to_string(), status.clone(), integration.name.clone());
    let now = now_ms();
    if let Err(e) = store
        .write(move |s| s.mark_connected(&id, token_set_at, Some(&st), name.as_deref(), now))
        .await
    {
        tracing::error!(connector = %row_id, error = %e, "could not record the verified token");
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_trimmed_and_checked_without_echo() {
        assert_eq!(
            validate_token("  abc123\n").unwrap().expose_secret(),
            "abc123"
        );
        for bad in ["", "   \n", "ab c", "ab\tc", "a\u{7}b"] {
            let e = validate_token(bad).unwrap_err().to_string();
            if bad.trim().len() > 1 {
                assert!(!e.contains(bad.trim()), "{e}");
            }
        }
        assert!(validate_token(&"x".repeat(5000)).is_err());
    }
}
