//! `GET /v1/openapi.json`: the control API described as OpenAPI 3.1, generated from the routes'
//! own definitions — the `#[utoipa::path]` beside each handler and the schemas of the types the
//! handlers answer with. The answers a handler builds as JSON in place are described here, by
//! the structs below (documentation only); `tests/it/openapi.rs` validates every route's real
//! answers against the document, so neither can drift.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::status::{ConnectorView, RunItem};
use crate::store::import::{Implied, Shrink, UnreportedModule};
use crate::sync::RunReport;

/// Every error answer: `{"error": {"code", "message"}}`, with the bad lines of an import or the
/// channels a snapshot would shrink beside them.
#[derive(Serialize, ToSchema)]
pub struct ErrorAnswer {
    /// The error.
    pub error: ErrorBody,
}

/// An error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The contract's code (`unknown_connector`, `bad_import`, ...).
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// `bad_import`: the bad lines.
    pub lines: Option<Vec<BadLine>>,
    /// `snapshot_shrink`: the channels and their figures.
    pub channels: Option<Vec<Shrink>>,
}

/// One bad line of an import.
#[derive(Serialize, ToSchema)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// `GET /v1/connectors`.
#[derive(Serialize, ToSchema)]
pub struct ConnectorsAnswer {
    /// Every connector.
    pub connectors: Vec<ConnectorView>,
}

/// `GET /v1/runs`.
#[derive(Serialize, ToSchema)]
pub struct RunsAnswer {
    /// The newest runs first.
    pub runs: Vec<RunItem>,
}

/// `DELETE /v1/connectors/{id}`: the connector after its disconnect, or (with `forget=true`)
/// `{"id", "removed": true}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum DisconnectAnswer {
    /// Disconnected: the connector.
    Disconnected(Box<ConnectorView>),
    /// Forgotten.
    Removed(Removed),
}

/// A connector removed from every list.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// The connector id.
    pub id: String,
    /// Always true.
    pub removed: bool,
}

/// `POST /v1/connectors/{id}/verify`: the connector, and what Gradient said of its token now.
#[derive(Serialize, ToSchema)]
pub struct VerifyAnswer {
    /// The connector.
    #[serde(flatten)]
    pub connector: ConnectorView,
    /// The check.
    pub verified: Verified,
}

/// What a token check found.
#[derive(Serialize, ToSchema)]
pub struct Verified {
    /// The connector's state after the check.
    pub state: crate::domain::ConnectorState,
    /// What Gradient said.
    pub note: String,
}

/// `POST /v1/connectors/{id}/accounts/sync`.
#[derive(Serialize, ToSchema)]
pub struct AccountsSynced {
    /// Accounts created in Gradient.
    pub created: u64,
    /// Accounts renamed in Gradient.
    pub renamed: u64,
}

/// `POST /v1/sync`: queued; with `wait`, the run's report.
#[derive(Serialize, ToSchema)]
pub struct SyncAnswer {
    /// Always true.
    pub queued: bool,
    /// With `wait`: the report of the run that served the request.
    pub report: Option<RunReport>,
}

/// `POST /v1/inventory`: what the import did.
#[derive(Serialize, ToSchema)]
pub struct InventoryAnswer {
    /// Non-blank lines read.
    pub lines: u64,
    /// Records that changed the store, per record type (`channel`, `workspace`, `module`, `user`,
    /// `device`, `usage`).
    pub applied: std::collections::BTreeMap<String, u64>,
    /// Records that stated what the store already held.
    pub unchanged: u64,
    /// Modules enabled in the inventory that no `[[service]]` names (never pushed).
    pub unreported_modules: Vec<UnreportedModule>,
    /// A snapshot's implied changes.
    pub snapshot: Option<Implied>,
}

/// The bearer token for TCP (a unix socket needs none: its permissions are the access control),
/// and the answers every route behind it can give: 401 without the token, 503 when the store is
/// busy or unwritable.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let error = |text: &str| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorAnswer")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                // The health checks say `security: []`: open to all.
                let open = op.security.as_ref().is_some_and(|s| {
                    serde_json::to_value(s).is_ok_and(|v| v == serde_json::json!([{}]))
                });
                let answers = &mut op.responses.responses;
                if !open {
                    answers
                        .entry("401".into())
                        .or_insert_with(|| error("`unauthorized`: over TCP, send `Authorization: Bearer <api token>`").into());
                }
                answers.entry("503".into()).or_insert_with(|| {
                    error("`store_unavailable`: the store is busy or cannot be read; try again")
                        .into()
                });
            }
        }
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gradient-connector control API",
        description = "The vendor console's way into the gradient-connector daemon: connectors (one per MSP), runs, the ledger, the inventory, health and metrics. Over a unix socket no token is needed (the socket's permissions are the access control); over TCP every route but /healthz and /readyz takes `Authorization: Bearer <api token>`. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Proprietary"),
    ),
    paths(
        super::routes::healthz,
        super::routes::ready,
        super::routes::status,
        super::routes::connectors,
        super::connectors::connector,
        super::connectors::paste,
        super::connectors::disconnect,
        super::connectors::verify,
        super::connectors::sync_accounts,
        super::connectors::contacts,
        super::routes::sync,
        super::routes::runs,
        super::routes::run,
        super::routes::history,
        super::inventory::post,
        super::routes::metrics,
        super::sources::list,
        super::sources::pull,
        super::page::index,
        super::page::connector,
        super::page::login_form,
        super::page::login_doc,
        super::page::logout,
        document,
    ),
    modifiers(&BearerToken),
    security(("api_token" = [])),
    tags(
        (name = "connectors", description = "one connector per MSP: add, disconnect, test, sync accounts"),
        (name = "runs", description = "sync now, runs and the ledger"),
        (name = "inventory", description = "the vendor's inventory"),
        (name = "status", description = "everything at once"),
        (name = "health", description = "liveness, readiness, metrics, this document"),
        (name = "page", description = "the status page for support staff (HTML; over TCP a session cookie from `/login`)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON (what `GET /v1/openapi.json` answers).
pub fn document_json() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(&doc).unwrap_or_default()
}

/// This document: OpenAPI 3.1 of every route.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> Response {
    Json(document_json()).into_response()
}
