//! The stand-in's own routes (`/_sim/...`): what tests and benchmarks set and read.

use super::*;

pub(crate) async fn admin_state(AxState(state): AxState<Shared>) -> Json<crate::SimSnapshot> {
    Json(lock(&state).snapshot())
}

#[derive(Deserialize)]
pub(crate) struct NewMsp {
    id: String,
    name: String,
    key: String,
}

pub(crate) async fn admin_add_msp(
    AxState(state): AxState<Shared>,
    Json(m): Json<NewMsp>,
) -> StatusCode {
    lock(&state).add_msp(&m.id, &m.name, &m.key);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(crate) struct KeyBody {
    key: String,
}

pub(crate) fn done(known: bool) -> StatusCode {
    if known {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

pub(crate) async fn admin_rotate(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
    Json(k): Json<KeyBody>,
) -> StatusCode {
    done(lock(&state).rotate(&id, &k.key))
}

pub(crate) async fn admin_disconnect(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
) -> StatusCode {
    done(lock(&state).disconnect(&id))
}

pub(crate) async fn admin_mapping(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
    Json(m): Json<Mapping>,
) -> StatusCode {
    match lock(&state).orgs.get_mut(&id) {
        Some(o) => {
            o.mapping = m;
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

pub(crate) async fn admin_hostile(
    AxState(state): AxState<Shared>,
    Json(h): Json<Hostile>,
) -> StatusCode {
    lock(&state).hostile.push(h);
    StatusCode::NO_CONTENT
}

pub(crate) async fn admin_fault(
    AxState(state): AxState<Shared>,
    Json(f): Json<Fault>,
) -> StatusCode {
    lock(&state).faults.push(f);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(crate) struct Throttle {
    ratio: f64,
    retry_after_secs: Option<u64>,
}

pub(crate) async fn admin_throttle(
    AxState(state): AxState<Shared>,
    Json(t): Json<Throttle>,
) -> StatusCode {
    let mut s = lock(&state);
    s.throttle_ratio = t.ratio.clamp(0.0, 1.0);
    s.throttle_retry_after = t.retry_after_secs;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(crate) struct Latency {
    ms: u64,
    /// ± up to this many milliseconds per request (uniform).
    #[serde(default)]
    spread_ms: u64,
}

pub(crate) async fn admin_latency(
    AxState(state): AxState<Shared>,
    Json(l): Json<Latency>,
) -> StatusCode {
    let mut s = lock(&state);
    s.latency = std::time::Duration::from_millis(l.ms);
    s.latency_spread = std::time::Duration::from_millis(l.spread_ms);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(crate) struct Rate {
    per_second: u32,
}

pub(crate) async fn admin_rate_limit(
    AxState(state): AxState<Shared>,
    Json(r): Json<Rate>,
) -> StatusCode {
    lock(&state).rate_limit = r.per_second;
    StatusCode::NO_CONTENT
}
