//! One request to Gradient: pacing, the attempt, retries with backoff, `Retry-After`, and the
//! classification of every answer that is not a success.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::{HeaderName, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::{answer, Answer, ClientSettings, ErrorKind, GradientError, PartnerSession, API_PREFIX};

/// Which failures a request may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// 429, 5xx, network errors and timeouts (idempotent requests).
    Transient,
    /// Only when the request surely did not take effect: 429 or a failed connection.
    OnlyUnsent,
}

/// What a 404 means on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On404 {
    /// The count route: the account or service is not mapped (normal).
    NotMapped,
    /// Every other route: the route itself was not found (base URL or vendor key).
    NotFound,
}

/// How large a route's answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// A list (the catalogue, accounts): `max_list_body`.
    List,
    /// Anything else: `max_body`.
    Small,
}

/// How a count leaves: decided when it leaves the pacer (after its place in flight and its slot
/// in the pace), once per count — a retry keeps the first decision. A fixed `bool` is the plain
/// choice; a run decides later to know what is still unanswered, and what its set-up said.
pub trait BuildChoice: Sync {
    /// `true`: the count is not sent after all; the call answers [`ErrorKind::Withdrawn`] with
    /// no request made. Asked first; the plain choice never withdraws.
    fn withdrawn(&self) -> bool {
        false
    }

    /// `true`: send the count with `no_build=true` (no rebuild of the MSP's billing view).
    fn no_build(&self) -> bool;
}

impl BuildChoice for bool {
    fn no_build(&self) -> bool {
        *self
    }
}

impl<T: BuildChoice + ?Sized> BuildChoice for &T {
    fn withdrawn(&self) -> bool {
        (**self).withdrawn()
    }

    fn no_build(&self) -> bool {
        (**self).no_build()
    }
}

/// A request's route: its path, and for a count the choice of `no_build` made as it leaves.
pub(crate) struct Route<'a> {
    pub(crate) path: String,
    pub(crate) no_build: Option<&'a dyn BuildChoice>,
}

impl From<String> for Route<'_> {
    fn from(path: String) -> Self {
        Route {
            path,
            no_build: None,
        }
    }
}

/// A request's body.
pub(crate) enum Body<'a, B: Serialize + ?Sized> {
    None,
    Json(&'a B),
}

impl PartnerSession {
    /// Sends one request with pacing and retries; answers the 2xx body as JSON (Null when empty).
    pub(crate) async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: String,
        body: Body<'_, B>,
    ) -> Result<Answer<serde_json::Value>, GradientError> {
        self.send(
            method,
            path,
            body,
            Retry::Transient,
            On404::NotFound,
            Cap::Small,
        )
        .await
    }

    /// One request with its retry loop (long on purpose: pacing, the attempt, classification and
    /// the backoff decision share the loop's state; split, they would pass it all around).
    #[expect(
        clippy::too_many_lines,
        reason = "the retry loop: attempts, pacing, classification and backoff share the loop's state"
    )]
    pub(crate) async fn send<'r, B: Serialize + ?Sized>(
        &self,
        method: Method,
        route: impl Into<Route<'r>>,
        body: Body<'_, B>,
        retry: Retry,
        on_404: On404,
        cap: Cap,
    ) -> Result<Answer<serde_json::Value>, GradientError> {
        let inner = &self.client.inner;
        let small = inner.settings.max_body.max(1);
        let cap = match cap {
            Cap::List => inner.settings.max_list_body.max(1),
            Cap::Small => small,
        };
        let Route {
            mut path,
            mut no_build,
        } = route.into();
        let body_bytes = match body {
            Body::None => None,
            Body::Json(b) => Some(serde_json::to_vec(b).map_err(|e| {
                GradientError::new(ErrorKind::Invalid, None, format!("cannot encode body: {e}"))
            })?),
        };
        let max_attempts = inner.settings.max_attempts.max(1);
        let header = HeaderName::from_static("gradient-token");
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = inner.pacer.admit().await;
            // Not sent after all: what kept it back, after `attempt - 1` requests.
            let unsent = |kind, why: &str| {
                let mut e = GradientError::new(kind, None, format!("not sent: {why}"));
                e.attempts = attempt - 1;
                Err(e)
            };
            if self.rejected.load(Ordering::Relaxed) {
                drop(permit);
                return unsent(
                    ErrorKind::Unauthorized,
                    "Gradient already rejected this token",
                );
            }
            // Decided as the count leaves, once: a retry repeats what the first attempt sent.
            if let Some(choice) = no_build.take() {
                if choice.withdrawn() {
                    drop(permit);
                    return unsent(ErrorKind::Withdrawn, "withdrawn as it left the pacer");
                }
                if choice.no_build() {
                    path.push_str("?no_build=true");
                }
            }
            let url = format!("{}{API_PREFIX}{path}", inner.base);
            let mut req = inner
                .http
                .request(method.clone(), &url)
                .header(header.clone(), self.token.clone())
                .header(ACCEPT, "application/json");
            if let Some(b) = &body_bytes {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let sent_at = std::time::Instant::now();
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    if status.is_success() {
                        match answer::read_capped(resp, cap).await {
                            Ok(bytes) => Ok((status, retry_after, bytes)),
                            Err(answer::ReadError::TooLarge) => {
                                Err((answer::too_large(status.as_u16(), cap), false))
                            }
                            Err(answer::ReadError::Transport(e)) => {
                                Err((transport_error(e), false))
                            }
                        }
                    } else {
                        // An error's message needs no more than the small cap; the rest is
                        // never read.
                        Ok((status, retry_after, answer::read_prefix(resp, small).await))
                    }
                }
                Err(e) => {
                    let unsent = e.is_connect();
                    Err((transport_error(e), unsent))
                }
            };
            drop(permit);
            let status_label = match &result {
                Ok((status, _, _)) => status.as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics::counter!("gradient_connector_gradient_requests_total", "status" => status_label)
                .increment(1);
            metrics::histogram!("gradient_connector_gradient_request_duration_seconds")
                .record(sent_at.elapsed().as_secs_f64());
            let (err, retry_after, unsent) = match result {
                Ok((status, retry_after, bytes)) if status.is_success() => {
                    tracing::debug!(%method, route = %path, status = status.as_u16(), attempt, "gradient answered");
                    inner.pacer.answered();
                    match answer::success_value(status.as_u16(), &bytes) {
                        Ok(value) => {
                            return Ok(Answer {
                                value,
                                status: status.as_u16(),
                                attempts: attempt,
                            })
                        }
                        Err(answer::BodyVerdict::Undecodable(mut g)) => {
                            g.attempts = attempt;
                            return Err(g);
                        }
                        // A success whose body says it failed is that failure (it may have
                        // landed: never "unsent").
                        Err(answer::BodyVerdict::SaysFailed(code, _)) => {
                            let said = StatusCode::from_u16(code)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            tracing::warn!(%method, route = %format!("{API_PREFIX}{}", path.split('?').next().unwrap_or_default()), status = status.as_u16(), said = code, "Gradient answered a success whose body is an error; treated as that error");
                            (
                                self.refused(said, retry_after, &bytes, &method, &path, on_404),
                                retry_after,
                                false,
                            )
                        }
                    }
                }
                Ok((status, retry_after, bytes)) => {
                    tracing::debug!(%method, route = %path, status = status.as_u16(), attempt, "gradient refused");
                    // A 429 is refused before any work: safe to repeat.
                    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
                    (
                        self.refused(status, retry_after, &bytes, &method, &path, on_404),
                        retry_after,
                        throttled,
                    )
                }
                Err((e, _)) if e.kind == ErrorKind::TooLarge => {
                    let mut e = e;
                    e.attempts = attempt;
                    return Err(e);
                }
                Err((e, connect_failed)) => {
                    tracing::debug!(%method, route = %path, attempt, error = %e.message, "gradient unreachable");
                    (e, None, connect_failed)
                }
            };
            let may_retry = match retry {
                Retry::Transient => err.kind.is_transient(),
                Retry::OnlyUnsent => err.kind.is_transient() && unsent,
            };
            if !may_retry || attempt >= max_attempts {
                let mut err = err;
                err.attempts = attempt;
                return Err(err);
            }
            let delay = retry_after
                .map(|d| d.min(inner.settings.retry_max_delay))
                .unwrap_or_else(|| backoff(&inner.settings, attempt));
            tokio::time::sleep(delay).await;
        }
    }
}

impl PartnerSession {
    /// Classifies a refusal (a non-2xx, or a 2xx whose body is an error object) and applies its
    /// side effects: a 429 slows the pacer, a 401 stops this session.
    pub(crate) fn refused(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        bytes: &[u8],
        method: &Method,
        path: &str,
        on_404: On404,
    ) -> GradientError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Every request waits out Retry-After, not only this one's retry.
            self.client.inner.pacer.throttled(retry_after);
        } else {
            self.client.inner.pacer.answered();
        }
        if status == StatusCode::UNAUTHORIZED {
            self.rejected.store(true, Ordering::Relaxed);
        }
        classify(status, bytes, method, path, on_404)
    }
}

/// Decodes an answer's value with a strict decoder, keeping its status and attempts.
pub(crate) fn strict<T>(
    a: Answer<serde_json::Value>,
    f: impl FnOnce(serde_json::Value) -> Result<T, GradientError>,
) -> Result<Answer<T>, GradientError> {
    let (status, attempts) = (a.status, a.attempts);
    match f(a.value) {
        Ok(value) => Ok(Answer {
            value,
            status,
            attempts,
        }),
        Err(mut g) => {
            g.status = Some(status);
            g.attempts = attempts;
            Err(g)
        }
    }
}

impl<T> Answer<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            status: self.status,
            attempts: self.attempts,
        }
    }
}

pub(crate) fn decode_with<T>(
    a: Answer<serde_json::Value>,
    f: impl FnOnce(serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<Answer<T>, GradientError> {
    let (status, attempts) = (a.status, a.attempts);
    match f(a.value) {
        Ok(value) => Ok(Answer {
            value,
            status,
            attempts,
        }),
        Err(e) => {
            let message = format!("unexpected answer shape: {e}");
            let mut g = GradientError::caused_by(ErrorKind::Decode, message, e);
            g.status = Some(status);
            g.attempts = attempts;
            Err(g)
        }
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
pub(crate) fn backoff(s: &ClientSettings, attempt: u32) -> Duration {
    let base = s.retry_initial_delay.as_millis() as u64;
    let ceiling = base
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(20))
        .min(s.retry_max_delay.as_millis() as u64);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

pub(crate) fn transport_error(e: reqwest::Error) -> GradientError {
    // reqwest's Display names the URL (no secrets: the token travels only in a header).
    let text = std::error::Error::source(&e)
        .map(|s| format!("{e}: {s}"))
        .unwrap_or_else(|| e.to_string());
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    GradientError::caused_by(kind, text, e)
}

/// Classifies a non-2xx answer, keeping Gradient's message; a 404 off the count route also names
/// the route (`path` as sent after the prefix; its query is left out).
pub(crate) fn classify(
    status: StatusCode,
    body: &[u8],
    method: &Method,
    path: &str,
    on_404: On404,
) -> GradientError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message").map(|m| match m {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let kind = match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 if on_404 == On404::NotMapped => ErrorKind::NotMapped,
        404 => {
            let route = path.split('?').next().unwrap_or_default();
            let message = format!("{method} {API_PREFIX}{route} was not found: {message}");
            return GradientError::new(ErrorKind::NotFound, Some(404), message);
        }
        409 => ErrorKind::Conflict,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Invalid,
    };
    GradientError::new(kind, Some(status.as_u16()), message)
}
