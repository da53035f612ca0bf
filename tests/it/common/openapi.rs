//! Holds real answers of the control API to its own OpenAPI document (`GET /v1/openapi.json`, the
//! same document `gradient_connector::api::openapi::document_json` builds): the route and method
//! are documented, the status is one of the operation's, and a JSON body validates against the
//! documented schema with a maintained JSON Schema validator (`jsonschema`, draft 2020-12 — the
//! dialect of OpenAPI 3.1). Every checked answer is remembered, so a test can ask which
//! operations it covered.

use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex};

use serde_json::Value;

static DOC: LazyLock<Value> = LazyLock::new(gradient_connector::api::openapi::document_json);

/// (method, path template, status) of every answer checked so far in this process.
static COVERED: Mutex<BTreeSet<(String, String, u16)>> = Mutex::new(BTreeSet::new());

/// The document.
pub fn document() -> &'static Value {
    &DOC
}

/// The documented path template `path` (no query) falls under, if any.
pub fn template_of(path: &str) -> Option<String> {
    let want: Vec<&str> = path.split('/').collect();
    DOC["paths"]
        .as_object()?
        .keys()
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == want.len()
                && parts
                    .iter()
                    .zip(&want)
                    .all(|(p, w)| (p.starts_with('{') && !w.is_empty()) || p == w)
        })
        .cloned()
}

/// Panics unless the answer (`status`, `content_type`, `body`) to `method target` is one the
/// document describes. Routes the document does not have may only answer 404 `not_found`, and a
/// documented route 405 to a method it does not take.
pub fn check(method: &str, target: &str, status: u16, content_type: Option<&str>, body: &str) {
    let path = target.split('?').next().unwrap_or(target);
    let Some(template) = template_of(path) else {
        assert_eq!(
            status, 404,
            "{method} {target} is not in openapi.json but answered {status}: {body}"
        );
        return;
    };
    let op = &DOC["paths"][&template][method.to_ascii_lowercase()];
    if op.is_null() {
        assert_eq!(
            status, 405,
            "{method} {template} is not in openapi.json but answered {status}: {body}"
        );
        return;
    }
    let answer = &op["responses"][status.to_string()];
    assert!(
        !answer.is_null(),
        "{method} {template} answered {status}, which openapi.json does not list ({}): {body}",
        op["responses"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    COVERED
        .lock()
        .unwrap()
        .insert((method.to_ascii_uppercase(), template.clone(), status));
    let Some(content) = answer["content"].as_object() else {
        return;
    };
    let ct = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if let Some(media) = content.get("application/json") {
        assert_eq!(
            ct, "application/json",
            "{method} {template} {status}: {body}"
        );
        let instance: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: not JSON ({e}): {body}"));
        validate(
            &media["schema"],
            &instance,
            &format!("{method} {template} {status}"),
        );
    } else {
        let (documented, _) = content.iter().next().expect("a media type");
        assert!(
            documented.starts_with(ct) && !ct.is_empty(),
            "{method} {template} {status}: content type {ct:?}, documented {documented:?}"
        );
    }
}

/// Validates `instance` against `schema` (which may `$ref` the document's components).
pub fn validate(schema: &Value, instance: &Value, what: &str) {
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert("components".into(), DOC["components"].clone());
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| {
            panic!("{what}: the documented schema does not compile: {e}\n{root:#}")
        });
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not validate against openapi.json:\n{}\n{instance:#}",
        errors.join("\n")
    );
}

/// The (method, template, status) answers checked so far in this process.
pub fn covered() -> BTreeSet<(String, String, u16)> {
    COVERED.lock().unwrap().clone()
}
