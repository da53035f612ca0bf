//! Contract tests: the Gradient client against the gradient-sim stand-in, route by route and error
//! class by error class, asserting what the stand-in received.

use std::time::Duration;

use gradient_connector::gradient::{
    profile_changes, AccountUpdate, ClientSettings, ErrorKind, GradientClient, IntegrationStatus,
    NewAccount, NewService, PartnerSession, VendorProfile,
};
use gradient_connector::sim::{Fault, Mapping, Sim, SimOptions};
use secrecy::SecretString;

const VENDOR: &str = "contract-vendor-key";
const PARTNER: &str = "contract-partner-key";

fn settings(base: &str) -> ClientSettings {
    ClientSettings {
        base_url: base.parse().unwrap(),
        requests_per_second: 1000,
        max_in_flight: 8,
        request_timeout: Duration::from_secs(5),
        max_attempts: 4,
        retry_initial_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(200),
        max_list_body: gradient_connector::gradient::answer::DEFAULT_LIST_BODY_LIMIT,
        max_body: gradient_connector::gradient::answer::DEFAULT_BODY_LIMIT,
    }
}

async fn sim() -> Sim {
    let sim = Sim::start(SimOptions {
        vendor_key: VENDOR.into(),
        rate_limit_per_token: 0,
        port: 0,
    })
    .await
    .unwrap();
    sim.add_msp("org-1", "Acme IT", PARTNER);
    sim
}

fn session(_sim: &Sim, s: ClientSettings) -> PartnerSession {
    let c = GradientClient::new(s, SecretString::from(VENDOR.to_string())).unwrap();
    c.partner(&SecretString::from(PARTNER.to_string()))
}

fn edr() -> NewService {
    NewService {
        name: "Endpoint Security".into(),
        description: "Protected devices".into(),
        category: "security".into(),
        subcategory: "endpoint detection and response (EDR)".into(),
        support_article: None,
        support_contact: None,
    }
}

fn assert_no_secret(text: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{VENDOR}:{PARTNER}"));
    for s in [VENDOR, PARTNER, b64.as_str()] {
        assert!(!text.contains(s), "secret leaked: {text}");
    }
}

/// Creates the EDR service and account `a`; returns the service's id.
async fn service_and_account(s: &PartnerSession) -> String {
    let sid = s.create_service(&edr()).await.unwrap().value.skus[0]
        .id
        .clone();
    s.create_accounts(&[NewAccount {
        id: "a".into(),
        name: "A".into(),
        description: None,
    }])
    .await
    .unwrap();
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_round_trips() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    assert_no_secret(&format!("{s:?}"));

    let integ = s.get_integration().await.unwrap();
    assert_eq!(integ.value.organization_id.as_deref(), Some("org-1"));
    assert_eq!(integ.value.status.as_deref(), Some("inactive"));
    s.set_integration_status(IntegrationStatus::Pending)
        .await
        .unwrap();

    let vendor = s.create_service(&edr()).await.unwrap();
    assert_eq!(vendor.status, 201);
    let sid = vendor.value.skus[0].id.clone();
    let v = s.get_vendor().await.unwrap().value;
    assert_eq!(v.skus.len(), 1);
    assert_eq!(v.skus[0].name, "Endpoint Security");

    let created = s
        .create_accounts(&[
            NewAccount {
                id: "a/1 é".into(),
                name: "Odd \"id\"".into(),
                description: None,
            },
            NewAccount {
                id: "2".into(),
                name: "Two".into(),
                description: Some("d".into()),
            },
        ])
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    s.update_account(
        "a/1 é",
        &AccountUpdate {
            name: Some("Renamed".into()),
            description: None,
        },
    )
    .await
    .unwrap();
    let accounts = s.get_accounts().await.unwrap().value;
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].id, "a/1 é");
    assert_eq!(accounts[0].name, "Renamed");
    assert_eq!(accounts[0].is_mapped, Some(true));

    s.set_unit_count(&sid, "2", 7, true).await.unwrap();
    s.set_unit_count(&sid, "a/1 é", 3, false).await.unwrap();
    let snap = sim.snapshot();
    let org = snap.org("org-1").unwrap();
    assert_eq!(org.count("2", &sid), Some(7.0));
    assert_eq!(org.count("a/1 é", &sid), Some(3.0));
    assert_eq!(org.rebuilds, 1);
    // A count never changes the status: only the vendor's PATCH does.
    assert_eq!(org.status_history, vec!["pending"]);
    assert!(snap.pushes[0].no_build && !snap.pushes[1].no_build);
    assert!(snap.pushes[0].unit_count.is_u64() && snap.pushes[0].account_id.is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_forbidden_not_mapped_and_invalid_are_not_retried() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    let sid = s.create_service(&edr()).await.unwrap().value.skus[0]
        .id
        .clone();
    s.create_accounts(&[NewAccount {
        id: "x".into(),
        name: "X".into(),
        description: None,
    }])
    .await
    .unwrap();

    // 404: the MSP mapped nothing of ours.
    sim.set_mapping(
        "org-1",
        Mapping::Explicit {
            accounts: vec![],
            service_ids: vec![],
        },
    );
    let n = sim.snapshot().requests.len();
    let e = s.set_unit_count(&sid, "x", 1, false).await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::NotMapped, Some(404), 1)
    );
    assert!(e.message.contains("No account map found"), "{e}");
    assert_eq!(sim.snapshot().requests.len(), n + 1);

    // 400 with Gradient's message.
    let mut bad = edr();
    bad.category = "Security".into();
    let e = s.create_service(&bad).await.unwrap_err();
    assert_eq!((e.kind, e.attempts), (ErrorKind::Invalid, 1));
    assert!(e.to_string().contains("category must be one of"), "{e}");

    // 403: anomaly.
    sim.add_fault(Fault {
        method: None,
        path_prefix: None,
        status: 403,
        count: 1,
        retry_after_secs: None,
    });
    let n = sim.snapshot().requests.len();
    let e = s.get_vendor().await.unwrap_err();
    assert_eq!((e.kind, e.attempts), (ErrorKind::Forbidden, 1));
    assert!(e.to_string().contains("anomaly"));
    assert_eq!(sim.snapshot().requests.len(), n + 1);

    // 401: the MSP generated a new key.
    sim.rotate_key("org-1", "newer");
    let n = sim.snapshot().requests.len();
    let e = s.get_accounts().await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::Unauthorized, Some(401), 1)
    );
    assert!(e.to_string().contains("connector add"), "{e}");
    assert_eq!(sim.snapshot().requests.len(), n + 1);
    for text in [e.to_string(), format!("{e:?}")] {
        assert_no_secret(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_success_or_exhaustion() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    sim.add_fault(Fault {
        method: Some("GET".into()),
        path_prefix: None,
        status: 503,
        count: 2,
        retry_after_secs: None,
    });
    let a = s.get_vendor().await.unwrap();
    assert_eq!(a.attempts, 3);
    assert_eq!(sim.snapshot().requests.len(), 3);

    sim.add_fault(Fault {
        method: None,
        path_prefix: None,
        status: 429,
        count: 2,
        retry_after_secs: None,
    });
    let a = s.get_integration().await.unwrap();
    assert_eq!(a.attempts, 3);

    sim.add_fault(Fault {
        method: None,
        path_prefix: None,
        status: 502,
        count: 10,
        retry_after_secs: None,
    });
    let e = s.get_vendor().await.unwrap_err();
    assert_eq!(
        (e.kind, e.attempts, e.status),
        (ErrorKind::Server, 4, Some(502))
    );
    for text in [e.to_string(), format!("{e:?}")] {
        assert_no_secret(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let sim = sim().await;
    let mut st = settings(&sim.base_url());
    st.retry_max_delay = Duration::from_secs(5);
    let s = session(&sim, st);
    sim.add_fault(Fault {
        method: None,
        path_prefix: None,
        status: 429,
        count: 1,
        retry_after_secs: Some(1),
    });
    s.get_vendor().await.unwrap();
    let r = sim.snapshot().requests;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, 429);
    assert!(
        r[1].at_ms - r[0].at_ms >= 900,
        "retried after {} ms",
        r[1].at_ms - r[0].at_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_errors_and_timeouts_are_classified() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let c = GradientClient::new(
        settings(&format!("http://127.0.0.1:{port}")),
        SecretString::from(VENDOR.to_string()),
    )
    .unwrap();
    let e = c
        .partner(&SecretString::from(PARTNER.to_string()))
        .get_vendor()
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.attempts), (ErrorKind::Network, 4));
    assert_no_secret(&format!("{e} {e:?}"));

    let sim = sim().await;
    sim.set_latency(Duration::from_millis(1500));
    let mut st = settings(&sim.base_url());
    st.request_timeout = Duration::from_millis(300);
    st.max_attempts = 2;
    let e = session(&sim, st).get_vendor().await.unwrap_err();
    assert_eq!((e.kind, e.attempts), (ErrorKind::Timeout, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_keeps_below_the_stand_ins_rate() {
    let sim = sim().await;
    sim.set_rate_limit(60);
    let mut st = settings(&sim.base_url());
    st.requests_per_second = 50;
    let s = session(&sim, st);
    let sid = service_and_account(&s).await;
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..500u64)
        .map(|i| {
            let s = s.clone();
            let sid = sid.clone();
            async move { s.set_unit_count(&sid, "a", i, true).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let snap = sim.snapshot();
    assert_eq!(snap.requests.iter().filter(|r| r.status == 429).count(), 0);
    let peak = snap.max_requests_per_second();
    assert!(peak <= 55, "a one-second window held {peak} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_does_not_release_a_burst_above_the_rate() {
    // Callers queued behind the in-flight bound must not bank rate slots while Gradient stalls.
    let sim = sim().await;
    sim.set_rate_limit(0);
    let mut st = settings(&sim.base_url());
    st.requests_per_second = 50;
    st.max_in_flight = 8;
    let s = session(&sim, st);
    sim.set_latency(Duration::from_millis(2000));
    let sim_ref = &sim;
    use futures::StreamExt;
    let pushes = futures::stream::iter(0..120u32)
        .map(|_| {
            let s = s.clone();
            async move { s.get_integration().await }
        })
        .buffer_unordered(120)
        .collect::<Vec<_>>();
    let recover = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim_ref.set_latency(Duration::ZERO);
    };
    let (results, ()) = tokio::join!(pushes, recover);
    assert!(results.iter().all(|r| r.is_ok()));
    let peak = sim.snapshot().max_requests_per_second();
    assert!(
        peak <= 55,
        "after the stall a one-second window held {peak} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_so_the_token_never_travels_elsewhere() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Where a redirect would lead: it must never see a request.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = elsewhere.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        if elsewhere.accept().await.is_ok() {
            seen2.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // "Gradient" answers every request with a redirect.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = server.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{target}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    let c = GradientClient::new(settings(&base), SecretString::from(VENDOR.to_string())).unwrap();
    let e = c
        .partner(&SecretString::from(PARTNER.to_string()))
        .get_vendor()
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Invalid, Some(302)));
    assert!(
        !seen.load(std::sync::atomic::Ordering::SeqCst),
        "the redirect was followed"
    );
    assert_no_secret(&format!("{e} {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_service_is_not_repeated_when_it_may_have_happened() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    // A 5xx may come after Gradient created it: no second POST (it would be a duplicate).
    sim.add_fault(Fault {
        method: Some("POST".into()),
        path_prefix: Some("/api/vendor-api/service".into()),
        status: 503,
        count: 1,
        retry_after_secs: None,
    });
    let e = s.create_service(&edr()).await.unwrap_err();
    assert_eq!((e.kind, e.attempts), (ErrorKind::Server, 1));
    assert_eq!(sim.snapshot().requests.len(), 1);
    // A 429 is refused before any work: repeated.
    sim.add_fault(Fault {
        method: Some("POST".into()),
        path_prefix: Some("/api/vendor-api/service".into()),
        status: 429,
        count: 1,
        retry_after_secs: None,
    });
    let a = s.create_service(&edr()).await.unwrap();
    assert_eq!(a.attempts, 2);
    assert_eq!(sim.snapshot().services.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_off_the_count_route_is_not_found_and_names_the_route() {
    let sim = sim().await;
    // A wrong base URL: every route is missing.
    let wrong = session(&sim, settings(&format!("{}/wrong", sim.base_url())));
    let e = wrong.get_vendor().await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::NotFound, Some(404), 1)
    );
    let text = e.to_string();
    assert!(text.contains("GET /api/vendor-api "), "{text}");
    assert!(
        text.contains("base_url") && text.contains("vendor API key"),
        "{text}"
    );
    assert_no_secret(&format!("{e} {e:?}"));

    // Gradient's "Vendor Profile Not Found" on the accounts route.
    let s = session(&sim, settings(&sim.base_url()));
    sim.add_fault(Fault {
        method: Some("GET".into()),
        path_prefix: Some("/api/vendor-api/organization/accounts".into()),
        status: 404,
        count: 1,
        retry_after_secs: None,
    });
    let e = s.get_accounts().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .contains("GET /api/vendor-api/organization/accounts"),
        "{e}"
    );

    // On the count route the same status is "not mapped".
    let sid = s.create_service(&edr()).await.unwrap().value.skus[0]
        .id
        .clone();
    sim.add_fault(Fault {
        method: Some("POST".into()),
        path_prefix: Some(format!("/api/vendor-api/service/{sid}/count")),
        status: 404,
        count: 1,
        retry_after_secs: None,
    });
    let e = s.set_unit_count(&sid, "nobody", 1, true).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::NotMapped, Some(404)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_status_last_synced_and_the_status_answer() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    // Never synced: Gradient's 1900 sentinel reads as None.
    let i = s.get_integration().await.unwrap().value;
    assert_eq!(i.last_synced_at, None);
    // The newer spec answers the status update with a string `data`: still a success.
    let a = s
        .set_integration_status(IntegrationStatus::Pending)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let sid = service_and_account(&s).await;
    let before = gradient_connector::time::now_ms();
    s.set_unit_count(&sid, "a", 2, false).await.unwrap();
    let i = s.get_integration().await.unwrap().value;
    let synced = i.last_synced_at.expect("synced after a count");
    assert!(synced >= before - 1000, "{synced} < {before}");
    assert_eq!(
        i.status.as_deref(),
        Some("pending"),
        "a count does not activate"
    );
    s.set_integration_status(IntegrationStatus::Active)
        .await
        .unwrap();
    let i = s.get_integration().await.unwrap().value;
    assert_eq!(i.status.as_deref(), Some("active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_profile_is_patched_with_only_what_differs() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    let wanted = VendorProfile {
        integration_portal_url: Some("https://portal.example/connect".into()),
        vendor_support_page_url: Some("https://help.example/".into()),
        ..VendorProfile::default()
    };
    let current = s.get_vendor().await.unwrap().value;
    let changes = profile_changes(&current, &wanted);
    assert_eq!(changes, wanted);
    s.update_vendor_profile(&changes).await.unwrap();
    let snap = sim.snapshot();
    let patch = snap.requests.last().unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.body,
        Some(serde_json::json!({
            "integrationPortalUrl": "https://portal.example/connect",
            "vendorSupportPageUrl": "https://help.example/"
        }))
    );
    assert_eq!(snap.vendor.name, "Sim Vendor", "unset fields are not sent");
    let now = s.get_vendor().await.unwrap().value;
    assert_eq!(
        now.integration_portal_url.as_deref(),
        Some("https://portal.example/connect")
    );
    assert!(profile_changes(&now, &wanted).is_empty());
    s.update_vendor_profile(&VendorProfile {
        name: Some("Renamed Vendor".into()),
        description: Some("What we do".into()),
        ..VendorProfile::default()
    })
    .await
    .unwrap();
    let v = sim.snapshot().vendor;
    assert_eq!(
        (v.name.as_str(), v.description.as_str()),
        ("Renamed Vendor", "What we do")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_accounts_are_never_sent_in_one_request() {
    let sim = sim().await;
    let s = session(&sim, settings(&sim.base_url()));
    let many: Vec<NewAccount> = (0..101)
        .map(|i| NewAccount {
            id: format!("w{i}"),
            name: format!("W{i}"),
            description: None,
        })
        .collect();
    let e = s.create_accounts(&many).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(sim.snapshot().requests.is_empty());
    s.create_accounts(&many[..100]).await.unwrap();
    // One id that exists refuses the whole request with 409.
    let e = s.create_accounts(&many[99..]).await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::Conflict, Some(409), 1)
    );
    assert_eq!(sim.snapshot().org("org-1").unwrap().accounts.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_settings_at_150_ms_latency_never_exceed_the_rate() {
    // Little's law: at 150 ms a 100/s rate needs ~15 requests in flight, so the default in-flight
    // bound is 64. Here: with the configured defaults (90/s, a tenth under Gradient's documented
    // 100/s, which the stand-in enforces at each request's arrival) and that much concurrency, the
    // stand-in never answers 429. The achieved rate is a figure of the benchmark, not of a timed
    // test.
    let sim = sim().await;
    sim.set_rate_limit(100);
    let toml = format!(
        "[gradient]\nbase_url = \"{}\"\n[[service]]\nmodule = \"m\"\nname = \"M\"\nunit = \"users\"\ncategory = \"other\"\nsubcategory = \"other\"\n",
        sim.base_url()
    );
    let cfg = gradient_connector::config::Config::from_toml(
        &toml,
        std::path::Path::new("/nonexistent/c.toml"),
        Default::default(),
    )
    .unwrap();
    let st = cfg.gradient.client.clone();
    let parallel = st.max_in_flight;
    let s = session(&sim, st);
    let sid = service_and_account(&s).await;
    let latency = Duration::from_millis(150);
    sim.set_latency(latency);
    // Leave the stand-in's one-second window behind the set-up calls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    const N: u64 = 300;
    use futures::StreamExt;
    // As a run pushes: at most max_in_flight calls at once, all through the pacer.
    let results: Vec<_> = futures::stream::iter(0..N)
        .map(|i| {
            let s = s.clone();
            let sid = sid.clone();
            async move { s.set_unit_count(&sid, "a", i, true).await }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let snap = sim.snapshot();
    let throttled = snap.requests.iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 0, "the stand-in answered 429");
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(
        parallel >= 50,
        "the default bound never caps 100/s below 500 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_401_the_session_sends_nothing_more() {
    // Many calls wait in the pacer (64 may be in flight by default); once the token is rejected,
    // only what is already on the wire may see 401.
    let sim = sim().await;
    let mut st = settings(&sim.base_url());
    st.requests_per_second = 20;
    st.max_in_flight = 64;
    let s = session(&sim, st);
    sim.rotate_key("org-1", "newer");
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..30)
        .map(|_| {
            let s = s.clone();
            async move { s.get_integration().await }
        })
        .buffer_unordered(30)
        .collect()
        .await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap_err().kind == ErrorKind::Unauthorized));
    let sent = sim.snapshot().requests.len();
    assert!(sent <= 2, "{sent} requests were sent with a rejected token");
    assert_no_secret(&format!("{:?}", results[29]));
}
