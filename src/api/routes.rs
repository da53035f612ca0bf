//! The routes of the contract's *Control API*. Each handler calls the module the CLI command of the
//! same name calls (status, connector lifecycle, import, the daemon's queue): one code path per
//! action. Errors are `{"error": {"code", "message"}}` with the contract's status codes; no answer
//! ever holds a token or a key.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::openapi::{ConnectorsAnswer, ErrorAnswer, Health, RunsAnswer, SyncAnswer};
use super::{connectors, ApiState, SyncAsk};
use crate::connector::ConnectorError;
use crate::domain::ConnectorId;
use crate::status::{RunItem, Status};
use crate::store::ledger::{HistoryFilter, LedgerRow};
use crate::store::StoreError;

/// Largest JSON body.
const JSON_LIMIT: usize = 64 * 1024;
/// A request's time limit (reading its body included; `POST /v1/inventory` and a `sync` that waits
/// for its run have none: see [`super::inventory`] and [`sync`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An error answer.
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A detail beside the message: (`lines`, the bad lines of an import), (`channels`, ...).
    detail: Option<(&'static str, Value)>,
}

impl ApiFailure {
    /// An error answer: status, the contract's code, what to do.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// With the bad lines of an import.
    pub fn with_lines(self, lines: Value) -> Self {
        self.with_detail("lines", lines)
    }

    /// With a detail under `key` beside the message.
    pub fn with_detail(mut self, key: &'static str, value: Value) -> Self {
        self.detail = Some((key, value));
        self
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some((key, value)) = self.detail {
            error[key] = value;
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Busy | StoreError::RunInProgress => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiFailure::new(status, "store_unavailable", e.to_string())
    }
}

impl From<ConnectorError> for ApiFailure {
    fn from(e: ConnectorError) -> Self {
        let (status, code) = match &e {
            ConnectorError::BadToken(_) => (StatusCode::BAD_REQUEST, "bad_token"),
            ConnectorError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_connector"),
            ConnectorError::BadContact(_) => (StatusCode::BAD_REQUEST, "bad_contact"),
            ConnectorError::TokenRejected { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "token_rejected")
            }
            ConnectorError::GradientUnavailable { .. } | ConnectorError::NoOrganization { .. } => {
                (StatusCode::BAD_GATEWAY, "gradient_unavailable")
            }
            ConnectorError::OrganizationTaken { .. } => {
                (StatusCode::CONFLICT, "organization_taken")
            }
            ConnectorError::OtherOrganization { .. } => {
                (StatusCode::CONFLICT, "other_organization")
            }
            ConnectorError::NotConnected { .. } => (StatusCode::CONFLICT, "not_connected"),
            ConnectorError::NotDisconnected { .. } => (StatusCode::CONFLICT, "not_disconnected"),
            ConnectorError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        ApiFailure::new(status, code, e.to_string())
    }
}

/// A handler's answer.
pub type Answer = Result<Response, ApiFailure>;

/// 200 with `v` as JSON.
pub fn ok(v: impl serde::Serialize) -> Answer {
    Ok(Json(v).into_response())
}

/// The router. `authenticate`: TCP (a bearer token on every route but the health checks, or the
/// status page's session cookie on its own routes); `secure_cookie`: the listener is not loopback
/// (TLS), so the page's cookie is `Secure`.
pub fn router(state: ApiState, authenticate: bool, secure_cookie: bool) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/connectors", get(connectors))
        .route(
            "/v1/connectors/{id}",
            get(connectors::connector).delete(connectors::disconnect),
        )
        .route("/v1/connectors/{id}/token", put(connectors::paste))
        .route(
            "/v1/connectors/{id}/accounts/sync",
            post(connectors::sync_accounts),
        )
        .route("/v1/connectors/{id}/verify", post(connectors::verify))
        .route("/v1/openapi.json", get(super::openapi::document))
        .route("/v1/sources", get(super::sources::list))
        .route("/v1/connectors/{id}/contacts", put(connectors::contacts))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{id}", get(run))
        .route("/v1/history", get(history))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiFailure::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the request took too long; try again",
                )
                .into_response(),
            }
        }));
    // The inventory is streamed into the import: no body limit but its own cap
    // (`api.max_inventory_mib`), no overall time limit but a deadline between two pieces.
    let inventory = Router::new()
        .route("/v1/inventory", post(super::inventory::post))
        .layer(DefaultBodyLimit::disable());
    // `POST /v1/sync` with `wait` answers when its run ends, however long that takes: no overall
    // time limit (its small body is still read within `REQUEST_TIMEOUT`).
    let waiting = Router::new()
        .route("/v1/sync", post(sync))
        // A pull takes as long as its sources' `timeout_secs`.
        .route("/v1/sources/pull", post(super::sources::pull))
        .layer(DefaultBodyLimit::max(JSON_LIMIT));
    let mut protected = v1
        .merge(inventory)
        .merge(waiting)
        .merge(super::page::routes());
    if authenticate {
        protected = protected.layer(middleware::from_fn_with_state(state.clone(), bearer));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .merge(super::page::sign_in_routes(secure_cookie))
        .merge(protected)
        .fallback(|| async {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see the README's control API table",
            )
        })
        .with_state(state)
}

/// Bearer authentication, compared in constant time; never from the query string.
async fn bearer(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let unauthorized = || {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the API token as `Authorization: Bearer <token>`",
        )
        .into_response()
    };
    let Some(want) = &state.token else {
        return unauthorized();
    };
    // The status page's session cookie opens the page and its buttons' routes only.
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if super::page::cookie_allows(&method, &path, req.headers())
        && super::page::has_session(req.headers())
    {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(want.expose_secret().as_bytes())) => {
            next.run(req).await
        }
        // A browser without a session is sent to the sign-in form.
        _ if method == axum::http::Method::GET
            && (path == "/" || path.starts_with("/connectors/")) =>
        {
            axum::response::Redirect::to("/login").into_response()
        }
        _ => unauthorized(),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "alive", body = Health)))]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store answers and takes writes.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "ready", body = Health),
        (status = 503, description = "`store_unwritable`, `not_ready`, `inventory_stale`", body = ErrorAnswer),
    ))]
pub(super) async fn ready(State(state): State<ApiState>) -> Response {
    let ctx = state.ctx();
    // A store that refused a write (a full disk) is not ready until it takes one again.
    if let Some(reason) = ctx.store.recheck_writable().await {
        return ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unwritable",
            format!(
                "the store {} refused its last write: {reason}",
                ctx.store.path().display()
            ),
        )
        .into_response();
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        ctx.store.read(|s| s.last_run().map(|_| ())),
    )
    .await;
    if !ctx.config.sources.is_empty() {
        if let Ok(pulls) = ctx.store.read(|s| s.source_pulls()).await {
            let stale = crate::sources::stale(&ctx.config, &pulls, crate::time::now_ms());
            if !stale.is_empty() {
                let names: Vec<String> = stale.iter().map(|s| format!("{:?}", s.name)).collect();
                return ApiFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "inventory_stale",
                    format!(
                        "stale inventory: no successful pull within inventory.max_age_hours of {}; runs push nothing until one succeeds",
                        names.join(", ")
                    ),
                )
                .into_response();
            }
        }
    }
    match probe {
        Ok(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => ApiFailure::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string())
            .into_response(),
        Err(_) => ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the store did not answer within 2 s",
        )
        .into_response(),
    }
}

async fn status_value(state: &ApiState) -> Result<crate::status::Status, ApiFailure> {
    let ctx = state.ctx();
    let cfg = ctx.config.clone();
    Ok(ctx
        .store
        .read(move |s| crate::status::status(s, &cfg))
        .await?)
}

/// The whole status: connectors, the last run, the schedule, the outbox, the ledger.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses((status = 200, description = "the status", body = Status)))]
pub(super) async fn status(State(state): State<ApiState>) -> Answer {
    ok(status_value(&state).await?)
}

/// Every connector (as in the status).
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    responses((status = 200, description = "every connector", body = ConnectorsAnswer)))]
pub(super) async fn connectors(State(state): State<ApiState>) -> Answer {
    ok(json!({"connectors": status_value(&state).await?.connectors}))
}

/// A body that may be empty (then the type's default) or JSON of the route's type.
pub(super) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiFailure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(body).map_err(bad_json)
    }
}

pub(super) fn bad_json(e: impl std::fmt::Display) -> ApiFailure {
    ApiFailure::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("the body is not what this route takes: {e}"),
    )
}

/// The body of `POST /v1/sync` (none: a run of every connector, not waited for).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncBody {
    /// Only this connector.
    connector: Option<String>,
    /// Answer when the run has finished, with its report (the CLI's `sync`).
    #[serde(default)]
    wait: bool,
}

/// *Sync now*: queues a run (requests for different connectors merge into a run of all of them);
/// with `wait`, answers when that run has ended, with its report, however long it takes.
#[utoipa::path(post, path = "/v1/sync", tag = "runs",
    request_body(content = Option<SyncBody>, description = "optional"),
    responses(
        (status = 200, description = "`wait`: the run's report", body = SyncAnswer),
        (status = 202, description = "queued", body = SyncAnswer),
        (status = 400, description = "`bad_request`", body = ErrorAnswer),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
        (status = 408, description = "`body_timeout`", body = ErrorAnswer),
        (status = 503, description = "`stopping`, `run_not_started`", body = ErrorAnswer),
    ))]
pub(super) async fn sync(State(state): State<ApiState>, body: axum::body::Body) -> Answer {
    let body = tokio::time::timeout(REQUEST_TIMEOUT, axum::body::to_bytes(body, JSON_LIMIT))
        .await
        .map_err(|_| {
            ApiFailure::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            )
        })?
        .map_err(bad_json)?;
    let body: SyncBody = optional_json(&body)?;
    if let Some(id) = &body.connector {
        let ctx = state.ctx();
        let cid = id.clone();
        let known = ctx.store.read(move |s| s.connector(&cid)).await?;
        if known.is_none() {
            return Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "unknown_connector",
                format!("there is no connector {id:?}"),
            ));
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ask = SyncAsk {
        connector: body.connector.map(ConnectorId::from),
        done: body.wait.then_some(tx),
    };
    state.queue.send(ask).await.map_err(|_| {
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the daemon is stopping",
        )
    })?;
    if !body.wait {
        return Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response());
    }
    match rx.await {
        Ok(Some(report)) => ok(json!({"queued": true, "report": *report})),
        _ => Err(ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "run_not_started",
            "the run could not start (see the daemon's log)",
        )),
    }
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    limit: Option<u32>,
}

/// The newest runs, newest first (a running run has `outcome` null and its counts so far).
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(("limit" = Option<u32>, Query, description = "at most this many (default 20, 1..=1000)")),
    responses((status = 200, description = "the runs", body = RunsAnswer)))]
pub(super) async fn runs(State(state): State<ApiState>, Query(q): Query<RunsQuery>) -> Answer {
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let ctx = state.ctx();
    let runs = ctx
        .store
        .read(move |s| crate::status::runs(s, limit))
        .await?;
    ok(json!({ "runs": runs }))
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "the run id")),
    responses(
        (status = 200, description = "the run", body = RunItem),
        (status = 404, description = "`unknown_run`", body = ErrorAnswer),
    ))]
pub(super) async fn run(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let unknown = || {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("there is no run {id:?}; GET /v1/runs lists them"),
        )
    };
    let Ok(run_id) = id.parse::<i64>() else {
        return Err(unknown());
    };
    let ctx = state.ctx();
    match ctx
        .store
        .read(move |s| crate::status::run(s, run_id))
        .await?
    {
        Some(item) => ok(item),
        None => Err(unknown()),
    }
}

/// The ledger: what was pushed (or not) per pair, newest first.
#[utoipa::path(get, path = "/v1/history", tag = "runs",
    params(
        ("connector" = Option<String>, Query, description = "only this connector"),
        ("run" = Option<i64>, Query, description = "only this run"),
        ("changes" = Option<bool>, Query, description = "only pushes whose count differs from the pair's previous push"),
        ("since_last_run" = Option<bool>, Query, description = "what changed in the newest run"),
        ("limit" = Option<u32>, Query, description = "at most this many rows (default 200)"),
    ),
    responses(
        (status = 200, description = "ledger rows", body = Vec<LedgerRow>),
        (status = 400, description = "`bad_request`", body = ErrorAnswer),
        (status = 404, description = "`unknown_connector`", body = ErrorAnswer),
    ))]
pub(super) async fn history(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let run = match q.get("run") {
        Some(r) => Some(
            r.parse::<i64>()
                .map_err(|_| bad_json("run must be a number"))?,
        ),
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<u32>()
            .map_err(|_| bad_json("limit must be a number"))?,
        None => 200,
    };
    let filter = HistoryFilter {
        connector: q.get("connector").cloned().filter(|c| !c.is_empty()),
        run,
        changes: q.get("changes").is_some_and(|v| v == "true" || v == "1"),
        limit: limit.clamp(1, 10_000),
    };
    let ctx = state.ctx();
    if let Some(id) = filter.connector.clone() {
        // A removed connector's history stays readable.
        let known = ctx.store.read(move |s| s.connector_known(&id)).await?;
        if !known {
            return Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "unknown_connector",
                format!(
                    "there is no connector {:?}",
                    filter.connector.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    // `since_last_run=true`: what changed in the newest run (as `history --since-last-run`).
    let since_last_run = q
        .get("since_last_run")
        .is_some_and(|v| v == "true" || v == "1");
    let rows = ctx
        .store
        .read(move |s| {
            if since_last_run {
                crate::status::history_since_last_run(s, &filter)
                    .map(|found| found.map(|(_, rows)| rows).unwrap_or_default())
            } else {
                crate::status::history(s, &filter)
            }
        })
        .await?;
    ok(rows)
}

/// Prometheus metrics (text exposition).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "the series", content_type = "text/plain; version=0.0.4", body = String),
        (status = 404, description = "`not_found`: metrics are off", body = ErrorAnswer),
    ))]
pub(super) async fn metrics(State(state): State<ApiState>) -> Answer {
    let Some(exposition) = state.metrics.clone() else {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are off",
        ));
    };
    let ctx = state.ctx();
    let connectors = ctx.store.read(|s| s.connectors()).await?;
    if !ctx.config.sources.is_empty() {
        let pulls = ctx.store.read(|s| s.source_pulls()).await?;
        crate::sources::set_age_gauges(&ctx.config, &pulls, crate::time::now_ms());
    }
    let text = exposition.render(&connectors);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok((headers, text).into_response())
}
