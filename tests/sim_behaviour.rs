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
