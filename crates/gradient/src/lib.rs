//! The Gradient vendor API client: typed calls, the `GRADIENT-TOKEN` header, retries with backoff,
//! and daemon-wide pacing.
//!
//! One [`GradientClient`] per daemon holds one HTTP connection pool and the [`limiter::Pacer`]; a
//! [`PartnerSession`] is the client plus one connector's header, built once. Retries happen here, for
//! 429, 5xx, network errors and timeouts only (exponential backoff with full jitter, `Retry-After`
//! honoured, capped, at most `max_attempts`); 401, 403, 404 and other 4xx are answered at once.
//! Redirects are never followed, so the token never travels to another host.
//!
//! A 404 means "not mapped" ([`ErrorKind::NotMapped`]) only on the count route; on every other route
//! it is [`ErrorKind::NotFound`] (Gradient's "Vendor Profile Not Found": a wrong base URL or vendor
//! key), whose message names the route.
//!
//! Nothing Gradient sends is trusted blindly ([`answer`]): every body is read streamed under a cap
//! (lists: `max_list_body`, anything else: `max_body`); a 2xx whose JSON body is an error object is
//! classified by the status it carries; the catalogue, the account list and the integration are
//! decoded strictly. Creations (services, accounts) are repeated only when the request surely did
//! not land (429, a refused connection).

use gradient_connector_domain::{domain, time};

pub mod answer;
pub mod error;
pub mod limiter;
pub mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

pub use error::{ErrorKind, GradientError};
pub use types::{
    profile_changes, Account, AccountUpdate, Answer, Integration, IntegrationStatus, NewAccount,
    NewService, Sku, Vendor, VendorProfile,
};

use limiter::Pacer;
use types::{account_list, unwrap_data, UnitCountBody};

/// The authentication header's name.
pub const TOKEN_HEADER: &str = "GRADIENT-TOKEN";
/// Every route starts here.
pub const API_PREFIX: &str = "/api/vendor-api";
/// The most accounts one bulk creation sends (Gradient advises splitting large sends into pages).
pub const MAX_ACCOUNTS_PER_REQUEST: usize = 100;

/// How the client talks to Gradient.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base URL (scheme, host, port).
    pub base_url: url::Url,
    /// Daemon-wide requests per second.
    pub requests_per_second: u32,
    /// Requests in flight at once. By Little's law a run needs `requests_per_second × latency`
    /// requests in flight to reach its rate, so this must be at least `requests_per_second / 2` for
    /// the rate to hold up to 500 ms of latency (the configured default, 64, does for any rate).
    pub max_in_flight: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Attempts per request for transient failures.
    pub max_attempts: u32,
    /// First backoff ceiling (doubles per attempt).
    pub retry_initial_delay: Duration,
    /// Backoff cap (also caps `Retry-After`).
    pub retry_max_delay: Duration,
    /// The most bytes read of a list answer (the catalogue, accounts); more is an error.
    pub max_list_body: usize,
    /// The most bytes read of any other answer; more is an error.
    pub max_body: usize,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    vendor_key: SecretString,
    pacer: Pacer,
    settings: ClientSettings,
}

/// The client: one per daemon. Cheap to clone.
#[derive(Clone)]
pub struct GradientClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GradientClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl GradientClient {
    /// Builds the client (TLS with rustls/ring, one pool, no redirects).
    pub fn new(settings: ClientSettings, vendor_key: SecretString) -> Result<Self, GradientError> {
        // Installing twice is harmless; reqwest needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("gradient-connector/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(settings.max_in_flight.max(1))
            .build()
            .map_err(|e| {
                GradientError::new(ErrorKind::Config, None, format!("HTTP client: {e}"))
            })?;
        let base = settings.base_url.as_str().trim_end_matches('/').to_string();
        Ok(GradientClient {
            inner: Arc::new(Inner {
                http,
                base,
                vendor_key,
                pacer: Pacer::new(settings.requests_per_second, settings.max_in_flight),
                settings,
            }),
        })
    }

    /// A session for one connector's partner key: the header is built once here.
    pub fn partner(&self, partner_key: &SecretString) -> PartnerSession {
        let raw = format!(
            "{}:{}",
            self.inner.vendor_key.expose_secret(),
            partner_key.expose_secret()
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        // Base64 is always a valid header value; an empty value only stands in for the impossible.
        let mut value = HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""));
        value.set_sensitive(true);
        PartnerSession {
            client: self.clone(),
            token: value,
            rejected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether requests are currently slowed after a 429.
    pub fn is_slowed(&self) -> bool {
        self.inner.pacer.is_slowed()
    }
}

/// The client bound to one connector's token. Once Gradient answered 401 for the token, the
/// session (and its clones) sends nothing more: later calls fail at once with
/// [`ErrorKind::Unauthorized`], so only the requests already on the wire see the 401, however many
/// wait in the pacer.
#[derive(Clone)]
pub struct PartnerSession {
    client: GradientClient,
    token: HeaderValue,
    rejected: Arc<AtomicBool>,
}

impl std::fmt::Debug for PartnerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartnerSession { token: [REDACTED] }")
    }
}

/// Percent-encodes one path segment (everything but unreserved characters).
fn segment(id: &str) -> Result<String, GradientError> {
    if id.is_empty() || id.chars().all(|c| c == '.') {
        return Err(GradientError::new(
            ErrorKind::Invalid,
            None,
            format!("the id {id:?} cannot be sent as a URL path segment"),
        ));
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Which failures a request may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// 429, 5xx, network errors and timeouts (idempotent requests).
    Transient,
    /// Only when the request surely did not take effect: 429 or a failed connection.
    OnlyUnsent,
}

/// What a 404 means on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On404 {
    /// The count route: the account or service is not mapped (normal).
    NotMapped,
    /// Every other route: the route itself was not found (base URL or vendor key).
    NotFound,
}

/// How large a route's answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// A list (the catalogue, accounts): `max_list_body`.
    List,
    /// Anything else: `max_body`.
    Small,
}

/// A request's body.
enum Body<'a, B: Serialize + ?Sized> {
    None,
    Json(&'a B),
}

impl PartnerSession {
    /// GET the vendor object (the service catalogue).
    /// Strict: only a vendor object with a `skus` list whose entries have ids and names is a
    /// catalogue ([`answer::decode_vendor`]); anything else is [`ErrorKind::Decode`].
    pub async fn get_vendor(&self) -> Result<Answer<Vendor>, GradientError> {
        self.get_list(String::new(), answer::decode_vendor).await
    }

    /// GET of a list-sized answer (read under the list cap, retried when transient), decoded
    /// strictly by `decode`.
    async fn get_list<T>(
        &self,
        path: String,
        decode: impl FnOnce(serde_json::Value) -> Result<T, GradientError>,
    ) -> Result<Answer<T>, GradientError> {
        let a = self
            .send(
                Method::GET,
                path,
                Body::<()>::None,
                Retry::Transient,
                On404::NotFound,
                Cap::List,
            )
            .await?;
        strict(a, decode)
    }

    /// Creates a service; answers the vendor object with its skus.
    pub async fn create_service(&self, s: &NewService) -> Result<Answer<Vendor>, GradientError> {
        // Not idempotent: a timeout or 5xx may come after Gradient created the service, and a
        // second POST would create a duplicate. Retried only when the request surely did not land.
        let a = self
            .send(
                Method::POST,
                "/service".into(),
                Body::Json(s),
                Retry::OnlyUnsent,
                On404::NotFound,
                Cap::List,
            )
            .await?;
        decode_with(a, |v| serde_json::from_value(unwrap_data(v)))
    }

    /// GET the partner's integration (the documented way to verify a token).
    /// Strict: the answer must be an object ([`answer::decode_integration`]).
    pub async fn get_integration(&self) -> Result<Answer<Integration>, GradientError> {
        let a = self
            .call(Method::GET, "/organization".into(), Body::<()>::None)
            .await?;
        strict(a, answer::decode_integration)
    }

    /// Updates the vendor profile (PATCH `/api/vendor-api`): only the fields set in `profile` are
    /// sent. The answer's body is not read (its shape differs between Gradient's specs).
    pub async fn update_vendor_profile(
        &self,
        profile: &VendorProfile,
    ) -> Result<Answer<()>, GradientError> {
        // The answer is the vendor object with every sku: a list.
        self.send(
            Method::PATCH,
            String::new(),
            Body::Json(profile),
            Retry::Transient,
            On404::NotFound,
            Cap::List,
        )
        .await
        .map(|a| a.map(|_| ()))
    }

    /// Sets the integration status. The answer's `data` (an object in one spec, a string in the
    /// newer one) is never read.
    pub async fn set_integration_status(
        &self,
        status: IntegrationStatus,
    ) -> Result<Answer<()>, GradientError> {
        let path = format!("/organization/status/{}", status.as_str());
        self.call(Method::PATCH, path, Body::<()>::None)
            .await
            .map(|a| a.map(|_| ()))
    }

    /// The partner's accounts. Rows without an id (or that cannot be read) are skipped with a
    /// warning: one odd row never fails the whole list; but an answer that is not a list (`null`,
    /// `{"data":null}`, an error object) is [`ErrorKind::Decode`], never "no accounts".
    pub async fn get_accounts(&self) -> Result<Answer<Vec<Account>>, GradientError> {
        self.get_list("/organization/accounts".into(), answer::decode_accounts)
            .await
    }

    /// Creates accounts in one bulk call of at most [`MAX_ACCOUNTS_PER_REQUEST`] (more is refused
    /// before sending: split them, as `connector::accounts` does). A 409 ([`ErrorKind::Conflict`])
    /// means one of them already exists and nothing of this call was created. Not idempotent: it
    /// is repeated only when the request surely did not land (429, a refused connection); after a
    /// 5xx or a timeout the caller must read the accounts again before creating anything.
    pub async fn create_accounts(
        &self,
        accounts: &[NewAccount],
    ) -> Result<Answer<Vec<Account>>, GradientError> {
        if accounts.len() > MAX_ACCOUNTS_PER_REQUEST {
            return Err(GradientError::new(
                ErrorKind::Invalid,
                None,
                format!(
                    "{} accounts in one request; at most {MAX_ACCOUNTS_PER_REQUEST} are sent at once",
                    accounts.len()
                ),
            ));
        }
        let a = self
            .send(
                Method::POST,
                "/organization/accounts".into(),
                Body::Json(accounts),
                Retry::OnlyUnsent,
                On404::NotFound,
                Cap::List,
            )
            .await?;
        // The answer's shape is loosely documented: an unreadable body still means "created".
        let status = a.status;
        let attempts = a.attempts;
        Ok(decode_with(a, account_list).unwrap_or(Answer {
            value: Vec::new(),
            status,
            attempts,
        }))
    }

    /// Updates an account's name or description.
    pub async fn update_account(
        &self,
        id: &str,
        update: &AccountUpdate,
    ) -> Result<Answer<()>, GradientError> {
        let path = format!("/organization/accounts/{}", segment(id)?);
        self.call(Method::PATCH, path, Body::Json(update))
            .await
            .map(|a| a.map(|_| ()))
    }

    /// Sets the unit count of one (account, service) pair. `no_build` skips Gradient's rebuild.
    pub async fn set_unit_count(
        &self,
        service_id: &str,
        account_id: &str,
        unit_count: u64,
        no_build: bool,
    ) -> Result<Answer<()>, GradientError> {
        let mut path = format!("/service/{}/count", segment(service_id)?);
        if no_build {
            path.push_str("?no_build=true");
        }
        let body = UnitCountBody {
            account_id,
            unit_count,
        };
        // The one route where a 404 means "not mapped".
        let result = self
            .send(
                Method::POST,
                path,
                Body::Json(&body),
                Retry::Transient,
                On404::NotMapped,
                Cap::Small,
            )
            .await;
        match result {
            Ok(a) => Ok(a.map(|_| ())),
            // A 2xx is the count set, even when its body cannot be read: pushed, with a warning. (A
            // 2xx whose body is an error object is classified by that error, never Decode.)
            Err(e) if e.kind == ErrorKind::Decode => {
                tracing::warn!(service = %service_id, account = %crate::domain::escape(account_id), error = %e, "Gradient accepted the count (2xx) with a body that cannot be read; recorded as pushed");
                Ok(Answer {
                    value: (),
                    status: e.status.unwrap_or(200),
                    attempts: e.attempts,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one request with pacing and retries; answers the 2xx body as JSON (Null when empty).
    async fn call<B: Serialize + ?Sized>(
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
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: String,
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
        let url = format!("{}{API_PREFIX}{path}", inner.base);
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
            if self.rejected.load(Ordering::Relaxed) {
                drop(permit);
                let mut e = GradientError::new(
                    ErrorKind::Unauthorized,
                    None,
                    "not sent: Gradient already rejected this token",
                );
                e.attempts = attempt - 1;
                return Err(e);
            }
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
                                Err((transport_error(&e), false))
                            }
                        }
                    } else {
                        // An error's message needs no more than the small cap; the rest is
                        // never read.
                        Ok((status, retry_after, answer::read_prefix(resp, small).await))
                    }
                }
                Err(e) => Err((transport_error(&e), e.is_connect())),
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
    fn refused(
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
fn strict<T>(
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
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            status: self.status,
            attempts: self.attempts,
        }
    }
}

fn decode_with<T>(
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
            let mut g = GradientError::new(
                ErrorKind::Decode,
                Some(status),
                format!("unexpected answer shape: {e}"),
            );
            g.attempts = attempts;
            Err(g)
        }
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
fn backoff(s: &ClientSettings, attempt: u32) -> Duration {
    let base = s.retry_initial_delay.as_millis() as u64;
    let ceiling = base
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(20))
        .min(s.retry_max_delay.as_millis() as u64);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
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

fn transport_error(e: &reqwest::Error) -> GradientError {
    // reqwest's Display names the URL (no secrets: the token travels only in a header).
    let text = std::error::Error::source(e)
        .map(|s| format!("{e}: {s}"))
        .unwrap_or_else(|| e.to_string());
    if e.is_timeout() {
        GradientError::new(ErrorKind::Timeout, None, text)
    } else {
        GradientError::new(ErrorKind::Network, None, text)
    }
}

/// Classifies a non-2xx answer, keeping Gradient's message; a 404 off the count route also names
/// the route (`path` as sent after the prefix; its query is left out).
fn classify(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
