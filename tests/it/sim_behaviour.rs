//! gradient-sim on its own: duplicate services, disconnect/reconnect, and the binary's interface.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use base64::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_port_and_serves_admin_and_vendor_api() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "partner-1\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradient-sim"))
        .args(["--port", "0", "--msp"])
        .arg(format!("org-1:Acme:{}", key.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().expect("first line is the port");
    let get = |path: &str, token: Option<&str>| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let auth = token
            .map(|t| format!("GRADIENT-TOKEN: {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let token = base64::engine::general_purpose::STANDARD.encode("sim-vendor-key:partner-1");
    let r = get("/api/vendor-api/organization", Some(&token));
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"organizationId\":\"org-1\""),
        "{r}"
    );
    let r = get("/api/vendor-api/organization", Some("bm9wZTpub3Bl"));
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let state = get("/_sim/state", None);
    assert!(
        state.contains("\"requests\"") && state.contains("org-1"),
        "{state}"
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "gradient-sim exits 0 on SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_disconnect_and_reconnect() {
    use gradient_connector::gradient::{
        ClientSettings, ErrorKind, GradientClient, NewAccount, NewService,
    };
    use secrecy::SecretString;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k1");
    let client = GradientClient::new(
        ClientSettings {
            base_url: sim.base_url().parse().unwrap(),
            requests_per_second: 100,
            max_in_flight: 2,
            request_timeout: std::time::Duration::from_secs(5),
            max_attempts: 1,
            retry_initial_delay: std::time::Duration::from_millis(1),
            retry_max_delay: std::time::Duration::from_millis(1),
            max_list_body: gradient_connector::gradient::answer::DEFAULT_LIST_BODY_LIMIT,
            max_body: gradient_connector::gradient::answer::DEFAULT_BODY_LIMIT,
        },
        SecretString::from("sim-vendor-key".to_string()),
    )
    .unwrap();
    let s = client.partner(&SecretString::from("k1".to_string()));
    let svc = NewService {
        name: "Backup".into(),
        description: "d".into(),
        category: "backup".into(),
        subcategory: "cloud backup".into(),
        support_article: None,
        support_contact: None,
    };
    s.create_service(&svc).await.unwrap();
    s.create_service(&svc).await.unwrap();
    assert_eq!(
        sim.snapshot().services.len(),
        2,
        "the real API creates duplicates: so does the stand-in"
    );
    s.create_accounts(&[NewAccount {
        id: "a".into(),
        name: "A".into(),
        description: None,
    }])
    .await
    .unwrap();
    sim.disconnect("o");
    assert_eq!(
        s.get_accounts().await.unwrap_err().kind,
        ErrorKind::Unauthorized
    );
    sim.reconnect("o", "k2");
    let s2 = client.partner(&SecretString::from("k2".to_string()));
    assert!(s2.get_accounts().await.unwrap().value.is_empty());
    assert_eq!(sim.snapshot().org("o").unwrap().status, "inactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_must_be_numbers_and_account_ids_strings() {
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    let port = sim.addr().port();
    let token = base64::engine::general_purpose::STANDARD.encode("sim-vendor-key:k");
    let post = move |path: &str, body: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nGRADIENT-TOKEN: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = tokio::task::spawn_blocking({
        let post = post.clone();
        move || post("/api/vendor-api/service", r#"{"name":"S","description":"d","category":"backup","subcategory":"cloud backup"}"#)
    })
    .await
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let sid = sim.snapshot().services[0].id.clone();
    let path = format!("/api/vendor-api/service/{sid}/count");
    let (p1, p2, p3) = (path.clone(), path.clone(), path);
    let a = tokio::task::spawn_blocking({
        let post = post.clone();
        move || post(&p1, r#"{"accountId":"a","unitCount":"5"}"#)
    })
    .await
    .unwrap();
    assert!(
        a.starts_with("HTTP/1.1 400") && a.contains("unitCount must be a number"),
        "{a}"
    );
    let b = tokio::task::spawn_blocking({
        let post = post.clone();
        move || post(&p2, r#"{"accountId":1,"unitCount":5}"#)
    })
    .await
    .unwrap();
    assert!(
        b.starts_with("HTTP/1.1 400") && b.contains("invalid Id type"),
        "{b}"
    );
    let c =
        tokio::task::spawn_blocking(move || post(&p3, r#"{"accountId":"nobody","unitCount":5}"#))
            .await
            .unwrap();
    assert!(
        c.starts_with("HTTP/1.1 404") && c.contains("No account map found with id: nobody"),
        "{c}"
    );
    let pushes = sim.snapshot().pushes;
    assert_eq!(pushes.len(), 3, "every call is recorded");
    assert_eq!(pushes[0].unit_count, serde_json::json!("5"));
}

/// A raw HTTP client for the stand-in, as a client generated from Gradient's newer spec would call it.
struct Raw {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Raw {
    async fn new(sim: &gradient_connector::sim::Sim, partner: &str) -> Raw {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Raw {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token: base64::engine::general_purpose::STANDARD
                .encode(format!("sim-vendor-key:{partner}")),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("GRADIENT-TOKEN", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

const V: &str = "/api/vendor-api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_spec_accounts_a_duplicate_id_refuses_the_whole_request() {
    use reqwest::Method;
    use serde_json::json;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    let r = Raw::new(&sim, "k").await;
    let accounts = format!("{V}/organization/accounts");
    let (st, _) = r
        .call(
            Method::POST,
            &accounts,
            Some(json!([{"id": "a", "name": "A"}])),
        )
        .await;
    assert_eq!(st, 201);
    // "a" exists: nothing of this request is created.
    let (st, body) = r
        .call(
            Method::POST,
            &accounts,
            Some(json!([{"id": "b", "name": "B"}, {"id": "a", "name": "A"}])),
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(body["message"], "A resource with this Id already exists");
    // The same id twice in one request is refused too.
    let (st, _) = r
        .call(
            Method::POST,
            &accounts,
            Some(json!([{"id": "c", "name": "C"}, {"id": "c", "name": "C"}])),
        )
        .await;
    assert_eq!(st, 409);
    let ids: Vec<String> = sim
        .snapshot()
        .org("o")
        .unwrap()
        .accounts
        .iter()
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(ids, ["a"]);
    // /_sim/state shows every request's body, refused ones included.
    let snap = sim.snapshot();
    let bodies: Vec<_> = snap.requests.iter().map(|q| q.body.clone()).collect();
    assert_eq!(
        bodies[1],
        Some(json!([{"id": "b", "name": "B"}, {"id": "a", "name": "A"}]))
    );
    let (st, state) = r.call(Method::GET, "/_sim/state", None).await;
    assert_eq!(st, 200);
    assert_eq!(state["requests"][2]["body"][0]["id"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_spec_services_vendor_profile_and_clients() {
    use reqwest::Method;
    use serde_json::json;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    let r = Raw::new(&sim, "k").await;
    let service = format!("{V}/service");
    // `description` is required.
    let (st, body) = r
        .call(
            Method::POST,
            &service,
            Some(json!({"name": "S", "category": "backup", "subcategory": "cloud backup"})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("description"));
    // supportArticle / supportContact are kept and returned.
    let (st, vendor) = r
        .call(
            Method::POST,
            &service,
            Some(
                json!({"name": "S", "description": "d", "category": "backup",
                        "subcategory": "cloud backup", "supportArticle": "https://kb.example/s",
                        "supportContact": "support@example.com"}),
            ),
        )
        .await;
    assert_eq!(st, 201);
    let sku = &vendor["skus"][0];
    assert_eq!(sku["supportArticle"], "https://kb.example/s");
    assert_eq!(sku["supportContact"], "support@example.com");
    let (_, one) = r
        .call(
            Method::GET,
            &format!("{service}/{}", sku["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(one["data"]["supportContact"], "support@example.com");
    // The vendor PATCH stores and returns the profile.
    let (st, patched) = r
        .call(
            Method::PATCH,
            V,
            Some(
                json!({"name": "Us", "description": "We protect", "integrationPortalUrl":
                        "https://portal.example", "vendorSupportPageUrl": "https://help.example"}),
            ),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        patched["data"]["integrationPortalUrl"],
        "https://portal.example"
    );
    let (_, got) = r.call(Method::GET, V, None).await;
    for (k, v) in [
        ("name", "Us"),
        ("description", "We protect"),
        ("integrationPortalUrl", "https://portal.example"),
        ("vendorSupportPageUrl", "https://help.example"),
    ] {
        assert_eq!(got["data"][k], v, "{k}");
    }
    let (st, _) = r.call(Method::PATCH, V, Some(json!({"name": 5}))).await;
    assert_eq!(st, 400);
    // The clients route answers {meta, clients}.
    let (st, clients) = r
        .call(
            Method::GET,
            &format!("{V}/organization/clients?search=&previousId="),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        clients["meta"].is_object() && clients["clients"].is_array(),
        "{clients}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_spec_integration_life_cycle() {
    use reqwest::Method;
    use serde_json::json;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    let r = Raw::new(&sim, "k").await;
    let (_, integ) = r
        .call(Method::GET, &format!("{V}/organization"), None)
        .await;
    assert_eq!(integ["lastSyncedAt"], "1900-01-01T00:00:00.000Z");
    assert_eq!(integ["status"], "inactive");
    let (_, vendor) = r
        .call(
            Method::POST,
            &format!("{V}/service"),
            Some(json!({"name": "S", "description": "d", "category": "backup", "subcategory": "cloud backup"})),
        )
        .await;
    let sid = vendor["skus"][0]["id"].as_str().unwrap().to_string();
    r.call(
        Method::POST,
        &format!("{V}/organization/accounts"),
        Some(json!([{"id": "a", "name": "A"}])),
    )
    .await;
    // A count does not turn an inactive integration active.
    let (st, _) = r
        .call(
            Method::POST,
            &format!("{V}/service/{sid}/count"),
            Some(json!({"accountId": "a", "unitCount": 3})),
        )
        .await;
    assert_eq!(st, 201);
    let (_, integ) = r
        .call(Method::GET, &format!("{V}/organization"), None)
        .await;
    assert_eq!(integ["status"], "inactive");
    assert_ne!(integ["lastSyncedAt"], "1900-01-01T00:00:00.000Z");
    // The status update answers `data` as a string (newer spec); a pending one turns active.
    let (st, upd) = r
        .call(
            Method::PATCH,
            &format!("{V}/organization/status/pending"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(upd["data"].is_string(), "{upd}");
    r.call(
        Method::POST,
        &format!("{V}/service/{sid}/count"),
        Some(json!({"accountId": "a", "unitCount": 4})),
    )
    .await;
    // A count leaves the status as it is; the vendor sets `active`.
    assert_eq!(sim.snapshot().org("o").unwrap().status_history, ["pending"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_for_an_unknown_msp_answer_404() {
    use reqwest::Method;
    use serde_json::json;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    let r = Raw::new(&sim, "k").await;
    for (method, path, body) in [
        (
            Method::POST,
            "/_sim/msp/nobody/rotate",
            Some(json!({"key": "x"})),
        ),
        (
            Method::POST,
            "/_sim/msp/nobody/reconnect",
            Some(json!({"key": "x"})),
        ),
        (Method::POST, "/_sim/msp/nobody/disconnect", None),
        (Method::PUT, "/_sim/msp/nobody/mapping", Some(json!("All"))),
    ] {
        let (st, _) = r.call(method, path, body).await;
        assert_eq!(st, 404, "{path}");
    }
    let (st, _) = r
        .call(
            Method::POST,
            "/_sim/msp/o/rotate",
            Some(json!({"key": "k2"})),
        )
        .await;
    assert_eq!(st, 204);
    // The rotation to an unknown MSP stole no key: "x" names nobody.
    let x = Raw::new(&sim, "x").await;
    let (st, _) = x
        .call(Method::GET, &format!("{V}/organization"), None)
        .await;
    assert_eq!(st, 401);
}

/// The stand-in answers what the public clients send (Gradient's SDK, CIPP, gradient-cli).
#[expect(
    clippy::too_many_lines,
    reason = "one client's calls in order, each checked against the stand-in's state"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_answers_the_public_clients_as_gradient_does() {
    use reqwest::Method;
    use serde_json::json;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    sim.set_mapping(
        "o",
        gradient_connector::sim::Mapping::Explicit {
            accounts: vec!["a".into()],
            service_ids: vec![],
        },
    );
    let r = Raw::new(&sim, "k").await;
    let accounts = format!("{V}/organization/accounts");
    // CIPP creates one account with a bare object; bulk creation takes an array.
    let (st, body) = r
        .call(
            Method::POST,
            &accounts,
            Some(json!({"id": "a", "name": "A"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = r
        .call(
            Method::POST,
            &accounts,
            Some(json!([{"id": "b", "name": "B"}])),
        )
        .await;
    assert_eq!(st, 201);
    // The account list's filters.
    let (_, only_b) = r
        .call(Method::GET, &format!("{accounts}?accountIds=b"), None)
        .await;
    assert_eq!(only_b.as_array().map(Vec::len), Some(1), "{only_b}");
    assert_eq!(only_b[0]["id"], "b");
    let (_, mapped) = r
        .call(
            Method::GET,
            &format!("{accounts}?returnUnmapped=false"),
            None,
        )
        .await;
    assert_eq!(mapped.as_array().map(Vec::len), Some(1), "{mapped}");
    assert_eq!(mapped[0]["id"], "a");
    let (_, all) = r.call(Method::GET, &accounts, None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    // Bulk PATCH of accounts; an unknown id changes nothing.
    let (st, body) = r
        .call(
            Method::PATCH,
            &accounts,
            Some(json!([{"id": "a", "name": "A2"}])),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body[0]["name"], "A2");
    let (st, _) = r
        .call(
            Method::PATCH,
            &accounts,
            Some(json!([{"id": "zz", "name": "Z"}])),
        )
        .await;
    assert_eq!(st, 404);
    // The SDK's vendor PATCH sends all four keys, null for those it leaves alone.
    let (st, body) = r
        .call(
            Method::PATCH,
            V,
            Some(
                json!({"name": null, "description": null, "vendorSupportPageUrl": null,
                        "integrationPortalUrl": "https://portal.example/x"}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        sim.snapshot().vendor.integration_portal_url.as_deref(),
        Some("https://portal.example/x")
    );
    // Organization-scoped services, and PATCH of a vendor service.
    let org_services = format!("{V}/organization/services");
    let (st, created) = r
        .call(
            Method::POST,
            &org_services,
            Some(json!({"name": "Org S", "isArrears": true})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (st, one) = r
        .call(
            Method::PATCH,
            &format!("{org_services}/{id}"),
            Some(json!({"isActive": false})),
        )
        .await;
    assert_eq!((st, &one["isActive"]), (200, &json!(false)), "{one}");
    let (st, many) = r
        .call(
            Method::PATCH,
            &org_services,
            Some(json!([{"id": id, "name": "Org S2"}])),
        )
        .await;
    assert_eq!((st, &many[0]["name"]), (200, &json!("Org S2")), "{many}");
    let (_, svc) = r
        .call(
            Method::POST,
            &format!("{V}/service"),
            Some(json!({"name": "S", "description": "d", "category": "backup", "subcategory": "cloud backup"})),
        )
        .await;
    let sid = svc["skus"][0]["id"].as_str().unwrap().to_string();
    let (st, patched) = r
        .call(
            Method::PATCH,
            &format!("{V}/service/{sid}"),
            Some(json!({"description": "d2"})),
        )
        .await;
    assert_eq!(
        (st, &patched["data"]["description"]),
        (200, &json!("d2")),
        "{patched}"
    );
    // Alerts and their debug route.
    let (st, alert) = r
        .call(
            Method::POST,
            &format!("{V}/alerting/a"),
            Some(json!({"title": "t", "description": "d", "alertId": "x", "priority": 1, "status": 1})),
        )
        .await;
    assert_eq!(st, 201);
    let message = alert["messageId"].as_str().unwrap().to_string();
    let (st, debug) = r
        .call(Method::GET, &format!("{V}/alerting/debug/{message}"), None)
        .await;
    assert_eq!(st, 200, "{debug}");
    // no_build as the SDK writes it (True) and as gradient-cli does (true); the deprecated
    // clientOId alone still names the account.
    sim.set_mapping("o", gradient_connector::sim::Mapping::All);
    for flag in ["True", "true"] {
        let (st, _) = r
            .call(
                Method::POST,
                &format!("{V}/service/{sid}/count?no_build={flag}"),
                Some(json!({"accountId": "a", "unitCount": 1})),
            )
            .await;
        assert_eq!(st, 201);
    }
    let (st, _) = r
        .call(
            Method::POST,
            &format!("{V}/service/{sid}/count"),
            Some(json!({"clientOId": "b", "unitCount": 3})),
        )
        .await;
    assert_eq!(st, 201);
    let snap = sim.snapshot();
    assert!(snap.pushes[0].no_build && snap.pushes[1].no_build);
    assert_eq!(snap.org("o").unwrap().count("b", &sid), Some(3.0));
}

/// The rate window counts a request at its arrival, whatever its latency: 20 requests that arrive
/// at 0 s and 20 more at 1.2 s are all within a limit of 20/s, even though slow answers to the
/// first and fast answers to the second leave the stand-in together at about 1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_requests_at_their_arrival() {
    use reqwest::Method;
    use std::time::Duration;
    let sim = gradient_connector::sim::Sim::start(Default::default())
        .await
        .unwrap();
    sim.add_msp("o", "O", "k");
    sim.set_rate_limit(20);
    let r = std::sync::Arc::new(Raw::new(&sim, "k").await);
    let burst = |r: std::sync::Arc<Raw>| {
        (0..20)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.call(Method::GET, V, None).await.0 })
            })
            .collect::<Vec<_>>()
    };
    sim.set_latency(Duration::from_millis(1500));
    let first = burst(r.clone());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.set_latency(Duration::from_millis(300));
    let second = burst(r.clone());
    let mut statuses = Vec::new();
    for h in first.into_iter().chain(second) {
        statuses.push(h.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // And at its arrival a 21st request in one second is refused.
    sim.set_latency(Duration::ZERO);
    let third = burst(r.clone());
    let (st, _) = r.call(Method::GET, V, None).await;
    for h in third {
        h.await.unwrap();
    }
    assert_eq!(st, 429);
}
