//! The routes of Gradient's newer spec that we do not use, answered as documented (a client
//! generated from that spec — gradient-cli — or CIPP gets what Gradient would give it, not a 404):
//! bulk `PATCH /organization/accounts`, organization-scoped services (`POST`/`PATCH
//! /organization/services`, `PATCH /organization/services/{id}`), `PATCH /service/{id}` and
//! `GET /alerting/debug/{messageId}`; and the account list's `accountIds` / `returnUnmapped`.

use serde_json::{json, Value};

use super::server::{account_json, answer, error, percent_decode, sku_json, wrapped, Answer};
use super::State;

/// The account list's filters (`accountIds`: comma-separated; `returnUnmapped`: default all).
pub(crate) struct AccountFilter {
    ids: Option<Vec<String>>,
    unmapped_too: bool,
}

impl AccountFilter {
    pub(crate) fn from_query(query: Option<&str>) -> AccountFilter {
        let mut f = AccountFilter {
            ids: None,
            unmapped_too: true,
        };
        for kv in query.unwrap_or_default().split('&') {
            match kv.split_once('=') {
                Some(("accountIds", v)) => {
                    f.ids = Some(
                        percent_decode(v)
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    );
                }
                Some(("returnUnmapped", v)) => f.unmapped_too = !v.eq_ignore_ascii_case("false"),
                _ => {}
            }
        }
        f
    }

    /// Whether an account (as the list shows it) passes.
    pub(crate) fn keeps(&self, a: &Value) -> bool {
        let id = a["id"].as_str().unwrap_or_default();
        let listed = self
            .ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == id));
        let mapped = a["isMapped"].as_bool().unwrap_or(false);
        listed && (self.unmapped_too || mapped)
    }
}

/// One of the newer routes, or None when `segs` is none of them.
pub(crate) fn route(
    s: &mut State,
    org_id: &str,
    method: &str,
    segs: &[&str],
    body: &[u8],
) -> Option<Answer> {
    let body = || serde_json::from_slice::<Value>(body).ok();
    Some(match (method, segs) {
        ("PATCH", ["organization", "accounts"]) => bulk_patch_accounts(s, org_id, body()),
        ("POST", ["organization", "services"]) => match body() {
            Some(v @ Value::Object(_)) => create_org_service(s, org_id, v),
            _ => error(400, "body must be a service object"),
        },
        ("PATCH", ["organization", "services"]) => match body() {
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    let id = item["id"].as_str().unwrap_or_default().to_string();
                    match patch_org_service(s, org_id, &id, &item) {
                        Ok(v) => out.push(v),
                        Err(a) => return Some(a),
                    }
                }
                answer(200, Value::Array(out))
            }
            _ => error(400, "body must be an array of services with their ids"),
        },
        ("PATCH", ["organization", "services", id]) => match body() {
            Some(v @ Value::Object(_)) => match patch_org_service(s, org_id, id, &v) {
                Ok(service) => answer(200, service),
                Err(a) => a,
            },
            _ => error(400, "body must be a service object"),
        },
        ("PATCH", ["service", id]) => patch_service(s, id, body()),
        ("GET", ["alerting", "debug", message_id]) => {
            if *message_id == "m-1" {
                answer(
                    200,
                    json!({"messageId": message_id, "status": "delivered", "attempts": 1}),
                )
            } else {
                error(404, format!("No alert message found with id: {message_id}"))
            }
        }
        _ => return None,
    })
}

/// `PATCH /organization/accounts`: `[{id, name?, description?}]`; an unknown id changes nothing.
fn bulk_patch_accounts(s: &mut State, org_id: &str, body: Option<Value>) -> Answer {
    let Some(Value::Array(items)) = body else {
        return error(400, "body must be an array of accounts with their ids");
    };
    let Some(o) = s.orgs.get_mut(org_id) else {
        return error(404, "unknown organization");
    };
    for item in &items {
        let Some(id) = item["id"].as_str() else {
            return error(400, "You have provided an invalid Id type");
        };
        if !o.accounts.iter().any(|a| a.id == id) {
            return error(404, format!("No account found with id: {id}"));
        }
    }
    let mapping = o.mapping.clone();
    let mut out = Vec::new();
    for item in items {
        let id = item["id"].as_str().unwrap_or_default();
        if let Some(a) = o.accounts.iter_mut().find(|a| a.id == id) {
            if let Some(n) = item["name"].as_str() {
                a.name = n.to_string();
            }
            if let Some(d) = item["description"].as_str() {
                a.description = Some(d.to_string());
            }
            out.push(account_json(a, &mapping));
        }
    }
    answer(200, Value::Array(out))
}

fn create_org_service(s: &mut State, org_id: &str, v: Value) -> Answer {
    if v["name"].as_str().is_none_or(|n| n.trim().is_empty()) {
        return error(400, "name is required");
    }
    let id = s.new_id();
    let mut service = v;
    service["id"] = Value::String(id.clone());
    for flag in ["isActive", "isArrears"] {
        if service[flag].is_null() {
            service[flag] = Value::Bool(flag == "isActive");
        }
    }
    s.org_services
        .entry(org_id.to_string())
        .or_default()
        .insert(id, service.clone());
    answer(201, service)
}

fn patch_org_service(s: &mut State, org_id: &str, id: &str, v: &Value) -> Result<Value, Answer> {
    let Some(service) = s.org_services.get_mut(org_id).and_then(|m| m.get_mut(id)) else {
        return Err(error(404, format!("No service found with id: {id}")));
    };
    if let Value::Object(fields) = v {
        for (k, val) in fields {
            if k != "id" && !val.is_null() {
                service[k] = val.clone();
            }
        }
    }
    Ok(service.clone())
}

/// `PATCH /service/{id}`: any of the creation fields of a vendor service.
fn patch_service(s: &mut State, id: &str, body: Option<Value>) -> Answer {
    let Some(Value::Object(v)) = body else {
        return error(400, "body must be a JSON object");
    };
    let Some(k) = s.services.iter_mut().find(|k| k.id == id) else {
        return error(404, format!("No service found with id: {id}"));
    };
    let text = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    if let Some(n) = text("name") {
        k.name = n;
    }
    if let Some(d) = text("description") {
        k.description = d;
    }
    if let Some(c) = text("category") {
        k.category = c;
    }
    if let Some(c) = text("subcategory") {
        k.subcategory = c;
    }
    if let Some(a) = text("supportArticle") {
        k.support_article = Some(a);
    }
    if let Some(c) = text("supportContact") {
        k.support_contact = Some(c);
    }
    wrapped(200, sku_json(k))
}
