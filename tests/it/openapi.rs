//! `GET /v1/openapi.json` describes the API the daemon serves: the served document is the one the
//! routes' definitions generate, every `$ref` resolves, and every documented operation, called on
//! the real binary, answers with a documented status and a body that validates against the
//! documented schema (`common::openapi::check`, which also holds every answer of the
//! `control_api` tests to the document).

use std::collections::BTreeSet;

use crate::common::openapi;
use crate::common::*;
use crate::control_api::{add_msps, inventory, sim_env, Api, TOKEN_A};
use serde_json::json;

#[test]
fn the_served_document_is_the_generated_openapi_3_1_and_every_ref_resolves() {
    let e = sim_env(|c| c);
    let _d = Daemon::start(&e, &[]);
    let served = Api::unix(&e).get("/v1/openapi.json").expect(200);
    assert_eq!(&served, openapi::document());
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    let text = served.to_string();
    let schemas = served["components"]["schemas"].as_object().unwrap();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "$ref to a missing schema {name}"
        );
    }
    // Every route of the contract is there.
    for (method, path) in [
        ("get", "/v1/status"),
        ("get", "/v1/connectors"),
        ("get", "/v1/connectors/{id}"),
        ("delete", "/v1/connectors/{id}"),
        ("put", "/v1/connectors/{id}/token"),
        ("post", "/v1/connectors/{id}/accounts/sync"),
        ("post", "/v1/connectors/{id}/verify"),
        ("post", "/v1/sync"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{id}"),
        ("get", "/v1/history"),
        ("post", "/v1/inventory"),
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/openapi.json"),
        ("get", "/v1/sources"),
        ("post", "/v1/sources/pull"),
        ("put", "/v1/connectors/{id}/contacts"),
        ("get", "/"),
        ("post", "/login"),
    ] {
        assert!(
            served["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon, every documented operation called in turn"
)]
fn every_documented_operation_answers_as_documented() {
    let e = sim_env(|c| c);
    add_msps(&e);
    let _d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    api.get("/healthz").expect(200);
    api.get("/readyz").expect(200);
    api.get("/v1/openapi.json").expect(200);
    api.inventory(&inventory().to_jsonl()).expect(200);
    api.inventory("{\"type\":\"bogus\"}\n").expect(422);
    api.paste("msp-0", TOKEN_A).expect(200);
    api.paste("msp-1", "").expect(400);
    api.get("/v1/connectors").expect(200);
    let contacts = api
        .send(
            "PUT",
            "/v1/connectors/msp-0/contacts",
            &json!({"emails": ["admin@msp.example"]}),
        )
        .expect(200);
    assert_eq!(contacts["emails"], json!(["admin@msp.example"]));
    assert_eq!(contacts["mailed"], false, "no [email] section: {contacts}");
    api.send(
        "PUT",
        "/v1/connectors/msp-0/contacts",
        &json!({"emails": ["not an address"]}),
    )
    .expect(400);
    api.get("/v1/connectors/msp-0").expect(200);
    api.get("/v1/connectors/nobody").expect(404);
    api.send("POST", "/v1/connectors/msp-0/verify", &json!({}))
        .expect(200);
    api.send("POST", "/v1/connectors/msp-0/accounts/sync", &json!({}))
        .expect(200);
    api.send("POST", "/v1/sync", &json!({"wait": true}))
        .expect(200);
    api.send("POST", "/v1/sync", &json!({})).expect(202);
    api.send("POST", "/v1/sync", &json!({"connector": "nobody"}))
        .expect(404);
    let run = api.wait_finished_run("api");
    api.get(&format!("/v1/runs/{}", run["id"])).expect(200);
    api.get("/v1/runs/999999").expect(404);
    api.get("/v1/runs?limit=5").expect(200);
    let rows = api.get("/v1/history?connector=msp-0&limit=5").expect(200);
    assert!(!rows.as_array().unwrap().is_empty(), "{rows}");
    api.get("/v1/history?run=x").expect(400);
    api.get("/v1/status").expect(200);
    // The status page (open over the unix socket).
    let page = api.get("/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(api.get("/connectors/msp-0").status, 200);
    assert_eq!(api.get("/connectors/nobody").status, 404);
    assert_eq!(api.get("/login").status, 303);
    assert_eq!(
        api.call(
            "POST",
            "/login",
            &[],
            Some(("application/x-www-form-urlencoded", b"token=x"))
        )
        .status,
        303
    );
    assert_eq!(api.call("POST", "/logout", &[], None).status, 303);
    api.get("/v1/sources").expect(200);
    api.send("POST", "/v1/sources/pull", &json!({})).expect(200);
    api.send("POST", "/v1/sources/pull", &json!({"name": "nope"}))
        .expect(404);
    let metrics = api.get("/metrics");
    assert_eq!(metrics.status, 200);
    api.call("DELETE", "/v1/connectors/msp-0", &[], None)
        .expect(200);
    api.call("DELETE", "/v1/connectors/msp-0?forget=true", &[], None)
        .expect(200);
    api.get("/v1/no-such-route").expect(404);

    // Every documented operation was answered with a documented 2xx at least once.
    let covered: BTreeSet<(String, String)> = openapi::covered()
        .into_iter()
        .filter(|(_, _, status)| (200..400).contains(status))
        .map(|(m, t, _)| (m, t))
        .collect();
    let doc = openapi::document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let key = (method.to_ascii_uppercase(), path.clone());
            assert!(
                covered.contains(&key),
                "{} {path} was not exercised with a success (2xx or a redirect)",
                key.0
            );
        }
    }
    // A wrong answer would be caught: a status the operation does not list, a body of the wrong
    // shape.
    let wrong = std::panic::catch_unwind(|| {
        openapi::check(
            "GET",
            "/v1/runs",
            200,
            Some("application/json"),
            r#"{"runs": [{"id": "x"}]}"#,
        )
    });
    assert!(wrong.is_err(), "a run with a text id validated");
    let wrong = std::panic::catch_unwind(|| {
        openapi::check("GET", "/v1/status", 418, Some("application/json"), "{}")
    });
    assert!(wrong.is_err(), "an undocumented status passed");
}
