//! Connector lifecycle: one connector per MSP (channel). Pasting a partner token verifies it with
//! Gradient **before** anything is stored or written to Gradient, makes sure its Gradient
//! organization is held by no other connector, sets the integration `pending`, ensures the
//! configured services and creates the channel's missing accounts, so the MSP can map at once.
//! Disconnecting, verifying again on demand, and the vendor key's fingerprint live here too.
//!
//! States: `connected` → `token_rejected` (a 401: the MSP generated a new key, or our vendor key is
//! wrong; nothing is sent until a new token is pasted, or until the vendor key changes and the token
//! verifies again) → `connected` via a paste; `disconnected` (token forgotten, history kept);
//! `unverified` only for tokens stored by an older version, verified at the next run.

mod accounts;
mod contacts;
mod error;
mod services;
mod token;
mod verify;

pub use contacts::{check_contacts, set_contacts, MAX_CONTACTS};
pub use error::{ConnectorError, ContactProblem, TokenProblem};
use verify::*;
pub use verify::{verify, Check, Verified};

pub use accounts::{account_changes, ensure_accounts, AccountChanges, AccountSync};
pub use services::{ensure_services, resolve_services, ServiceResolution};
pub use token::{key_fingerprint, read_token, validate_token};

use secrecy::SecretString;
use serde::Serialize;

use crate::config::{Audience, ServiceConfig, WebhookConfig};
use crate::domain::{ConnectorId, ConnectorState, EventKind};
use crate::gradient::{
    ErrorKind, GradientClient, GradientError, Integration, IntegrationStatus, PartnerSession,
};
use crate::store::ledger::WorkspaceRow;
use crate::store::outbox;
use crate::store::ownership::VerifiedToken;
use crate::store::{Store, StoreError, StoreHandle};
use crate::time::{now_ms, Millis};

/// What the lifecycle needs: the store, the client, the configured services, and the vendor key's
/// fingerprint (recorded with rejections).
#[derive(Clone, Copy)]
pub struct Lifecycle<'a> {
    /// The store.
    pub store: &'a StoreHandle,
    /// The Gradient client.
    pub client: &'a GradientClient,
    /// `[[service]]`.
    pub services: &'a [ServiceConfig],
    /// [`key_fingerprint`] of the vendor key in use.
    pub vendor_key_fp: &'a str,
    /// `[[webhook]]`: who is told of connections, rejections and disconnections.
    pub webhooks: &'a [WebhookConfig],
    /// Whether the connectors' contacts are told too (`[email]` is set).
    pub mail: bool,
}

/// Removes a disconnected connector from every list (`connector remove`, `DELETE
/// /v1/connectors/{id}?forget=true`); its ledger stays. Nothing is asked of Gradient.
pub async fn forget(store: &StoreHandle, id: &ConnectorId) -> Result<(), ConnectorError> {
    use crate::store::connectors::Forget;
    let cid = id.to_string();
    let done = store
        .write(move |s| s.forget_connector(&cid, now_ms()))
        .await?;
    match done {
        Forget::Forgotten => Ok(()),
        Forget::Unknown => Err(ConnectorError::Unknown(id.to_string())),
        Forget::NotDisconnected(state) => Err(ConnectorError::NotDisconnected {
            id: id.to_string(),
            state,
        }),
    }
}

/// Writes an event of `kind` for its audience (part of the caller's write job, so
/// inside its transaction when there is one). Returns whether one was written.
fn emit(
    s: &Store,
    audience: &Audience,
    kind: EventKind,
    data: serde_json::Value,
    now: Millis,
) -> Result<bool, StoreError> {
    Ok(s.enqueue_event(kind, &data, &audience.targets(kind), now)?
        .is_some())
}

/// After a write that may have enqueued an event: wake this process's delivery task.
fn woke(written: bool) {
    if written {
        outbox::wake();
    }
}

/// Marks a connector connected (token generation `gen`) and, when that is a change — it was
/// rejected, unverified or anything but connected — writes `connector.connected`, in one
/// transaction. Returns whether an event was written.
#[allow(clippy::too_many_arguments)]
fn connect_and_tell(
    s: &Store,
    hooks: &Audience,
    id: &str,
    gen: Option<Millis>,
    status: Option<&str>,
    name: Option<&str>,
    org: Option<&str>,
    now: Millis,
) -> Result<bool, StoreError> {
    s.atomically(|s| {
        let before = s.connector(id)?.map(|c| c.state);
        let marked = s.mark_connected(id, gen, status, name, org, now)?;
        if !marked || before == Some(ConnectorState::Connected) {
            return Ok(false);
        }
        let org_name = s.connector(id)?.and_then(|c| c.organization_name);
        emit(
            s,
            hooks,
            EventKind::ConnectorConnected,
            serde_json::json!({"connector": id, "organization_name": org_name}),
            now,
        )
    })
}

/// How a paste may change a connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct PasteOptions {
    /// Accept a token of another Gradient organization than the connector had.
    pub new_organization: bool,
}

/// What `connector add` did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    /// Connector id.
    pub id: ConnectorId,
    /// The Gradient organization the token belongs to.
    pub organization_name: Option<String>,
    /// Integration status in Gradient now.
    pub gradient_status: String,
    /// Configured services that exist in Gradient now.
    pub services_ready: usize,
    /// Accounts created.
    pub accounts_created: usize,
    /// Accounts renamed.
    pub accounts_renamed: usize,
    /// Whether the inventory knows the channel.
    pub channel_known: bool,
}

impl Lifecycle<'_> {
    /// Who hears of what this lifecycle changes.
    fn audience(&self) -> Audience {
        Audience {
            webhooks: self.webhooks.to_vec(),
            mail: self.mail,
        }
    }

    /// Pastes channel `id`'s token: verify (a read), check the organization, set `pending` (the
    /// first write to Gradient), store; then ensure services and accounts. On any failure before
    /// the token is stored, nothing changed anywhere.
    pub async fn add(
        &self,
        id: &ConnectorId,
        token: SecretString,
        options: PasteOptions,
    ) -> Result<AddReport, ConnectorError> {
        let session = self.client.partner(&token);
        let checked = self.check_paste(id, &session, options).await?;
        let status = set_pending(&session, &checked.integration)
            .await
            .map_err(|e| unavailable(id, &e))?;
        self.store_paste(id, &token, &checked, &status).await?;
        if !checked.channel_known {
            tracing::warn!(connector = %id, "the inventory has no channel with this id yet; import it so that its workspaces are synced");
        }
        let (services_ready, accounts) = self.make_ready(id, &session, &checked.workspaces).await;
        Ok(AddReport {
            id: id.clone(),
            organization_name: checked.integration.name,
            gradient_status: status,
            services_ready,
            accounts_created: accounts.created,
            accounts_renamed: accounts.renamed,
            channel_known: checked.channel_known,
        })
    }

    /// Verifies a pasted token with a read and checks whose organization it is. Writes nothing.
    async fn check_paste(
        &self,
        id: &ConnectorId,
        session: &PartnerSession,
        options: PasteOptions,
    ) -> Result<CheckedPaste, ConnectorError> {
        let integration = session
            .get_integration()
            .await
            .map_err(|e| unavailable(id, &e))?
            .value;
        let Some(org) = integration
            .organization_id
            .clone()
            .filter(|o| !o.is_empty())
        else {
            return Err(ConnectorError::NoOrganization { id: id.to_string() });
        };
        let org_label = integration.name.clone().unwrap_or_else(|| org.clone());
        let (cid, org_q) = (id.to_string(), org.clone());
        let (holder, current, channel_known, workspaces) = self
            .store
            .read(move |s| {
                let ws = s.channel_workspaces(&cid)?;
                Ok((
                    s.connector_holding(&org_q, &cid)?,
                    s.connector(&cid)?,
                    s.channel_exists(&cid)?,
                    ws,
                ))
            })
            .await?;
        if let Some(holder) = holder {
            return Err(ConnectorError::OrganizationTaken {
                id: id.to_string(),
                holder,
                organization: org_label,
            });
        }
        let previous_org = current
            .as_ref()
            .filter(|c| c.state != ConnectorState::Disconnected)
            .and_then(|c| c.organization_id.clone());
        if previous_org.is_some_and(|p| p != org) && !options.new_organization {
            return Err(ConnectorError::OtherOrganization {
                id: id.to_string(),
                organization: org_label,
            });
        }
        Ok(CheckedPaste {
            integration,
            organization_id: org,
            channel_known,
            workspaces,
        })
    }

    /// Stores a checked token and its organization; `connector.connected` in the same write.
    async fn store_paste(
        &self,
        id: &ConnectorId,
        token: &SecretString,
        checked: &CheckedPaste,
        status: &str,
    ) -> Result<(), ConnectorError> {
        let now = now_ms();
        let (cid, tok, org_q, name, st, hooks) = (
            id.to_string(),
            token.clone(),
            checked.organization_id.clone(),
            checked.integration.name.clone(),
            status.to_string(),
            self.audience(),
        );
        let told = self
            .store
            .write(move |s| {
                let told = s.atomically(|s| {
                    s.store_verified_token(&VerifiedToken {
                        id: &cid,
                        token: &tok,
                        organization_id: &org_q,
                        organization_name: name.as_deref(),
                        gradient_status: &st,
                        now,
                    })?;
                    let org_name = s.connector(&cid)?.and_then(|c| c.organization_name);
                    emit(
                        s,
                        &hooks,
                        EventKind::ConnectorConnected,
                        serde_json::json!({"connector": cid, "organization_name": org_name}),
                        now,
                    )
                });
                // The replaced token's bytes (zeroed by secure_delete) leave the WAL too.
                s.wipe_freed();
                told
            })
            .await?;
        woke(told);
        Ok(())
    }

    /// Ready to map: the configured services exist and the channel's accounts are created (both
    /// best effort: a failure is logged and the next run does it). Returns the services ready.
    async fn make_ready(
        &self,
        id: &ConnectorId,
        session: &PartnerSession,
        workspaces: &[WorkspaceRow],
    ) -> (usize, AccountSync) {
        let services_ready = match session.get_vendor().await {
            Ok(v) => ensure_services(session, &v.value, self.services, self.store)
                .await
                .len(),
            Err(e) => {
                tracing::warn!(connector = %id, error = %e, "services could not be checked now; the next run does it");
                0
            }
        };
        // Gradient recommends reconciling accounts whenever a partner authenticates: this also
        // recreates accounts deleted by a disconnect on Gradient's side.
        let accounts = match ensure_accounts(session, id, workspaces).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(connector = %id, error = %e, "accounts could not be reconciled now; the next run does it");
                Default::default()
            }
        };
        if let Some(unmapped) = accounts.unmapped.clone() {
            let (cid, now) = (id.to_string(), now_ms());
            let recorded = self
                .store
                .write(move |s| s.record_gradient_view(&cid, None, None, Some(&unmapped), now))
                .await;
            if let Err(e) = recorded {
                tracing::warn!(connector = %id, error = %e, "the unmapped accounts could not be recorded; status shows them after the next run");
            }
        }
        (services_ready, accounts)
    }

    /// Tells Gradient the integration is `inactive` (best effort), forgets the token, keeps
    /// history. Returns whether Gradient was told.
    /// Removes a disconnected connector from every list: [`forget`].
    pub async fn forget(&self, id: &ConnectorId) -> Result<(), ConnectorError> {
        forget(self.store, id).await
    }

    pub async fn disconnect(&self, id: &ConnectorId) -> Result<bool, ConnectorError> {
        let cid = id.to_string();
        let (row, token) = self
            .store
            .read(move |s| Ok((s.connector(&cid)?, s.token(&cid)?)))
            .await?;
        if row.is_none() {
            return Err(ConnectorError::Unknown(id.to_string()));
        }
        let mut told = false;
        if let Some(token) = token {
            match self
                .client
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
        let (cid, hooks) = (id.to_string(), self.audience());
        let evented = self
            .store
            .write(move |s| {
                let evented = s.atomically(|s| {
                    let now = now_ms();
                    let before = s.connector(&cid)?.map(|c| c.state);
                    s.disconnect(&cid, "disconnected by the operator", now)?;
                    if before == Some(ConnectorState::Disconnected) {
                        return Ok(false);
                    }
                    emit(
                        s,
                        &hooks,
                        EventKind::ConnectorDisconnected,
                        serde_json::json!({"connector": cid}),
                        now,
                    )
                });
                // The forgotten token's bytes (zeroed by secure_delete) leave the WAL too.
                s.wipe_freed();
                evented
            })
            .await?;
        woke(evented);
        Ok(told)
    }

    /// "Sync company accounts": creates the connector's missing accounts and pushes renames now.
    pub async fn sync_accounts(&self, id: &ConnectorId) -> Result<AccountSync, ConnectorError> {
        let cid = id.to_string();
        let (row, token, workspaces) = self
            .store
            .read(move |s| {
                let ws = s.channel_workspaces(&cid)?;
                Ok((s.connector(&cid)?, s.token(&cid)?, ws))
            })
            .await?;
        let row = row.ok_or_else(|| ConnectorError::Unknown(id.to_string()))?;
        let token = token.ok_or_else(|| ConnectorError::NotConnected {
            id: id.to_string(),
            state: row.state,
        })?;
        let session = self.client.partner(&token);
        match ensure_accounts(&session, id, &workspaces).await {
            Ok(a) => Ok(a),
            Err(e) if e.kind == ErrorKind::Unauthorized => {
                self.record_rejection(id, row.token_set_at).await;
                Err(ConnectorError::TokenRejected { id: id.to_string() })
            }
            Err(e) => Err(unavailable(id, &e)),
        }
    }

    /// Re-checks stored tokens (one connector, or all with a token) with a read of the
    /// integration: accepted → `connected`; 401 → `token_rejected` with the vendor key's
    /// fingerprint. Nothing is written to Gradient.
    pub async fn verify_stored(
        &self,
        only: Option<&ConnectorId>,
    ) -> Result<Vec<Verified>, ConnectorError> {
        let only_id = only.map(|c| c.to_string());
        let rows = self
            .store
            .read(move |s| {
                let mut out = Vec::new();
                for c in s.connectors()? {
                    if only_id.as_ref().is_some_and(|o| *o != c.id) {
                        continue;
                    }
                    let token = s.token(&c.id)?;
                    out.push((c, token));
                }
                Ok(out)
            })
            .await?;
        if let Some(id) = only {
            if rows.is_empty() {
                return Err(ConnectorError::Unknown(id.to_string()));
            }
        }
        let mut out = Vec::new();
        for (row, token) in rows {
            let Some(token) = token else {
                out.push(Verified {
                    id: row.id.clone(),
                    state: row.state,
                    note: "no token stored".into(),
                    check: Check::NoToken,
                });
                continue;
            };
            let session = self.client.partner(&token);
            let (state, note, check) = match session.get_integration().await {
                Ok(a) => {
                    let i = a.value;
                    let (id, gen, st, name, org, hooks) = (
                        row.id.clone(),
                        row.token_set_at,
                        i.status.clone(),
                        i.name.clone(),
                        i.organization_id.clone(),
                        self.audience(),
                    );
                    let told = self
                        .store
                        .write(move |s| {
                            connect_and_tell(
                                s,
                                &hooks,
                                &id,
                                gen,
                                st.as_deref(),
                                name.as_deref(),
                                org.as_deref(),
                                now_ms(),
                            )
                        })
                        .await?;
                    woke(told);
                    (
                        ConnectorState::Connected,
                        format!("accepted ({})", i.name.as_deref().unwrap_or("organization")),
                        Check::Answered,
                    )
                }
                Err(e) if e.kind == ErrorKind::Unauthorized => {
                    self.record_rejection(&row.id, row.token_set_at).await;
                    (
                        ConnectorState::TokenRejected,
                        "rejected (HTTP 401)".into(),
                        Check::Answered,
                    )
                }
                Err(e) => (
                    row.state,
                    format!("could not be checked: {e}"),
                    Check::Unreachable,
                ),
            };
            out.push(Verified {
                id: row.id,
                state,
                note,
                check,
            });
        }
        Ok(out)
    }

    /// Records a 401 for token generation `gen` of connector `id`, with the vendor key's
    /// fingerprint; on the transition into `token_rejected` (not while it stays rejected) writes
    /// `connector.token_rejected` in the same transaction. Returns the reason recorded.
    pub async fn record_rejection(&self, id: &str, gen: Option<Millis>) -> String {
        let reason = format!(
            "Gradient rejected the token (HTTP 401): the MSP may have generated a newer partner API key (paste it with `gradient-connector connector add {id} --token-file PATH`), or the vendor key is wrong (then every connector is rejected; fix the key and run `gradient-connector connector verify --all`)"
        );
        let (cid, r, fp, hooks) = (
            id.to_string(),
            reason.clone(),
            self.vendor_key_fp.to_string(),
            self.audience(),
        );
        let written = self
            .store
            .write(move |s| {
                s.atomically(|s| {
                    let now = now_ms();
                    let before = s.connector(&cid)?.map(|c| c.state);
                    let marked = s.mark_rejected(&cid, gen, &r, &fp, now)?;
                    if !marked || before == Some(ConnectorState::TokenRejected) {
                        return Ok(false);
                    }
                    emit(
                        s,
                        &hooks,
                        EventKind::ConnectorTokenRejected,
                        serde_json::json!({"connector": cid, "reason": REJECTED_FOR_CONSOLE}),
                        now,
                    )
                })
            })
            .await;
        match written {
            Ok(told) => woke(told),
            Err(e) => {
                tracing::error!(connector = %id, error = %e, "could not record the rejected token")
            }
        }
        reason
    }
}

/// The `reason` of `connector.token_rejected`: what the MSP's admin should read.
pub const REJECTED_FOR_CONSOLE: &str = "Gradient rejected the partner API key (HTTP 401): the MSP probably generated a newer one in Gradient; paste the new key to reconnect";
