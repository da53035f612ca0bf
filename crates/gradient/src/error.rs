//! The one error type of the Gradient client: every answer that is not a success is classified here.

use std::fmt;
use std::sync::Arc;

/// What kind of failure Gradient (or the network) gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: the connector's token was rejected (a newer key was generated). Never retried.
    Unauthorized,
    /// 403: Gradient detected an anomaly in our usage. Never retried.
    Forbidden,
    /// 404 on the count route: unknown account, or the account or service is not mapped by the MSP
    /// (normal for counts).
    NotMapped,
    /// 404 on any other route (e.g. "Vendor Profile Not Found"): a wrong base URL or vendor key,
    /// never "unmapped". The message names the route.
    NotFound,
    /// 409: Gradient already holds a resource with this id (the whole request was refused).
    Conflict,
    /// 400 or another 4xx: Gradient refused the request as invalid.
    Invalid,
    /// 429: over Gradient's rate limit (after retries).
    RateLimited,
    /// 5xx (after retries).
    Server,
    /// Connection failures (after retries).
    Network,
    /// No answer within the request timeout (after retries).
    Timeout,
    /// A success answer we could not read, or whose shape cannot be trusted (a catalogue without
    /// a `skus` list, an account list that is not a list, a 2xx whose body is an error object).
    Decode,
    /// An answer larger than its cap (`[gradient] max_list_body_kib` / `max_body_kib`); the rest
    /// was not read.
    TooLarge,
    /// The client could not be built (bad base URL, TLS set-up).
    Config,
    /// The caller withdrew the count as it left the pacer ([`crate::BuildChoice::withdrawn`]):
    /// nothing was sent.
    Withdrawn,
}

impl ErrorKind {
    /// Whether a later attempt (or a later run) may succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited | ErrorKind::Server | ErrorKind::Network | ErrorKind::Timeout
        )
    }

    /// A short word for logs and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotMapped => "not_mapped",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Decode => "decode",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Config => "config",
            ErrorKind::Withdrawn => "withdrawn",
        }
    }
}

/// A failed call to Gradient. Never contains a key or the `GRADIENT-TOKEN` header.
#[derive(Debug, Clone)]
pub struct GradientError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// HTTP status, when Gradient answered.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// Gradient's message (truncated), or what went wrong.
    pub message: String,
    /// The failure underneath (the transport's or the decoder's error), kept for `source()`;
    /// shared, so one error can reach every waiter of a run.
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// `source()` is the failure underneath itself (not the `Arc` around it), so callers can downcast.
impl std::error::Error for GradientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl GradientError {
    /// An error of `kind` with Gradient's (or our) message, no attempt counted yet.
    pub fn new(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> Self {
        GradientError {
            kind,
            status,
            attempts: 0,
            message: truncate(message.into()),
            source: None,
        }
    }

    /// The same, keeping the failure underneath as its `source()`.
    pub(crate) fn caused_by(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        GradientError {
            source: Some(Arc::new(source)),
            ..GradientError::new(kind, None, message)
        }
    }

    /// What the operator should do about it.
    pub fn advice(&self) -> &'static str {
        match self.kind {
            ErrorKind::Unauthorized => "Gradient rejected this connector's token: was a newer partner API key generated? Paste the new one with `gradient-connector connector add ID --token-file PATH`",
            ErrorKind::Forbidden => "Gradient detected an anomaly in our usage (403): stop and contact Gradient support before retrying",
            ErrorKind::NotMapped => "unknown account, or the account or service is not mapped yet by the MSP in Gradient",
            ErrorKind::NotFound => "Gradient answered 404 Not Found on a route that always exists: check [gradient] base_url (Gradient's API lives under https://app.usegradient.com/api/vendor-api) and the vendor API key (gradient.vendor_api_key_file)",
            ErrorKind::Conflict => "Gradient already holds a resource with this id; the request was refused as a whole",
            ErrorKind::Invalid => "Gradient refused the request as invalid",
            ErrorKind::RateLimited => "Gradient's rate limit was exceeded; lower [gradient] requests_per_second",
            ErrorKind::Server => "Gradient had a server error; it is retried next run",
            ErrorKind::Network => "Gradient could not be reached; check the network and [gradient] base_url",
            ErrorKind::Timeout => "Gradient did not answer within [gradient] request_timeout_secs",
            ErrorKind::Decode => "Gradient's answer could not be read or is not the documented shape; nothing was created or pushed from it",
            ErrorKind::TooLarge => "Gradient's answer was larger than allowed and was not read; if Gradient really sends that much, raise [gradient] max_list_body_kib or max_body_kib",
            ErrorKind::Config => "the Gradient client could not be set up",
            ErrorKind::Withdrawn => "the count was withdrawn before it was sent; nothing reached Gradient",
        }
    }
}

impl GradientError {
    /// The error as one sentence with Gradient's message exactly as received (for the ledger and
    /// JSON output). Human output and logs use `Display`, which escapes it.
    pub fn text(&self) -> String {
        self.render(false)
    }

    fn render(&self, escaped: bool) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out, escaped);
        out
    }

    fn write(&self, f: &mut impl fmt::Write, escaped: bool) -> fmt::Result {
        write!(f, "{}", self.advice())?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s}")?;
        } else {
            write!(f, " (")?;
        }
        if self.status.is_some() {
            write!(f, ", ")?;
        }
        write!(f, "{} attempt(s))", self.attempts)?;
        if !self.message.is_empty() {
            if escaped {
                write!(f, ": {}", crate::domain::escape(&self.message))?;
            } else {
                write!(f, ": {}", self.message)?;
            }
        }
        Ok(())
    }
}

/// Gradient's message is escaped (control characters as `\u{…}`): an error shown on a terminal
/// or written to a log can never forge or hide a line.
impl fmt::Display for GradientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

/// Gradient's messages are kept short in logs and the ledger.
fn truncate(mut s: String) -> String {
    const MAX: usize = 300;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
