//! Webhook signing secrets: the `whsec_` + base64 text a `[[webhook]] secret_file` holds, decoded
//! into a key that is never printed.

use std::fmt;

/// Longest webhook secret file read, in bytes.
pub const WEBHOOK_SECRET_MAX_BYTES: u64 = 4096;

/// A webhook's signing key, decoded from its `whsec_` + base64 text. Never printed.
#[derive(Clone)]
pub struct WebhookSecret(secrecy::SecretSlice<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl WebhookSecret {
    /// Parses `whsec_` + base64 (standard alphabet, padded or not) of 24..=64 bytes, the Standard
    /// Webhooks form. The error never contains the text.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretTextError> {
        use base64::Engine;
        let text = text.trim();
        let Some(b64) = text.strip_prefix("whsec_") else {
            return Err(SecretTextError::NoPrefix);
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| SecretTextError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretTextError::Length(key.len()));
        }
        Ok(WebhookSecret(key.into()))
    }

    /// The key bytes (for signing only).
    pub(crate) fn key(&self) -> &[u8] {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

/// A webhook secret that is not `whsec_` + base64 of 24..=64 bytes (never holds the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretTextError {
    /// No `whsec_` prefix.
    #[error("must hold one line, `whsec_` followed by the base64 of the signing key")]
    NoPrefix,
    /// Not base64 after the prefix.
    #[error("the text after `whsec_` is not base64")]
    NotBase64,
    /// A key of the wrong size.
    #[error("the signing key must be 24 to 64 bytes, found {0}; generate one with `echo whsec_$(head -c 32 /dev/urandom | base64)`")]
    Length(usize),
}
