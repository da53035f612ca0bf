//! How an answer from Gradient is read and judged before anyone trusts it: the body is read
//! streamed under a size cap ([`read_capped`]); a 2xx whose JSON body is an error object (e.g.
//! `{"statusCode":503,…}`) is not a success ([`success_value`]); and the answers the connector
//! builds decisions on — the catalogue, the account list, the integration — are decoded strictly
//! ([`vendor_answer`], [`accounts_answer`], [`integration_answer`]): anything that is not clearly
//! the documented shape is a [`ErrorKind::Decode`] error, never an empty catalogue or an empty
//! account list (which would make the connector create everything again).

use serde_json::Value;

use super::error::{ErrorKind, GradientError};
use super::types::{Account, Integration, Sku, Vendor};

/// The default cap on a list answer (the catalogue, accounts): 4 MiB.
pub const DEFAULT_LIST_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// The default cap on any other answer: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The body is larger than the cap (nothing more was read).
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads a response body chunk by chunk, stopping as soon as it exceeds `cap` bytes (a
/// `Content-Length` above the cap is refused before reading anything). Memory stays bounded by
/// the cap whatever Gradient sends.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if out.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads at most `cap` bytes of an error answer's body (the rest is left unread: an error
/// message needs no more).
pub(crate) async fn read_prefix(mut resp: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// The error a too-large answer becomes.
pub(crate) fn too_large(status: u16, cap: usize) -> GradientError {
    GradientError::new(
        ErrorKind::TooLarge,
        Some(status),
        format!(
            "the answer is larger than {} KiB and was not read",
            cap / 1024
        ),
    )
}

/// The status and message of an error object sent as a success: `statusCode` (or a numeric
/// `status`) of 400 or more. None when the body does not say it failed.
pub fn error_in_body(v: &Value) -> Option<(u16, String)> {
    let Value::Object(m) = v else { return None };
    let code = |k: &str| match m.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let status = code("statusCode").or_else(|| code("status"))?;
    if !(400..=599).contains(&status) {
        return None;
    }
    let message = match m.get("message").or_else(|| m.get("error")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Some((status as u16, message))
}

/// A 2xx body as JSON (`Null` when empty). Not JSON → [`ErrorKind::Decode`]; a JSON error object
/// (see [`error_in_body`]) → `Err` with `Ok(status, message)` for the caller to classify as if
/// Gradient had answered that status.
pub(crate) fn success_value(status: u16, bytes: &[u8]) -> Result<Value, BodyVerdict> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        let message = format!("the answer is not JSON: {e}");
        let mut g = GradientError::caused_by(ErrorKind::Decode, message, e);
        g.status = Some(status);
        BodyVerdict::Undecodable(g)
    })?;
    match error_in_body(&v) {
        Some((code, message)) => Err(BodyVerdict::SaysFailed(code, message)),
        None => Ok(v),
    }
}

/// Why a 2xx body is not a plain success.
#[derive(Debug)]
pub(crate) enum BodyVerdict {
    /// Not JSON at all.
    Undecodable(GradientError),
    /// A JSON error object: the status and message it carries.
    SaysFailed(u16, String),
}

fn decode_error(msg: impl Into<String>) -> GradientError {
    GradientError::new(ErrorKind::Decode, None, msg.into())
}

/// A decode error that keeps the decoder's own error as its source.
fn decode_failure(msg: String, e: serde_json::Error) -> GradientError {
    GradientError::caused_by(ErrorKind::Decode, msg, e)
}

/// The whole path of a catalogue answer: JSON, not an error object, a strict vendor object.
pub fn vendor_answer(bytes: &[u8]) -> Result<Vendor, GradientError> {
    decode_vendor(plain_success(bytes)?)
}

/// The whole path of an account list answer.
pub fn accounts_answer(bytes: &[u8]) -> Result<Vec<Account>, GradientError> {
    decode_accounts(plain_success(bytes)?)
}

/// The whole path of an integration (GET organization) answer.
pub fn integration_answer(bytes: &[u8]) -> Result<Integration, GradientError> {
    decode_integration(plain_success(bytes)?)
}

fn plain_success(bytes: &[u8]) -> Result<Value, GradientError> {
    success_value(200, bytes).map_err(|v| match v {
        BodyVerdict::Undecodable(e) => e,
        BodyVerdict::SaysFailed(code, m) => {
            decode_error(format!("a success whose body says it failed ({code}): {m}"))
        }
    })
}

/// `{status, message, data}` or `{data}` → `data`, when the object is not itself the answer
/// (`keep` names a key only the answer itself has).
fn unwrap(v: Value, keep: &str) -> Value {
    match v {
        Value::Object(mut m) if m.contains_key("data") && !m.contains_key(keep) => {
            m.remove("data").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// A vendor object is trusted only with a `skus` array whose every entry has an id (`id`, else
/// `_id`; a string or a number) and a non-empty name.
pub fn decode_vendor(v: Value) -> Result<Vendor, GradientError> {
    let Value::Object(mut m) = unwrap(v, "skus") else {
        return Err(decode_error(
            "the catalogue is not a vendor object; nothing is created from it",
        ));
    };
    let skus = match m.remove("skus") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(decode_error("the catalogue's skus is not a list")),
        None => return Err(decode_error("the catalogue has no skus list")),
    };
    let mut checked = Vec::with_capacity(skus.len());
    for (i, s) in skus.into_iter().enumerate() {
        checked.push(strict_sku(i, s)?);
    }
    let mut vendor: Vendor = serde_json::from_value(Value::Object(m))
        .map_err(|e| decode_failure(format!("the vendor object cannot be read: {e}"), e))?;
    vendor.skus = checked;
    Ok(vendor)
}

fn strict_sku(i: usize, v: Value) -> Result<Sku, GradientError> {
    let Value::Object(m) = &v else {
        return Err(decode_error(format!(
            "catalogue entry {i} is not an object"
        )));
    };
    let id_of = |k: &str| match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let Some(id) = id_of("id").or_else(|| id_of("_id")) else {
        return Err(decode_error(format!("catalogue entry {i} has no id")));
    };
    match m.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Err(decode_error(format!("catalogue entry {i} has no name"))),
    }
    let mut sku: Sku = serde_json::from_value(v)
        .map_err(|e| decode_failure(format!("catalogue entry {i} cannot be read: {e}"), e))?;
    // The id judged above (an empty `id` beside a good `_id` must not win).
    sku.id = id;
    Ok(sku)
}

/// An account list is trusted only when it is a list: bare, wrapped in `data`, or under
/// `accounts`. Null, an object without a list, or anything else is an error (never "no
/// accounts"). Rows without an id are skipped with a warning (Gradient's SDK treats it as
/// optional).
pub fn decode_accounts(v: Value) -> Result<Vec<Account>, GradientError> {
    let rows = match unwrap(v, "accounts") {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("accounts") {
            Some(Value::Array(a)) => a,
            _ => return Err(decode_error("the account list is not a list")),
        },
        _ => return Err(decode_error("the account list is not a list")),
    };
    Ok(super::types::account_rows(rows))
}

/// The integration must be an object (bare or wrapped in `data`).
pub fn decode_integration(v: Value) -> Result<Integration, GradientError> {
    match unwrap(v, "organizationId") {
        Value::Object(m) => serde_json::from_value(Value::Object(m))
            .map_err(|e| decode_failure(format!("the integration cannot be read: {e}"), e)),
        _ => Err(decode_error("the integration is not an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_catalogues_are_errors_not_empty() {
        for body in [
            r#"{"statusCode":503,"message":"Service Unavailable"}"#,
            r#"{"data":{}}"#,
            r#"{"status":200,"message":"ok","data":{"skus":[{"id":"s1","name":null}]}}"#,
            r#"{"status":200,"message":"ok","data":null}"#,
            r#"{"skus":{"id":"s1"}}"#,
            r#"[]"#,
            "",
            "<html>",
        ] {
            assert!(vendor_answer(body.as_bytes()).is_err(), "{body}");
        }
        let ok = vendor_answer(
            br#"{"status":200,"message":"ok","data":{"skus":[{"_id":7,"name":"A"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.skus[0].id.as_str(), ok.skus[0].name.as_str()),
            ("7", "A")
        );
        assert!(vendor_answer(br#"{"skus":[]}"#).unwrap().skus.is_empty());
        // Found by tests/decoder_properties.rs: an empty `id` beside a good `_id`.
        let v = vendor_answer(br#"{"skus":[{"id":"","_id":"s9","name":"A"}]}"#).unwrap();
        assert_eq!(v.skus[0].id, "s9");
    }

    #[test]
    fn account_lists_must_be_lists() {
        for body in [
            r#"{"data":null}"#,
            r#"{"status":200,"message":"ok","data":null}"#,
            r#"{"accounts":null}"#,
            r#"{"statusCode":500,"message":"x"}"#,
            "null",
            "",
            r#""[]""#,
        ] {
            assert!(accounts_answer(body.as_bytes()).is_err(), "{body}");
        }
        assert_eq!(accounts_answer(b"[]").unwrap().len(), 0);
        assert_eq!(
            accounts_answer(br#"{"data":[{"id":"a","name":"A"},{"name":"no id"}]}"#)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn error_objects_in_a_success() {
        assert_eq!(
            error_in_body(&json!({"statusCode": 503, "message": "down"})),
            Some((503, "down".into()))
        );
        assert_eq!(
            error_in_body(&json!({"status": 201, "message": "Unit count set"})),
            None
        );
        assert_eq!(
            error_in_body(&json!({"status": "404"})).map(|e| e.0),
            Some(404)
        );
        assert_eq!(error_in_body(&json!([1])), None);
    }
}
