//! The CLI's way to a running daemon: HTTP/1.1 over the control API's unix socket. When the
//! daemon's socket answers, `sync` and `connector add`/`disconnect` go through it (the daemon runs
//! them, so the CLI never fights its run lock); otherwise the CLI does the work itself.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Why a call through the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket did not answer (no daemon).
    #[error("the daemon's control API at {path} does not answer: {reason}")]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        reason: String,
    },
    /// The exchange broke off or the answer was not JSON.
    #[error("the daemon's answer could not be read: {0}")]
    Protocol(String),
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

/// One request; returns the status and the JSON answer (Null when empty).
pub async fn call(
    socket: &Path,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ClientError> {
    let stream =
        tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| ClientError::Unreachable {
                path: socket.display().to_string(),
                reason: e.to_string(),
            })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = match body {
        Some(v) => {
            Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Protocol(e.to_string()))?)
        }
        None => Bytes::new(),
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "gradient-connector")
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?
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
