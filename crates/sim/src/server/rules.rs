//! What the stand-in checks and records for one request of the vendor API: hostile and scripted
//! faults, the rate window, pushes, the vendor object and the mapping.

use super::*;

pub(crate) fn take_hostile(s: &mut State, method: &Method, path: &str) -> Option<Behaviour> {
    let i = s.hostile.iter().position(|h| {
        h.count > 0
            && h.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && h.path.as_deref().is_none_or(|p| path == p)
            && h.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    })?;
    let b = s.hostile[i].behaviour.clone();
    s.hostile[i].count -= 1;
    if s.hostile[i].count == 0 {
        s.hostile.remove(i);
    }
    Some(b)
}

/// A request body as `/_sim/state` shows it: its JSON, else its text; None when empty.
pub(crate) fn logged_body(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    )
}

pub(crate) fn service_of(path: &str) -> String {
    let rest = path.trim_start_matches(PREFIX);
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    segs.get(1).map(|s| percent_decode(s)).unwrap_or_default()
}

pub(crate) fn record_push(
    s: &mut State,
    org: Option<String>,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    status: u16,
) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let push = ReceivedPush {
        org_id: org,
        account_id: v.get("accountId").cloned().unwrap_or(Value::Null),
        service_id: service_of(path),
        unit_count: v.get("unitCount").cloned().unwrap_or(Value::Null),
        no_build: no_build(query),
        status,
        at_ms: s.now_ms(),
    };
    s.pushes.push(push);
}

pub(crate) fn no_build(query: Option<&str>) -> bool {
    // Gradient's SDK writes `True` (PowerShell's rendering), gradient-cli `true`.
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.eq_ignore_ascii_case("no_build=true"))
    })
}

pub(crate) fn take_fault(s: &mut State, method: &Method, path: &str) -> Option<Fault> {
    let i = s.faults.iter().position(|f| {
        f.count > 0
            && f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    })?;
    let f = s.faults[i].clone();
    s.faults[i].count -= 1;
    if s.faults[i].count == 0 {
        s.faults.remove(i);
    }
    Some(f)
}

pub(crate) fn over_rate(s: &mut State, org: &str) -> bool {
    if s.rate_limit == 0 {
        return false;
    }
    let limit = s.rate_limit as usize;
    let now = Instant::now();
    let w = s.windows.entry(org.to_string()).or_default();
    while w
        .front()
        .is_some_and(|t| now.duration_since(*t).as_millis() >= 1000)
    {
        w.pop_front();
    }
    if w.len() >= limit {
        return true;
    }
    w.push_back(now);
    false
}

pub(crate) fn vendor_object(s: &State) -> Value {
    json!({
        "id": "5e1d00000000000000000001",
        "name": s.vendor.name,
        "description": s.vendor.description,
        "integrationPortalUrl": s.vendor.integration_portal_url,
        "vendorSupportPageUrl": s.vendor.vendor_support_page_url,
        "skus": s.services.iter().map(sku_json).collect::<Vec<_>>()
    })
}

/// PATCH `/api/vendor-api`: any of `name, description, integrationPortalUrl, vendorSupportPageUrl`.
pub(crate) fn patch_vendor(s: &mut State, body: &[u8]) -> Answer {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(body) else {
        return error(400, "body must be a JSON object");
    };
    const FIELDS: [&str; 4] = [
        "name",
        "description",
        "integrationPortalUrl",
        "vendorSupportPageUrl",
    ];
    for f in FIELDS {
        // The SDK sends all four keys, `null` for those it leaves unchanged.
        if v.get(f).is_some_and(|x| !x.is_string() && !x.is_null()) {
            return error(400, format!("{f} must be a string"));
        }
    }
    let text = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    if let Some(n) = text("name") {
        s.vendor.name = n;
    }
    if let Some(d) = text("description") {
        s.vendor.description = d;
    }
    if let Some(u) = text("integrationPortalUrl") {
        s.vendor.integration_portal_url = Some(u);
    }
    if let Some(u) = text("vendorSupportPageUrl") {
        s.vendor.vendor_support_page_url = Some(u);
    }
    wrapped(200, vendor_object(s))
}

pub(crate) fn integration(s: &State, org_id: &str) -> Value {
    let o = s.orgs.get(org_id);
    json!({
        "organizationId": org_id,
        "name": o.map(|o| o.name.clone()),
        "vendorId": "5e1d00000000000000000001",
        "vendorName": "Sim Vendor",
        "integrationId": format!("int-{org_id}"),
        "status": o.map(|o| o.status.clone()),
        "lastSyncedAt": o.and_then(|o| o.last_synced_at.clone()).unwrap_or_else(|| NEVER_SYNCED.into()),
    })
}

pub(crate) fn mapped(m: &Mapping, account: &str, service: &str) -> bool {
    match m {
        Mapping::All => true,
        Mapping::Explicit {
            accounts,
            service_ids,
        } => accounts.iter().any(|a| a == account) && service_ids.iter().any(|x| x == service),
    }
}
