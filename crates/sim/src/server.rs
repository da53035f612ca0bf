//! The stand-in's HTTP side: the vendor API under `/api/vendor-api` (auth → hostile behaviours →
//! faults → throttle and rate limit → route, every request logged) and the admin API under
//! `/_sim/`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    lock, Behaviour, Fault, Hostile, Mapping, ReceivedPush, RequestLogEntry, Shared, SimAccount,
    SimService, State, NEVER_SYNCED,
};
use crate::gradient::types::{CATEGORIES, SUBCATEGORIES};

mod admin;
mod rules;

use admin::*;
use rules::*;

const PREFIX: &str = "/api/vendor-api";

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/_sim/state", get(admin_state))
        .route("/_sim/msp", post(admin_add_msp))
        .route("/_sim/msp/{id}/rotate", post(admin_rotate))
        .route("/_sim/msp/{id}/disconnect", post(admin_disconnect))
        .route("/_sim/msp/{id}/reconnect", post(admin_rotate))
        .route("/_sim/msp/{id}/mapping", put(admin_mapping))
        .route("/_sim/fault", post(admin_fault))
        .route("/_sim/hostile", post(admin_hostile))
        .route("/_sim/throttle", post(admin_throttle))
        .route("/_sim/latency", post(admin_latency))
        .route("/_sim/rate-limit", post(admin_rate_limit))
        .fallback(vendor_api)
        .with_state(state)
}

/// An answer: status, JSON body (or a raw one), optional Retry-After.
pub(crate) struct Answer {
    status: u16,
    body: Value,
    raw: Option<Raw>,
    retry_after: Option<u64>,
}

/// A body that is not the route's JSON (hostile behaviours).
enum Raw {
    /// Exactly this text.
    Text(String),
    /// A generated JSON catalogue of this many bytes, streamed.
    Huge(u64),
}

pub(crate) fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        raw: None,
        retry_after: None,
    }
}

fn raw(status: u16, body: Raw) -> Answer {
    Answer {
        raw: Some(body),
        ..answer(status, Value::Null)
    }
}

/// A catalogue of exactly `bytes` bytes (at least its frame), in 64 KiB chunks, never held whole.
fn huge_body(bytes: u64) -> axum::body::Body {
    const HEAD: &str = r#"{"status":200,"message":"ok","data":{"skus":["#;
    const ITEM: &str = r#"{"id":"5e1d00000000000000000099","name":"padding"},"#;
    const TAIL: &str = r#"{"id":"5e1d00000000000000000098","name":"last"}]}}"#;
    let fixed = (HEAD.len() + TAIL.len()) as u64;
    let items = bytes.saturating_sub(fixed) / ITEM.len() as u64;
    let per_chunk = (64 * 1024 / ITEM.len()) as u64;
    let chunks = futures::stream::unfold((0u64, false), move |(sent, done)| async move {
        if done {
            return None;
        }
        let mut chunk = String::new();
        if sent == 0 {
            chunk.push_str(HEAD);
        }
        let n = per_chunk.min(items - sent);
        for _ in 0..n {
            chunk.push_str(ITEM);
        }
        let sent = sent + n;
        let last = sent >= items;
        if last {
            chunk.push_str(TAIL);
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
            (sent, last),
        ))
    });
    axum::body::Body::from_stream(chunks)
}

pub(crate) fn error(status: u16, message: impl Into<String>) -> Answer {
    answer(
        status,
        json!({"statusCode": status, "message": message.into()}),
    )
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        let mut resp = match self.raw {
            None => (status, Json(self.body)).into_response(),
            Some(Raw::Text(t)) => (status, json, t).into_response(),
            Some(Raw::Huge(n)) => (status, json, huge_body(n)).into_response(),
        };
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes `GRADIENT-TOKEN` into the org it names, or None.
fn authenticate(s: &State, headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("gradient-token")?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (vendor, partner) = text.split_once(':')?;
    if vendor != s.vendor_key {
        return None;
    }
    s.keys.get(partner).cloned()
}

async fn vendor_api(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    // Requests are logged, and counted against the rate limit, at their arrival — as Gradient's
    // limiter counts them — before the (jittered) latency delays the answer.
    let (latency, arrived_ms, over) = {
        let mut s = lock(&state);
        let mut latency = s.latency;
        if !s.latency_spread.is_zero() {
            let spread = s.latency_spread.as_millis() as i64;
            let jitter = fastrand::i64(-spread..=spread);
            latency = std::time::Duration::from_millis(
                (latency.as_millis() as i64 + jitter).max(0) as u64,
            );
        }
        if method == Method::POST && uri.path().ends_with("/count") {
            latency += s.count_latency;
        }
        let over = authenticate(&s, &headers)
            .is_some_and(|org| uri.path().starts_with(PREFIX) && over_rate(&mut s, &org));
        (latency, s.now_ms(), over)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (ans, silent) = respond(&state, &method, &uri, &headers, &body, arrived_ms, over);
    if silent {
        // Accepted, never answered: the client gives up (and the connection closes) first.
        std::future::pending::<()>().await;
    }
    ans
}

/// Decides, logs and (when the request lands) applies one vendor-API request; also says whether
/// it must go unanswered.
fn respond(
    state: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    arrived_ms: u64,
    over_rate_at_arrival: bool,
) -> (Answer, bool) {
    let (method, body) = (method.clone(), body.clone());
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    let mut s = lock(state);
    let org = authenticate(&s, headers);
    let mut routed = false;
    let mut silent = false;
    let ans = if !path.starts_with(PREFIX) {
        error(404, format!("Cannot {method} {path}"))
    } else if org.is_none() {
        error(401, "Unauthorized: invalid GRADIENT-TOKEN")
    } else if s.outage_until.is_some_and(|t| Instant::now() < t) {
        error(503, "Service Unavailable (outage)")
    } else if let Some(b) = take_hostile(&mut s, &method, &path) {
        let org_id = org.clone().unwrap_or_default();
        let mut land = |s: &mut State| {
            routed = true;
            route(s, &org_id, &method, &path, query.as_deref(), &body)
        };
        match b {
            Behaviour::Body { status, body } => raw(status, Raw::Text(body)),
            Behaviour::LandsThen { status, body } => {
                land(&mut s);
                raw(status, Raw::Text(body))
            }
            Behaviour::LandsThenSilent => {
                land(&mut s);
                silent = true;
                answer(0, Value::Null)
            }
            Behaviour::Silent => {
                silent = true;
                answer(0, Value::Null)
            }
            Behaviour::Huge { status, bytes } => raw(status, Raw::Huge(bytes)),
        }
    } else if let Some(f) = take_fault(&mut s, &method, &path) {
        Answer {
            retry_after: f.retry_after_secs,
            ..error(f.status, "injected fault")
        }
    } else if s.throttle_ratio > 0.0 && fastrand::f64() < s.throttle_ratio {
        Answer {
            retry_after: s.throttle_retry_after,
            ..error(429, "Too many requests")
        }
    } else if over_rate_at_arrival {
        error(429, "Too many requests")
    } else {
        routed = true;
        let org_id = org.clone().unwrap_or_default();
        route(&mut s, &org_id, &method, &path, query.as_deref(), &body)
    };
    // A count call stopped before its route (401, fault, 429) is still a received push.
    if !routed && method == Method::POST && path.starts_with(PREFIX) && path.ends_with("/count") {
        record_push(
            &mut s,
            org.clone(),
            &path,
            query.as_deref(),
            &body,
            ans.status,
        );
    }
    let entry = RequestLogEntry {
        at_ms: arrived_ms,
        method: method.to_string(),
        path,
        query,
        status: ans.status,
        org_id: org,
        body: logged_body(&body),
    };
    s.requests.push(entry);
    (ans, silent)
}

pub(crate) fn sku_json(k: &SimService) -> Value {
    json!({
        "id": k.id, "_id": k.id, "name": k.name, "description": k.description,
        "category": k.category, "subcategory": k.subcategory,
        "supportArticle": k.support_article, "supportContact": k.support_contact
    })
}

pub(crate) fn wrapped(status: u16, data: Value) -> Answer {
    answer(
        status,
        json!({"status": status, "message": "ok", "data": data}),
    )
}

pub(crate) fn account_json(a: &SimAccount, m: &Mapping) -> Value {
    let is_mapped = match m {
        Mapping::All => true,
        Mapping::Explicit { accounts, .. } => accounts.contains(&a.id),
    };
    json!({"id": a.id, "name": a.name, "description": a.description, "isMapped": is_mapped,
           "mappingId": if is_mapped { Some(format!("map-{}", a.id)) } else { None }})
}

/// The stand-in's route table: one arm per Gradient route (long on purpose: a dispatch table reads
/// best in one place).
#[expect(
    clippy::too_many_lines,
    reason = "the stand-in's route table reads best in one place"
)]
fn route(
    s: &mut State,
    org_id: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Answer {
    let rest = path[PREFIX.len()..].trim_matches('/');
    let segs: Vec<String> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').map(percent_decode).collect()
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let json_body = || serde_json::from_slice::<Value>(body);
    match (method.as_str(), segs.as_slice()) {
        ("GET", []) => wrapped(200, vendor_object(s)),
        ("PATCH", []) => patch_vendor(s, body),
        ("POST", ["service"]) => {
            let Ok(v) = json_body() else {
                return error(400, "body must be JSON");
            };
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(name), Some(description), Some(category), Some(subcategory)) = (
                field("name"),
                field("description"),
                field("category"),
                field("subcategory"),
            ) else {
                return error(
                    400,
                    "name, description, category and subcategory are required strings",
                );
            };
            for f in ["supportArticle", "supportContact"] {
                if v.get(f).is_some_and(|x| !x.is_string() && !x.is_null()) {
                    return error(400, format!("{f} must be a string"));
                }
            }
            if name.trim().is_empty() {
                return error(400, "name must not be empty");
            }
            if !CATEGORIES.contains(&category.as_str()) {
                return error(
                    400,
                    format!(
                        "category must be one of the following values: {}",
                        CATEGORIES.join(", ")
                    ),
                );
            }
            if !SUBCATEGORIES.contains(&subcategory.as_str()) {
                return error(400, "subcategory must be one of the allowed values");
            }
            let id = s.new_id();
            s.services.push(SimService {
                id,
                name,
                description,
                category,
                subcategory,
                support_article: field("supportArticle"),
                support_contact: field("supportContact"),
            });
            answer(201, vendor_object(s))
        }
        ("GET", ["service", id]) => match s.services.iter().find(|k| k.id == *id) {
            Some(k) => wrapped(200, sku_json(k)),
            None => error(404, format!("No service found with id: {id}")),
        },
        ("POST", ["service", id, "count"]) => set_count(s, org_id, id, query, body),
        ("GET", ["organization"]) => answer(200, integration(s, org_id)),
        ("PATCH", ["organization", "status", st]) => {
            if !["inactive", "pending", "active", "disabled", "error"].contains(st) {
                return error(400, format!("invalid status: {st}"));
            }
            if let Some(o) = s.orgs.get_mut(org_id) {
                o.status = st.to_string();
                o.status_history.push(st.to_string());
            }
            // The newer spec's answer: `data` is a string, not the integration.
            wrapped(200, json!(format!("Integration status updated to {st}")))
        }
        ("GET", ["organization", "accounts"]) => {
            let Some(o) = s.orgs.get(org_id) else {
                return answer(200, json!([]));
            };
            let filter = super::newer::AccountFilter::from_query(query);
            answer(
                200,
                Value::Array(
                    o.accounts
                        .iter()
                        .map(|a| account_json(a, &o.mapping))
                        .filter(|a| filter.keeps(a))
                        .collect(),
                ),
            )
        }
        ("POST", ["organization", "accounts"]) => {
            // An array (bulk), or — the newer spec, CIPP for one tenant — one bare object.
            let items = match json_body() {
                Ok(Value::Array(items)) => items,
                Ok(one @ Value::Object(_)) => vec![one],
                _ => return error(400, "body must be an account or an array of accounts"),
            };
            let mut new = Vec::new();
            for item in &items {
                match item.get("id") {
                    Some(Value::String(_)) => {}
                    Some(_) => return error(400, "You have provided an invalid Id type"),
                    None => return error(400, "each account needs an id"),
                }
                if !item.get("name").is_some_and(Value::is_string) {
                    return error(400, "each account needs a name (string)");
                }
            }
            let Some(o) = s.orgs.get_mut(org_id) else {
                return error(404, "unknown organization");
            };
            // Another writer's creation lands first (see `Sim::add_account_before_next_create`).
            for a in std::mem::take(&mut o.racing) {
                if o.accounts.iter().all(|x| x.id != a.id) {
                    o.accounts.push(a);
                }
            }
            // One existing (or repeated) id refuses the whole request, as Gradient does.
            let mut seen = std::collections::HashSet::new();
            for item in &items {
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                if !seen.insert(id) || o.accounts.iter().any(|a| a.id == id) {
                    return error(409, "A resource with this Id already exists");
                }
            }
            for item in items {
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let a = SimAccount {
                    id,
                    name: item
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    description: item
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                };
                new.push(account_json(&a, &o.mapping));
                o.accounts.push(a);
            }
            answer(201, Value::Array(new))
        }
        ("PATCH", ["organization", "accounts", id]) => {
            let Ok(v) = json_body() else {
                return error(400, "body must be JSON");
            };
            let Some(o) = s.orgs.get_mut(org_id) else {
                return error(404, "unknown organization");
            };
            let mapping = o.mapping.clone();
            let Some(a) = o.accounts.iter_mut().find(|a| a.id == *id) else {
                return error(404, format!("No account found with id: {id}"));
            };
            if let Some(n) = v.get("name").and_then(Value::as_str) {
                a.name = n.to_string();
            }
            if let Some(d) = v.get("description").and_then(Value::as_str) {
                a.description = Some(d.to_string());
            }
            answer(200, account_json(a, &mapping))
        }
        ("GET", ["organization", "clients"]) => answer(
            200,
            json!({"meta": {"total": 0, "previousId": null}, "clients": []}),
        ),
        ("POST", ["alerting", _]) => answer(
            201,
            json!({"messageId": "m-1", "alertId": "a-1", "correlationID": "c-1"}),
        ),
        _ => super::newer::route(s, org_id, method.as_str(), &segs, body)
            .unwrap_or_else(|| error(404, format!("Cannot {method} {path}"))),
    }
}

fn set_count(
    s: &mut State,
    org_id: &str,
    service_id: &str,
    query: Option<&str>,
    body: &[u8],
) -> Answer {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // `clientOId` is the deprecated name of `accountId`, still read when it comes alone.
    let account = v
        .get("accountId")
        .or_else(|| v.get("clientOId"))
        .cloned()
        .unwrap_or(Value::Null);
    let count = v.get("unitCount").cloned().unwrap_or(Value::Null);
    let nb = no_build(query);
    let result = (|| {
        let Value::String(account_id) = &account else {
            return error(400, "You have provided an invalid Id type");
        };
        let Some(n) = count.as_f64().filter(|_| count.is_number()) else {
            return error(400, "unitCount must be a number");
        };
        let not_found = || error(404, format!("No account map found with id: {account_id}"));
        if !s.services.iter().any(|k| k.id == service_id) {
            return not_found();
        }
        let Some(o) = s.orgs.get_mut(org_id) else {
            return not_found();
        };
        if !o.accounts.iter().any(|a| a.id == *account_id)
            || !mapped(&o.mapping, account_id, service_id)
        {
            return not_found();
        }
        o.counts
            .insert((account_id.clone(), service_id.to_string()), n);
        if !nb {
            o.rebuilds += 1;
        }
        o.last_synced_at = Some(crate::time::format_ms(crate::time::now_ms()));
        // No source says Gradient turns an integration active by itself: the vendor sets it
        // (the newer spec; CIPP sends `active` when it syncs). The status is left as it is.
        answer(201, json!({"status": 201, "message": "Unit count set"}))
    })();
    let push = ReceivedPush {
        org_id: Some(org_id.to_string()),
        account_id: account,
        service_id: service_id.to_string(),
        unit_count: count,
        no_build: nb,
        status: result.status,
        at_ms: s.now_ms(),
    };
    s.pushes.push(push);
    result
}
