//! The connector routes of the control API — the console's *Add*, *Disconnect*, *Test connection*
//! and *Sync company accounts* buttons, and one connector's view. Each calls the connector
//! lifecycle the CLI's `connector` commands call; the `#[utoipa::path]` beside each handler is its
//! entry in `GET /v1/openapi.json`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{AccountsSynced, DisconnectAnswer, ErrorAnswer, VerifyAnswer};
use super::routes::{ok, Answer, ApiFailure};
use super::{ApiState, SyncAsk};
use crate::connector::{validate_token, PasteOptions};
use crate::domain::ConnectorId;
use crate::status::ConnectorView;

/// One connector's status as `status` shows it (None: no such connector).
async fn status_of(state: &ApiState, id: &str) -> Result<Option<ConnectorView>, ApiFailure> {
    let ctx = state.ctx();
    let key = id.to_string();
    let quantities = ctx.config.quantity_names();
    Ok(ctx
        .store
        .read(move |s| crate::status::connector_status(s, &key, &quantities))
        .await?)
}

/// One connector's view, or 404.
pub(super) async fn connector_view(state: &ApiState, id: &str) -> Answer {
    match status_of(state, id).await? {
        Some(c) => ok(c),
        None => Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "unknown_connector",
            format!("there is no connector {id:?}"),
        )),
    }
}

/// One connector's state, its last known counts, its unmapped, failing and disabled pairs.
#[utoipa::path(get, path = "/v1/connectors/{id}", tag = "connectors",
    params(("id" = String, Path, description = "the connector id (the MSP's channel id)")),
    responses(
        (status = 200, description = "the connector", body = ConnectorView),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
    ))]
pub(super) async fn connector(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    connector_view(&state, &id).await
}

/// The body of `PUT /v1/connectors/{id}/token`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct PasteBody {
    /// The MSP's Gradient partner API token.
    token: String,
    /// Accept a token of another Gradient organization than the connector's (the MSP moved).
    #[serde(default)]
    new_organization: bool,
}

/// *Add* (or a new token): verifies the token, checks its organization, sets the integration
/// `pending`, creates the services and accounts; 200 the connector.
#[utoipa::path(put, path = "/v1/connectors/{id}/token", tag = "connectors",
    params(("id" = String, Path, description = "the connector id (the MSP's channel id)")),
    request_body = PasteBody,
    responses(
        (status = 200, description = "connected", body = ConnectorView),
        (status = 400, description = "`bad_token`", body = ErrorAnswer),
        (status = 409, description = "`organization_taken`, `other_organization`", body = ErrorAnswer),
        (status = 422, description = "`token_rejected`", body = ErrorAnswer),
        (status = 502, description = "`gradient_unavailable`", body = ErrorAnswer),
    ))]
pub(super) async fn paste(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let body: PasteBody = serde_json::from_slice(&body).map_err(|_| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_token",
            "send {\"token\": \"…\"} with the MSP's partner API key",
        )
    })?;
    let token = validate_token(&body.token)?;
    let ctx = state.ctx();
    let cid = ConnectorId::from(id.as_str());
    let options = PasteOptions {
        new_organization: body.new_organization,
    };
    ctx.lifecycle().add(&cid, token, options).await?;
    if ctx.config.schedule.sync_on_connect {
        let _ = state
            .queue
            .send(SyncAsk {
                connector: Some(cid),
                done: None,
            })
            .await;
    }
    connector_view(&state, &id).await
}

/// `DELETE /v1/connectors/{id}`: disconnect; with `?forget=true`, remove a disconnected
/// connector from every list (its ledger stays): 200 `{"id", "removed": true}`.
#[utoipa::path(delete, path = "/v1/connectors/{id}", tag = "connectors",
    params(
        ("id" = String, Path, description = "the connector id"),
        ("forget" = Option<bool>, Query, description = "remove a disconnected connector from every list (its ledger stays)"),
    ),
    responses(
        (status = 200, description = "disconnected: the connector; with `forget=true`: `{id, removed}`", body = DisconnectAnswer),
        (status = 400, description = "`bad_request`", body = ErrorAnswer),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
        (status = 409, description = "`not_disconnected` (forget)", body = ErrorAnswer),
    ))]
pub(super) async fn disconnect(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let ctx = state.ctx();
    let cid = ConnectorId::from(id.as_str());
    match query.as_deref().unwrap_or_default() {
        "" | "forget=false" => {}
        "forget=true" => {
            ctx.lifecycle().forget(&cid).await?;
            return ok(json!({"id": id, "removed": true}));
        }
        other => {
            return Err(ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown query {other:?}; this route takes forget=true or nothing"),
            ))
        }
    }
    ctx.lifecycle().disconnect(&cid).await?;
    connector_view(&state, &id).await
}

/// The console's "Test connection": re-checks the stored token with a read of the integration
/// now; 200 with the connector (and `verified`: what Gradient said), 502 when Gradient could not
/// be reached (the connector's state is unchanged).
#[utoipa::path(post, path = "/v1/connectors/{id}/verify", tag = "connectors",
    params(("id" = String, Path, description = "the connector id")),
    responses(
        (status = 200, description = "the connector, and what Gradient said", body = VerifyAnswer),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
        (status = 409, description = "`not_connected`", body = ErrorAnswer),
        (status = 502, description = "`gradient_unavailable`", body = ErrorAnswer),
    ))]
pub(super) async fn verify(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let ctx = state.ctx();
    let checked = ctx
        .lifecycle()
        .verify_stored(Some(&ConnectorId::from(id.as_str())))
        .await?;
    let Some(v) = checked.into_iter().next() else {
        return connector_view(&state, &id).await;
    };
    match v.check {
        crate::connector::Check::Answered => {}
        crate::connector::Check::Unreachable => {
            return Err(ApiFailure::new(
                StatusCode::BAD_GATEWAY,
                "gradient_unavailable",
                format!("the token could not be checked: {}", v.note),
            ))
        }
        crate::connector::Check::NoToken => {
            return Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "not_connected",
                format!(
                    "connector {id:?} has no token (disconnected): paste the MSP's token first"
                ),
            ))
        }
    }
    let view = status_of(&state, &id).await?;
    let mut body = serde_json::to_value(view).map_err(|e| {
        ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    body["verified"] = json!({"state": v.state, "note": v.note});
    ok(body)
}

/// *Sync company accounts*: creates the accounts the MSP's organization lacks, renames moved ones.
#[utoipa::path(post, path = "/v1/connectors/{id}/accounts/sync", tag = "connectors",
    params(("id" = String, Path, description = "the connector id")),
    responses(
        (status = 200, description = "what changed", body = AccountsSynced),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
        (status = 409, description = "`not_connected`", body = ErrorAnswer),
        (status = 422, description = "`token_rejected`", body = ErrorAnswer),
        (status = 502, description = "`gradient_unavailable`", body = ErrorAnswer),
    ))]
pub(super) async fn sync_accounts(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let ctx = state.ctx();
    let r = ctx
        .lifecycle()
        .sync_accounts(&ConnectorId::from(id.as_str()))
        .await?;
    ok(json!({"created": r.created, "renamed": r.renamed}))
}

/// `PUT /v1/connectors/{id}/contacts`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct ContactsBody {
    /// The MSP's addresses that get the connector's mails (replaces the list; `[]`: none).
    emails: Vec<String>,
}

/// `PUT /v1/connectors/{id}/contacts`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ContactsAnswer {
    /// The connector id.
    connector: String,
    /// The addresses as stored (checked, sorted, each once).
    emails: Vec<String>,
    /// Whether they are mailed: `false` while the daemon has no `[email]` section — the addresses
    /// are kept, and mail starts with the events after `[email]` is set (nothing older is sent).
    mailed: bool,
}

/// Who at the MSP is mailed about the connector (`[email]`): replaces the list. A connector need
/// not exist yet, so the *connected* mail reaches contacts set before the paste.
#[utoipa::path(put, path = "/v1/connectors/{id}/contacts", tag = "connectors",
    params(("id" = String, Path, description = "the connector id")),
    request_body = ContactsBody,
    responses(
        (status = 200, description = "the contacts as stored", body = ContactsAnswer),
        (status = 400, description = "`bad_contact`", body = ErrorAnswer),
    ))]
pub(super) async fn contacts(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let body: ContactsBody = serde_json::from_slice(&body).map_err(|_| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_contact",
            "send {\"emails\": [\"admin@msp.example\", …]}",
        )
    })?;
    let cid = ConnectorId::from(id.as_str());
    let ctx = state.ctx();
    let emails = crate::connector::set_contacts(&ctx.store, &cid, body.emails).await?;
    let mailed = ctx.config.email.is_some();
    if !mailed && !emails.is_empty() {
        tracing::warn!(connector = %cid, "contacts stored, but nothing is mailed: the configuration has no [email] section");
    }
    ok(ContactsAnswer {
        connector: id,
        emails,
        mailed,
    })
}
