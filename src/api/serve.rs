//! Where the API listens: a unix socket (a stale file left by a crash is replaced; one another
//! daemon answers on is not), or TCP with a bearer token, wrapped in TLS (rustls) when the address
//! is not loopback. Serving stops when `stop` is cancelled.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::connections::Limits;
use super::{ApiError, ApiState};
use crate::config::{keyfile, ApiConfig, ApiListen};

/// The systemd credential that holds the API token.
pub const TOKEN_CREDENTIAL: &str = "api-token";

/// A bound listener, ready to serve.
pub enum Bound {
    /// A unix socket (removed when serving stops).
    Unix(UnixListener, PathBuf),
    /// Plain TCP (loopback).
    Tcp(TcpListener),
    /// TLS over TCP.
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
}

/// Reads the API token: the systemd credential `api-token` when present, else `token_file` (by the
/// one key-file reader: a regular file of at most 64 KiB).
pub fn load_token(cfg: &ApiConfig) -> Result<SecretString, ApiError> {
    use secrecy::ExposeSecret;
    let path = keyfile::credential_or(TOKEN_CREDENTIAL, &cfg.token_file);
    let text = keyfile::read_key_file(&path, keyfile::KEY_FILE_MAX_BYTES).map_err(|reason| {
        ApiError::Setup {
            what: "token file (api.token_file)",
            reason: reason.to_string(),
        }
    })?;
    let t = text.expose_secret().trim();
    if t.len() < 16 || t.chars().any(char::is_whitespace) {
        return Err(ApiError::Setup {
            what: "token file (api.token_file)",
            reason: format!(
                "{} must hold one token of at least 16 characters, on one line",
                path.display()
            ),
        });
    }
    Ok(SecretString::from(t.to_string()))
}

/// Binds the configured address. `Ok(None)`: the API is off.
pub async fn bind(cfg: &ApiConfig) -> Result<Option<Bound>, ApiError> {
    let listen_err = |reason: String| ApiError::Listen {
        address: cfg.listen.to_string(),
        reason,
    };
    match &cfg.listen {
        ApiListen::Off => Ok(None),
        ApiListen::Unix(path) => {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| listen_err(format!("cannot create {}: {e}", dir.display())))?;
                }
            }
            if path.exists() {
                // A daemon answering there holds it; a dead socket file is replaced.
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(listen_err("another daemon answers on this socket".into()));
                }
                std::fs::remove_file(path)
                    .map_err(|e| listen_err(format!("cannot replace the stale socket: {e}")))?;
            }
            let l = UnixListener::bind(path).map_err(|e| listen_err(e.to_string()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
                .map_err(|e| listen_err(format!("cannot set the socket's mode: {e}")))?;
            Ok(Some(Bound::Unix(l, path.clone())))
        }
        ApiListen::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| listen_err(e.to_string()))?;
            match (&cfg.tls_cert_file, &cfg.tls_key_file) {
                (Some(cert), Some(key)) => Ok(Some(Bound::Tls(l, tls_acceptor(cert, key)?))),
                _ => Ok(Some(Bound::Tcp(l))),
            }
        }
    }
}

/// Whether the certificate and key load (for `check-config`).
pub fn check_tls(cert: &Path, key: &Path) -> Result<(), ApiError> {
    tls_acceptor(cert, key).map(|_| ())
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ApiError> {
    let setup = |what, reason: String| ApiError::Setup { what, reason };
    use secrecy::ExposeSecret;
    let read = |p: &Path| {
        keyfile::read_key_file(p, keyfile::KEY_FILE_MAX_BYTES).map_err(|e| e.to_string())
    };
    let cert_pem = read(cert).map_err(|r| setup("certificate (api.tls_cert_file)", r))?;
    let cert_pem = cert_pem.expose_secret();
    let key_pem = read(key).map_err(|r| setup("private key (api.tls_key_file)", r))?;
    let key_pem = key_pem.expose_secret();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| setup("certificate (api.tls_cert_file)", e.to_string()))?;
    if certs.is_empty() {
        return Err(setup(
            "certificate (api.tls_cert_file)",
            "no PEM certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => setup(
            "private key (api.tls_key_file)",
            "no PEM private key in the file".into(),
        ),
        other => setup("private key (api.tls_key_file)", other.to_string()),
    })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| setup("certificate and key", e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `stop`. Over TCP every route but the health checks needs the bearer token. Every
/// listener holds up against hostile clients the same way ([`super::connections`]).
pub async fn serve(bound: Bound, state: ApiState, limits: Limits, stop: CancellationToken) {
    use super::connections::{serve as serve_connections, Listener};
    match bound {
        Bound::Unix(l, path) => {
            let app = super::routes::router(state, false, false);
            serve_connections(Listener::Unix(l), app, limits, stop).await;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::debug!(error = %e, "the control API's socket file could not be removed");
            }
        }
        Bound::Tcp(l) => {
            let app = super::routes::router(state, true, false);
            serve_connections(Listener::Tcp(l, None), app, limits, stop).await;
        }
        Bound::Tls(l, acceptor) => {
            let app = super::routes::router(state, true, true);
            serve_connections(Listener::Tcp(l, Some(acceptor)), app, limits, stop).await;
        }
    }
}

/// The hostile-client limits of a configuration.
pub fn limits(cfg: &ApiConfig) -> Limits {
    Limits {
        max_connections: cfg.max_connections,
        head: super::connections::HEAD_TIMEOUT,
        idle: super::connections::IDLE_TIMEOUT,
    }
}
