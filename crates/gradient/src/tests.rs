//! The client's unit tests: routes, classification, retries, pacing shared across reloads.

use super::*;
use crate::transport::*;
use reqwest::StatusCode;

#[test]
fn segments_are_encoded_and_dot_ids_refused() {
    assert_eq!(segment("ws-1").unwrap(), "ws-1");
    assert_eq!(segment("a/b c").unwrap(), "a%2Fb%20c");
    assert_eq!(segment("é").unwrap(), "%C3%A9");
    assert!(segment("..").is_err());
    assert!(segment("").is_err());
}

#[test]
fn a_404_is_unmapped_only_on_the_count_route() {
    let body = br#"{"statusCode":404,"message":"Vendor Profile Not Found"}"#;
    let e = classify(
        StatusCode::NOT_FOUND,
        body,
        &Method::GET,
        "/organization/accounts",
        On404::NotFound,
    );
    assert_eq!((e.kind, e.status), (ErrorKind::NotFound, Some(404)));
    let text = e.to_string();
    assert!(
        text.contains("GET /api/vendor-api/organization/accounts")
            && text.contains("Vendor Profile Not Found"),
        "{text}"
    );
    assert!(
        text.contains("base_url") && text.contains("vendor API key"),
        "{text}"
    );
    assert!(!e.kind.is_transient());
    let e = classify(
        StatusCode::NOT_FOUND,
        br#"{"statusCode":404,"message":"No account map found with id: 1"}"#,
        &Method::POST,
        "/service/s1/count?no_build=true",
        On404::NotMapped,
    );
    assert_eq!(e.kind, ErrorKind::NotMapped);
    assert_eq!(e.message, "No account map found with id: 1");
    let e = classify(
        StatusCode::CONFLICT,
        br#"{"message":"A resource with this Id already exists"}"#,
        &Method::POST,
        "/organization/accounts",
        On404::NotFound,
    );
    assert_eq!(e.kind, ErrorKind::Conflict);
}

#[test]
fn retry_after_seconds_and_dates() {
    assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
    assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
    assert_eq!(parse_retry_after("soon"), None);
}

#[test]
fn backoff_is_capped() {
    let s = ClientSettings {
        base_url: "http://127.0.0.1:1".parse().unwrap(),
        requests_per_second: 10,
        max_in_flight: 1,
        request_timeout: Duration::from_secs(1),
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_millis(250),
        max_list_body: answer::DEFAULT_LIST_BODY_LIMIT,
        max_body: answer::DEFAULT_BODY_LIMIT,
    };
    for attempt in 1..30 {
        assert!(backoff(&s, attempt) <= Duration::from_millis(250));
    }
}

#[test]
fn a_decode_error_keeps_the_decoders_error_as_its_source() {
    let a = Answer {
        value: serde_json::json!({"id": 5}),
        status: 200,
        attempts: 2,
    };
    let e = decode_with(a, serde_json::from_value::<Vec<String>>).unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::Decode, Some(200), 2)
    );
    let source = std::error::Error::source(&e).expect("a source");
    assert!(source.downcast_ref::<serde_json::Error>().is_some());
}

#[tokio::test]
async fn a_transport_error_keeps_reqwests_error_as_its_source() {
    // A port nothing listens on: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let e = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    let g = transport_error(e);
    assert_eq!(g.kind, ErrorKind::Network);
    let source = std::error::Error::source(&g).expect("a source");
    assert!(source.downcast_ref::<reqwest::Error>().is_some());
    assert!(g.message.contains("127.0.0.1"), "{}", g.message);
}

#[tokio::test]
async fn a_reloaded_client_shares_the_pacer_and_keeps_what_429s_taught_it() {
    let settings = ClientSettings {
        base_url: url::Url::parse("http://127.0.0.1:9/").unwrap(),
        requests_per_second: 100,
        max_in_flight: 8,
        request_timeout: Duration::from_secs(5),
        max_attempts: 1,
        retry_initial_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(100),
        max_list_body: 1 << 20,
        max_body: 1 << 16,
    };
    let first = GradientClient::new(settings.clone(), SecretString::from("k1")).unwrap();
    first.inner.pacer.throttled(None);
    let second = first
        .reconfigured(settings, SecretString::from("k2"))
        .unwrap();
    assert!(second.shares_pacer_with(&first));
    assert!(second.is_slowed(), "the reload forgot the 429");
    let fresh =
        GradientClient::new(first.inner.settings.clone(), SecretString::from("k1")).unwrap();
    assert!(!fresh.shares_pacer_with(&first));
}

#[test]
fn session_debug_hides_the_token() {
    let c = GradientClient::new(
        ClientSettings {
            base_url: "http://127.0.0.1:1".parse().unwrap(),
            requests_per_second: 10,
            max_in_flight: 1,
            request_timeout: Duration::from_secs(1),
            max_attempts: 1,
            retry_initial_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(1),
            max_list_body: answer::DEFAULT_LIST_BODY_LIMIT,
            max_body: answer::DEFAULT_BODY_LIMIT,
        },
        SecretString::from("vendor-secret".to_string()),
    )
    .unwrap();
    let s = c.partner(&SecretString::from("partner-secret".to_string()));
    let dbg = format!("{s:?} {c:?}");
    assert!(!dbg.contains("secret"), "{dbg}");
    let b64 = base64::engine::general_purpose::STANDARD.encode("vendor-secret:partner-secret");
    assert!(!dbg.contains(&b64));
}

#[tokio::test]
async fn a_count_withdrawn_as_it_leaves_sends_nothing() {
    struct Withdraw;
    impl BuildChoice for Withdraw {
        fn withdrawn(&self) -> bool {
            true
        }
        fn no_build(&self) -> bool {
            unreachable!("a withdrawn count is not sent")
        }
    }
    // A port nothing listens on: a request that went out would fail with a network error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = ClientSettings {
        base_url: url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        requests_per_second: 100,
        max_in_flight: 1,
        request_timeout: Duration::from_secs(5),
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(10),
        max_list_body: answer::DEFAULT_LIST_BODY_LIMIT,
        max_body: answer::DEFAULT_BODY_LIMIT,
    };
    let client = GradientClient::new(settings, SecretString::from("k")).unwrap();
    let session = client.partner(&SecretString::from("p"));
    let e = session
        .set_unit_count("s1", "a1", 3u64, Withdraw)
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.attempts),
        (ErrorKind::Withdrawn, None, 0)
    );
    // The plain choice goes out (and here meets the closed port).
    let e = session
        .set_unit_count("s1", "a1", 3u64, true)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Network);
}
