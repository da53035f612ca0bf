//! `[email]`: where mail to the MSPs' contacts goes (the SMTP url, the sender, the login and the
//! template overrides), the url's check, and the login read as a secret.

use std::path::PathBuf;

use url::Url;

use super::keyfile;

/// `[email]`: mail to the MSPs' contacts (see the `events::mail` task).
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `smtp://HOST[:PORT]` or `smtps://HOST[:PORT]` (no user or password in it).
    pub smtp_url: Url,
    /// The From: mailbox.
    pub from: String,
    /// `user:password`, a secret (the credential `smtp-credentials` wins).
    pub credentials_file: Option<PathBuf>,
    /// Overrides of the built-in templates.
    pub templates_dir: Option<PathBuf>,
}

/// Name of the systemd credential holding the SMTP login.
pub const SMTP_CREDENTIAL: &str = "smtp-credentials";

impl EmailConfig {
    /// The SMTP login (`user`, password) when one is configured: the systemd credential
    /// `smtp-credentials` when present, else `credentials_file`. The error names the file, never
    /// its content.
    pub fn credentials(&self) -> Result<Option<(String, secrecy::SecretString)>, CredentialsError> {
        use secrecy::ExposeSecret;
        let path = match &self.credentials_file {
            Some(p) => keyfile::credential_or(SMTP_CREDENTIAL, p),
            None => {
                let none = PathBuf::new();
                let p = keyfile::credential_or(SMTP_CREDENTIAL, &none);
                if p == none {
                    return Ok(None);
                }
                p
            }
        };
        let text = keyfile::read_key_file(&path, keyfile::KEY_FILE_MAX_BYTES)
            .map_err(CredentialsError::File)?;
        let line = text.expose_secret().trim_end_matches(['\r', '\n']);
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !line.contains('\n') => Ok(Some((
                user.to_string(),
                secrecy::SecretString::from(password.to_string()),
            ))),
            _ => Err(CredentialsError::Form(path)),
        }
    }
}

/// The SMTP login could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file (never its content).
    #[error(transparent)]
    File(keyfile::KeyFileError),
    /// Not one line `user:password`.
    #[error("{} must hold one line `user:password`", .0.display())]
    Form(PathBuf),
}

/// An `email.smtp_url` that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    /// Another scheme.
    #[error("must be smtp://HOST[:PORT] or smtps://HOST[:PORT], found scheme {0:?}")]
    Scheme(String),
    /// A login in the URL.
    #[error("must not carry a user or password: put `user:password` in email.credentials_file (or the systemd credential smtp-credentials)")]
    Login,
    /// No host.
    #[error("names no host")]
    NoHost,
    /// Not a URL.
    #[error("is not a URL ({0}): write smtp://HOST[:PORT] or smtps://HOST[:PORT]")]
    NotUrl(#[source] url::ParseError),
}

/// Checks `email.smtp_url`: smtp:// or smtps://, a host, no user or password.
pub(super) fn check_smtp_url(text: &str) -> Result<Url, SmtpUrlError> {
    match Url::parse(text.trim()) {
        Ok(u) if !matches!(u.scheme(), "smtp" | "smtps") => {
            Err(SmtpUrlError::Scheme(u.scheme().to_string()))
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(SmtpUrlError::Login),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err(SmtpUrlError::NoHost),
        Ok(u) => Ok(u),
        Err(e) => Err(SmtpUrlError::NotUrl(e)),
    }
}
