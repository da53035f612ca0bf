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
mod transport;
pub mod types;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderValue;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

pub use error::{ErrorKind, GradientError};
pub use types::{
    profile_changes, Account, AccountUpdate, Answer, Integration, IntegrationStatus, NewAccount,
    NewService, Sku, Vendor, VendorProfile,
};

use limiter::Pacer;
pub use transport::BuildChoice;
use transport::{decode_with, strict, Body, Cap, On404, Retry};
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
    /// Shared by every client a reload derives from the first: one pacer per daemon.
    pacer: Arc<Pacer>,
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
        let http = http_client(&settings)?;
        let pacer = Arc::new(Pacer::new(
            settings.requests_per_second,
            settings.max_in_flight,
        ));
        Ok(GradientClient::with(http, pacer, settings, vendor_key))
    }

    fn with(
        http: reqwest::Client,
        pacer: Arc<Pacer>,
        settings: ClientSettings,
        vendor_key: SecretString,
    ) -> Self {
        let base = settings.base_url.as_str().trim_end_matches('/').to_string();
        GradientClient {
            inner: Arc::new(Inner {
                http,
                base,
                vendor_key,
                pacer,
                settings,
            }),
        }
    }

    /// The client a reload puts in force: new settings and vendor key, the **same** pacer
    /// (reconfigured; what 429s taught it is kept) and the same connection pool unless the
    /// timeouts or the places in flight changed. Sessions of this client (a run in flight) keep
    /// their settings. Must run inside the runtime.
    pub fn reconfigured(
        &self,
        settings: ClientSettings,
        vendor_key: SecretString,
    ) -> Result<Self, GradientError> {
        let old = &self.inner.settings;
        let http = if old.request_timeout == settings.request_timeout
            && old.max_in_flight == settings.max_in_flight
        {
            self.inner.http.clone()
        } else {
            http_client(&settings)?
        };
        self.inner
            .pacer
            .reconfigure(settings.requests_per_second, settings.max_in_flight);
        Ok(GradientClient::with(
            http,
            self.inner.pacer.clone(),
            settings,
            vendor_key,
        ))
    }

    /// Whether two clients share one pacer (a reload's client and the first one do).
    pub fn shares_pacer_with(&self, other: &GradientClient) -> bool {
        Arc::ptr_eq(&self.inner.pacer, &other.inner.pacer)
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

/// The HTTP client of the settings (TLS with rustls/ring, one pool, no redirects).
fn http_client(settings: &ClientSettings) -> Result<reqwest::Client, GradientError> {
    // Installing twice is harmless; reqwest needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("gradient-connector/", env!("CARGO_PKG_VERSION")))
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(settings.max_in_flight.max(1))
        .build()
        .map_err(|e| GradientError::caused_by(ErrorKind::Config, format!("HTTP client: {e}"), e))
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
                "/service".to_string(),
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
        self.get_list(
            "/organization/accounts".to_string(),
            answer::decode_accounts,
        )
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
                "/organization/accounts".to_string(),
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

    /// Sets the unit count of one (account, service) pair. `no_build` (decided as the count
    /// leaves the pacer, [`BuildChoice`]) skips Gradient's rebuild.
    pub async fn set_unit_count(
        &self,
        service_id: &str,
        account_id: &str,
        unit_count: impl Into<gradient_connector_domain::count::UnitCount>,
        no_build: impl BuildChoice,
    ) -> Result<Answer<()>, GradientError> {
        let path = format!("/service/{}/count", segment(service_id)?);
        let route = transport::Route {
            path,
            no_build: Some(&no_build),
        };
        let body = UnitCountBody {
            account_id,
            unit_count: unit_count.into(),
        };
        // The one route where a 404 means "not mapped".
        let result = self
            .send(
                Method::POST,
                route,
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
}

#[cfg(test)]
mod tests;
