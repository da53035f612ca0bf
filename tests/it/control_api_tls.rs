//! The control API over TLS (rustls), with a certificate made at test time: the real binary
//! serves HTTPS with the configured certificate and key, every route but the health checks
//! needs the bearer token, a client that does not trust the certificate gets no answer, and
//! plain HTTP on the TLS port gets no HTTP answer at all.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const API_TOKEN: &str = "api-tok-T7sLq2Vx9kWm4RpZ";

/// One HTTPS request (HTTP/1.1, `Connection: close`) trusting only `ca_pem`: (status, body), or
/// the TLS error.
fn https(
    port: u16,
    ca_pem: &str,
    method: &str,
    target: &str,
    auth: Option<&str>,
) -> Result<(u16, String), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server may close without close_notify after answering.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn over_tls_the_api_answers_with_the_configured_certificate_and_still_needs_the_token() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let port = free_port();
    let e = SimEnv::with_config(|c| {
        c.set("schedule", "catch_up", false)
            .set("log", "level", "debug")
            .set("api", "listen", format!("127.0.0.1:{port}"))
            .set("api", "token_file", "api-token")
            .set("api", "tls_cert_file", "api-cert.pem")
            .set("api", "tls_key_file", "api-key.pem")
    });
    e.env.write("api-cert.pem", &cert_pem);
    let key = e
        .env
        .write("api-key.pem", &certified.signing_key.serialize_pem());
    let token = e.env.write("api-token", &format!("{API_TOKEN}\n"));
    for f in [&key, &token] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = e.run(&["check-config"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let d = Daemon::start(&e, &[]);

    // Health over HTTPS without a token; the rest only with it.
    assert_eq!(
        https(port, &cert_pem, "GET", "/healthz", None),
        Ok((200, r#"{"status":"ok"}"#.to_string()))
    );
    let (status, body) = https(port, &cert_pem, "GET", "/v1/status", None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    let (status, body) = https(
        port,
        &cert_pem,
        "GET",
        "/v1/status",
        Some("not-the-api-token"),
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = https(port, &cert_pem, "GET", "/v1/status", Some(API_TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    let status_json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["connectors"], serde_json::json!([]), "{body}");

    // A client that does not trust this certificate gets no answer.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let refused = https(port, &other.cert.pem(), "GET", "/healthz", None);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("certificate")),
        "an untrusted certificate must fail the handshake: {refused:?}"
    );

    // Plain HTTP on the TLS port: no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"),
        "plain HTTP must not be served: {raw:?}"
    );

    // The daemon still answers over TLS after the plain attempt, and stops cleanly.
    assert_eq!(
        https(port, &cert_pem, "GET", "/healthz", None).map(|r| r.0),
        Ok(200)
    );
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let log = daemon_logs_of(&e);
    assert!(!log.contains(API_TOKEN), "the token is never logged");
}
