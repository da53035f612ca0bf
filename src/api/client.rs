//! The CLI's way to a running daemon: HTTP/1.1 over the control API's unix socket. When the
//! daemon's socket answers, `sync` and `connector add`/`disconnect` go through it (the daemon runs
//! them, so the CLI never fights its run lock); otherwise the CLI does the work itself.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Why a call through the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket did not answer (no daemon).
    #[error("the daemon's control API at {path} does not answer: {source}")]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The exchange broke off.
    #[error("the daemon's answer could not be read: {0}")]
    Exchange(#[source] reqwest::Error),
    /// The answer (or the request's body) was not JSON.
    #[error("the daemon's answer could not be read: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// Whether a daemon answers on `socket` (within 1 s).
pub async fn daemon_answers(socket: &Path) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(socket)
        )
        .await,
        Ok(Ok(_))
    )
}

/// One request; returns the status and the JSON answer (Null when empty). No time limit: a `sync`
/// that waits for its run waits as long as the run takes.
pub async fn call(
    socket: &Path,
    method: reqwest::Method,
    uri: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ClientError> {
    // Installing twice is harmless; reqwest needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .unix_socket(socket)
        .build()
        .map_err(ClientError::Exchange)?;
    let mut req = client
        .request(method, format!("http://gradient-connector{uri}"))
        .header("content-type", "application/json");
    if let Some(v) = body {
        req = req.body(serde_json::to_vec(v).map_err(ClientError::NotJson)?);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            ClientError::Unreachable {
                path: socket.display().to_string(),
                source: e,
            }
        } else {
            ClientError::Exchange(e)
        }
    })?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(ClientError::Exchange)?;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(ClientError::NotJson)?
    };
    Ok((status, value))
}

/// The `message` of an error answer.
pub fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or("the daemon refused the request")
        .to_string()
}

/// The `code` of an error answer.
pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}
