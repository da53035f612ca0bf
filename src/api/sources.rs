//! The pull-source routes: `GET /v1/sources` (each source and its last pull) and
//! `POST /v1/sources/pull` (pull now, each source in one transaction, as before every run).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::openapi::ErrorAnswer;
use super::routes::{ok, optional_json, Answer, ApiFailure};
use super::ApiState;
use crate::sources::{SourceView, SourcesError};

/// `GET /v1/sources` and `POST /v1/sources/pull`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SourcesAnswer {
    /// The sources (pulled ones only, for a pull).
    pub sources: Vec<SourceView>,
}

/// Each configured source: kind, mode, its last pull, its last success, whether it is stale.
#[utoipa::path(get, path = "/v1/sources", tag = "inventory",
    responses((status = 200, description = "the sources", body = SourcesAnswer)))]
pub(super) async fn list(State(state): State<ApiState>) -> Answer {
    let ctx = state.ctx();
    let pulls = ctx.store.read(|s| s.source_pulls()).await?;
    ok(SourcesAnswer {
        sources: crate::sources::views(&ctx.config, &pulls, crate::time::now_ms()),
    })
}

/// The body of `POST /v1/sources/pull` (none: every source).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PullBody {
    /// Only this source.
    name: Option<String>,
}

/// Pulls every source (or `name`) now; 200 with each pulled source (a failed pull is in its
/// `outcome` and `message`: nothing of it was applied).
#[utoipa::path(post, path = "/v1/sources/pull", tag = "inventory",
    request_body(content = Option<PullBody>, description = "optional"),
    responses(
        (status = 200, description = "the pulled sources", body = SourcesAnswer),
        (status = 400, description = "`bad_request`", body = ErrorAnswer),
        (status = 404, description = "`unknown_source`", body = ErrorAnswer),
        (status = 409, description = "`import_running`: an inventory import or another pull is running", body = ErrorAnswer),
    ))]
pub(super) async fn pull(State(state): State<ApiState>, body: Bytes) -> Answer {
    let body: PullBody = optional_json(&body)?;
    // One import at a time: a pull is one.
    let Ok(_only_one) = state.imports.clone().try_lock_owned() else {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "import_running",
            "an inventory import or a pull is running; ask again when it has finished",
        ));
    };
    let ctx = state.ctx();
    let pulled = crate::sources::pull_all(&ctx.store, &ctx.config, body.name.as_deref())
        .await
        .map_err(|e| match e {
            SourcesError::Unknown(_) => {
                ApiFailure::new(StatusCode::NOT_FOUND, "unknown_source", e.to_string())
            }
            SourcesError::Store(e) => e.into(),
        })?;
    let now = crate::time::now_ms();
    let pulls = ctx.store.read(|s| s.source_pulls()).await?;
    let mut sources = crate::sources::views(&ctx.config, &pulls, now);
    sources.retain(|v| pulled.iter().any(|p| p.name == v.name));
    ok(SourcesAnswer { sources })
}
