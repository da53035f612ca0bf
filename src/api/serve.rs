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
use super::{ApiError, ApiState, ListenProblem, SetupProblem};
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
    let text = keyfile::read_key_file(&path, keyfile::KEY_FILE_MAX_BYTES).map_err(|e| {
        ApiError::Setup {
            what: "token file (api.token_file)",
            why: e.into(),
        }
    })?;
    let t = text.expose_secret().trim();
    if t.len() < 16 || t.chars().any(char::is_whitespace) {
        return Err(ApiError::Setup {
            what: "token file (api.token_file)",
            why: SetupProblem::WeakToken(path),
        });
    }
    Ok(SecretString::from(t.to_string()))
}

/// Binds the configured address. `Ok(None)`: the API is off.
pub async fn bind(cfg: &ApiConfig) -> Result<Option<Bound>, ApiError> {
    let listen_err = |why: ListenProblem| ApiError::Listen {
        address: cfg.listen.to_string(),
        why,
    };
    match &cfg.listen {
        ApiListen::Off => Ok(None),
        ApiListen::Unix(path) => {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|source| {
                        listen_err(ListenProblem::CreateDir {
                            dir: dir.to_path_buf(),
                            source,
                        })
                    })?;
                }
            }
            if path.exists() {
                // A daemon answering there holds it; a dead socket file is replaced.
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(listen_err(ListenProblem::Taken));
                }
                std::fs::remove_file(path)
                    .map_err(|e| listen_err(ListenProblem::StaleSocket(e)))?;
            }
            let l = UnixListener::bind(path).map_err(|e| listen_err(ListenProblem::Bind(e)))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
                .map_err(|e| listen_err(ListenProblem::Mode(e)))?;
            Ok(Some(Bound::Unix(l, path.clone())))
        }
        ApiListen::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| listen_err(ListenProblem::Bind(e)))?;
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
    let setup = |what, why: SetupProblem| ApiError::Setup { what, why };
    use secrecy::ExposeSecret;
    let read = |p: &Path| {
        keyfile::read_key_file(p, keyfile::KEY_FILE_MAX_BYTES).map_err(SetupProblem::File)
    };
    let cert_pem = read(cert).map_err(|r| setup("certificate (api.tls_cert_file)", r))?;
    let cert_pem = cert_pem.expose_secret();
    let key_pem = read(key).map_err(|r| setup("private key (api.tls_key_file)", r))?;
    let key_pem = key_pem.expose_secret();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| setup("certificate (api.tls_cert_file)", SetupProblem::Pem(e)))?;
    if certs.is_empty() {
        return Err(setup(
            "certificate (api.tls_cert_file)",
            SetupProblem::NoCertificate,
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            setup("private key (api.tls_key_file)", SetupProblem::NoKey)
        }
        other => setup("private key (api.tls_key_file)", SetupProblem::Pem(other)),
    })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| setup("certificate and key", SetupProblem::Tls(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn api(dir: &Path, listen: ApiListen) -> ApiConfig {
        ApiConfig {
            listen,
            listen_is_default: false,
            socket_mode: 0o660,
            token_file: dir.join("api-token"),
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 4,
            max_inventory_bytes: 1024,
        }
    }

    fn secret_file(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[tokio::test]
    async fn each_setup_failure_is_its_own_problem_and_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let cfg = api(dir.path(), ApiListen::Unix(socket.clone()));
        let _held = bind(&cfg).await.unwrap();
        let taken = bind(&cfg).await.err().unwrap();
        assert!(
            matches!(
                taken,
                ApiError::Listen {
                    why: ListenProblem::Taken,
                    ..
                }
            ),
            "{taken:?}"
        );

        secret_file(&cfg.token_file, "short-Zq8\n");
        let weak = load_token(&cfg).unwrap_err();
        assert!(
            matches!(
                weak,
                ApiError::Setup {
                    why: SetupProblem::WeakToken(_),
                    ..
                }
            ),
            "{weak:?}"
        );
        assert!(!weak.to_string().contains("short-Zq8"), "{weak}");

        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        secret_file(&cert, "not pem at all\n");
        secret_file(
            &key,
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        );
        let no_cert = check_tls(&cert, &key).unwrap_err();
        assert!(
            matches!(
                no_cert,
                ApiError::Setup {
                    why: SetupProblem::NoCertificate,
                    ..
                }
            ),
            "{no_cert:?}"
        );
        let missing = check_tls(&dir.path().join("absent.pem"), &key).unwrap_err();
        assert!(
            matches!(
                missing,
                ApiError::Setup {
                    why: SetupProblem::File(_),
                    ..
                }
            ),
            "{missing:?}"
        );
        assert!(std::error::Error::source(&missing).is_some());
    }
}
