//! `POST /v1/inventory`: the body streamed into the import, as `gradient-connector import` streams a
//! file — memory does not grow with the body. The import runs on the store's one writer, in one
//! transaction; one import at a time (another gets 409 `import_running`); a body larger than
//! `api.max_inventory_mib` gets 413 and nothing is applied; a body that stops arriving for
//! [`CHUNK_DEADLINE`] is abandoned (408), nothing applied.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::routes::{ok, Answer, ApiFailure};
use super::ApiState;
use crate::store::import::{ImportError, ImportSummary, SnapshotRules};

/// Longest wait for the next piece of an inventory body.
pub const CHUNK_DEADLINE: Duration = Duration::from_secs(30);
/// Pieces of the body waiting for the import (bounds the memory of a fast client).
const PIECES_IN_FLIGHT: usize = 16;
/// How the import reads: in blocks of this size.
const READ_BUFFER: usize = 256 * 1024;

/// Why the body stopped, when it did not simply end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Cut {
    None = 0,
    TooLarge = 1,
    Stalled = 2,
    Broken = 3,
}

/// Imports inventory records (JSON Lines, as `import`; with `snapshot=true` as `import
/// --snapshot`), streamed: one transaction, every bad line listed, nothing applied on any.
#[utoipa::path(post, path = "/v1/inventory", tag = "inventory",
    params(
        ("snapshot" = Option<bool>, Query, description = "the body states the whole state of every channel it names"),
        ("allow_shrink" = Option<bool>, Query, description = "accept a snapshot over `inventory.max_snapshot_shrink_percent`"),
    ),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSON Lines inventory records"),
    responses(
        (status = 200, description = "applied", body = super::openapi::InventoryAnswer),
        (status = 400, description = "`bad_request`, `bad_import`", body = super::openapi::ErrorAnswer),
        (status = 408, description = "`body_timeout`", body = super::openapi::ErrorAnswer),
        (status = 409, description = "`import_running`", body = super::openapi::ErrorAnswer),
        (status = 413, description = "`inventory_too_large`", body = super::openapi::ErrorAnswer),
        (status = 422, description = "`bad_import` (with `lines`), `snapshot_shrink` (with `channels`)", body = super::openapi::ErrorAnswer),
    ))]
pub async fn post(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (snapshot, allow_shrink) = options(query.as_deref())?;
    let Ok(_only_one) = state.imports.clone().try_lock_owned() else {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "import_running",
            "another inventory import is running; send this one when it has finished",
        ));
    };
    let ctx = state.ctx();
    let cap = ctx.config.api.max_inventory_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large(cap));
    }
    let (pieces, from_body) = mpsc::channel::<io::Result<Bytes>>(PIECES_IN_FLIGHT);
    let cut = Arc::new(AtomicU8::new(Cut::None as u8));
    let forwarding = tokio::spawn(forward(body, pieces, cap, cut.clone()));
    let config = ctx.config.clone();
    let rules = snapshot.then_some(SnapshotRules {
        max_shrink_percent: config.inventory.max_snapshot_shrink_percent,
        allow_shrink,
    });
    let imported = ctx
        .store
        .write(move |s| {
            let input = BufReader::with_capacity(READ_BUFFER, BodyReader::new(from_body));
            let now = crate::time::now_ms();
            let result = match rules {
                Some(rules) => crate::store::import::import_snapshot(s, input, now, rules),
                None => crate::store::import::import(s, input, now),
            };
            Ok(match result {
                Ok(mut summary) => {
                    summary.unreported = s.unreported_modules(&config.service_modules())?;
                    Ok(summary)
                }
                Err(e) => Err(e),
            })
        })
        .await;
    forwarding.abort();
    let cut = match cut.load(Ordering::Relaxed) {
        1 => Cut::TooLarge,
        2 => Cut::Stalled,
        3 => Cut::Broken,
        _ => Cut::None,
    };
    match (imported?, cut) {
        (Ok(summary), _) => ok(answer(&summary)),
        (Err(_), Cut::TooLarge) => Err(too_large(cap)),
        (Err(_), Cut::Stalled) => Err(ApiFailure::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body stopped arriving for {} s; nothing was applied — send it again",
                CHUNK_DEADLINE.as_secs()
            ),
        )),
        (Err(e), _) => Err(import_failure(e)),
    }
}

/// `snapshot` and `allow_shrink` from the query (`true` or `false` each; nothing else).
fn options(query: Option<&str>) -> Result<(bool, bool), ApiFailure> {
    let (mut snapshot, mut allow_shrink) = (false, false);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let flag = match v.as_ref() {
            "true" => true,
            "false" => false,
            _ => return Err(bad_query(&format!("{k} must be true or false"))),
        };
        match k.as_ref() {
            "snapshot" => snapshot = flag,
            "allow_shrink" => allow_shrink = flag,
            other => {
                return Err(bad_query(&format!(
                    "unknown parameter {other:?}; known: snapshot, allow_shrink"
                )))
            }
        }
    }
    if allow_shrink && !snapshot {
        return Err(bad_query("allow_shrink applies only with snapshot=true"));
    }
    Ok((snapshot, allow_shrink))
}

fn bad_query(message: &str) -> ApiFailure {
    ApiFailure::new(StatusCode::BAD_REQUEST, "bad_request", message.to_string())
}

fn answer(summary: &ImportSummary) -> Value {
    let mut v = json!({
        "lines": summary.lines,
        "applied": summary.applied,
        "unchanged": summary.unchanged,
        "unreported_modules": summary.unreported,
    });
    if let Some(implied) = &summary.snapshot {
        v["snapshot"] = json!(implied);
    }
    v
}

fn too_large(cap: u64) -> ApiFailure {
    ApiFailure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "inventory_too_large",
        format!(
            "the inventory is larger than api.max_inventory_mib ({} MiB); nothing was applied — raise the key or send it in parts",
            cap / (1024 * 1024)
        ),
    )
}

fn import_failure(e: ImportError) -> ApiFailure {
    match e {
        ImportError::BadLines { lines, total } => {
            let listed: Vec<Value> = lines
                .iter()
                .map(|b| json!({"line": b.line, "reason": b.reason}))
                .collect();
            ApiFailure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_import",
                format!("{total} bad line(s); nothing was applied"),
            )
            .with_lines(Value::Array(listed))
        }
        ImportError::Store(e) => e.into(),
        ImportError::SnapshotShrink { ref channels, .. } => {
            let listed = json!(channels);
            ApiFailure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "snapshot_shrink",
                e.to_string(),
            )
            .with_detail("channels", listed)
        }
        other => ApiFailure::new(StatusCode::BAD_REQUEST, "bad_import", other.to_string()),
    }
}

/// Moves the body's pieces to the import, counting them against `cap`, each within
/// [`CHUNK_DEADLINE`]. Anything but the body's end is told to the import as a read error (so
/// nothing is applied) and noted in `cut`.
async fn forward(
    body: Body,
    pieces: mpsc::Sender<io::Result<Bytes>>,
    cap: u64,
    cut: Arc<AtomicU8>,
) {
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    let stop = |why: Cut, text: String| {
        cut.store(why as u8, Ordering::Relaxed);
        Err(io::Error::other(text))
    };
    loop {
        let next = tokio::time::timeout(CHUNK_DEADLINE, stream.next()).await;
        let piece = match next {
            Err(_) => stop(Cut::Stalled, "the body stopped arriving".into()),
            Ok(None) => return,
            Ok(Some(Err(e))) => stop(Cut::Broken, format!("the body broke off: {e}")),
            Ok(Some(Ok(bytes))) => {
                total += bytes.len() as u64;
                if total > cap {
                    stop(
                        Cut::TooLarge,
                        "the body is larger than api.max_inventory_mib".into(),
                    )
                } else {
                    Ok(bytes)
                }
            }
        };
        let last = piece.is_err();
        if pieces.send(piece).await.is_err() || last {
            return;
        }
    }
}

/// The body as a blocking reader, for the import's own reading thread.
struct BodyReader {
    from_body: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    fn new(from_body: mpsc::Receiver<io::Result<Bytes>>) -> BodyReader {
        BodyReader {
            from_body,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.from_body.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
