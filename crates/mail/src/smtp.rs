//! Sending: the `[email]` settings checked into a [`Mailer`] (lettre's async SMTP transport on
//! rustls) and one [`Rendered`] mail sent to one recipient.
//!
//! Transport security by the url: `smtps://` is TLS from the first byte (port 465 by default);
//! `smtp://` to a non-loopback host **requires** STARTTLS (a server that does not offer it is
//! refused before anything is sent: no credentials or mail in plain text over a network);
//! `smtp://` to a loopback address (127.0.0.0/8, ::1, `localhost`) uses STARTTLS when offered and
//! plain text otherwise. Credentials (`user:password`) are a secret: never in a url, a log, an
//! error or `Debug`.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::message::{Rendered, ATTACHMENT};

/// How long one SMTP conversation may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `[email]` as the mailer needs it.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `smtp://host[:port]` or `smtps://host[:port]`.
    pub url: String,
    /// The From: mailbox (`Name <addr>` or `addr`).
    pub from: String,
    /// `user` and password, when the server wants a login.
    pub credentials: Option<(String, SecretString)>,
}

/// The settings cannot make a mailer.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSettingsError {
    /// The url does not parse or is not smtp:// / smtps://.
    #[error("email.smtp_url must be smtp://HOST[:PORT] or smtps://HOST[:PORT] ({0})")]
    Url(String),
    /// The url carries a user or password.
    #[error("email.smtp_url must not carry a user or password: put `user:password` in email.credentials_file (or the systemd credential smtp-credentials)")]
    CredentialsInUrl,
    /// `from` is not a mailbox.
    #[error("email.from is not an address (`Name <billing@vendor.example>` or `billing@vendor.example`): {source}")]
    From {
        /// lettre's account.
        #[source]
        source: lettre::address::AddressError,
    },
    /// The TLS settings could not be made.
    #[error("cannot set up TLS for the SMTP server: {source}")]
    Tls {
        /// lettre's account.
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// One mail could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The recipient is not an address.
    #[error("the recipient is not an e-mail address: {source}")]
    Recipient {
        /// lettre's account.
        #[source]
        source: lettre::address::AddressError,
    },
    /// The message could not be built.
    #[error("cannot build the mail: {source}")]
    Build {
        /// lettre's account.
        #[source]
        source: lettre::error::Error,
    },
    /// The SMTP server refused, or could not be reached.
    #[error("the SMTP server did not take the mail: {source}")]
    Smtp {
        /// lettre's account (no credentials in it).
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Whether `host` is a loopback address (or `localhost`).
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An address check for a recipient (the API's and the CLI's `--notify`).
pub fn valid_recipient(address: &str) -> bool {
    address.trim() == address
        && address.parse::<lettre::Address>().is_ok()
        && !address.contains(['<', '>', ',', ' '])
}

/// The SMTP client and the sender's mailbox.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// For logs: scheme, host and port.
    shown: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for the settings (nothing is connected yet).
    pub fn new(settings: &SmtpSettings) -> Result<Mailer, SmtpSettingsError> {
        let url =
            url::Url::parse(&settings.url).map_err(|e| SmtpSettingsError::Url(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SmtpSettingsError::CredentialsInUrl);
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| SmtpSettingsError::Url("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_params =
            || TlsParameters::new(host.clone()).map_err(|source| SmtpSettingsError::Tls { source });
        let (tls, port) = match url.scheme() {
            "smtps" => (Tls::Wrapper(tls_params()?), url.port().unwrap_or(465)),
            "smtp" if is_loopback(&host) => {
                (Tls::Opportunistic(tls_params()?), url.port().unwrap_or(25))
            }
            "smtp" => (Tls::Required(tls_params()?), url.port().unwrap_or(25)),
            other => return Err(SmtpSettingsError::Url(format!("scheme {other}"))),
        };
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|source| SmtpSettingsError::From { source })?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            shown: format!("{}://{host}:{port}", url.scheme()),
        })
    }

    /// The server, as logs show it.
    pub fn server(&self) -> &str {
        &self.shown
    }

    /// Sends `mail` to `to`.
    pub async fn send(&self, to: &str, mail: &Rendered) -> Result<(), SendError> {
        let message = self.message(to, mail)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|source| SendError::Smtp { source })
    }

    /// The message as sent: multipart/alternative (text, HTML), in multipart/mixed with the CSV
    /// when there is one.
    pub fn message(&self, to: &str, mail: &Rendered) -> Result<Message, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|source| SendError::Recipient { source })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone());
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::plain(mail.text.clone()))
            .singlepart(SinglePart::html(mail.html.clone()));
        let built = match &mail.csv {
            None => builder.multipart(alternative),
            Some(csv) => builder.multipart(
                MultiPart::mixed().multipart(alternative).singlepart(
                    Attachment::new(ATTACHMENT.into()).body(
                        csv.clone(),
                        ContentType::parse("text/csv; charset=utf-8")
                            .unwrap_or(ContentType::TEXT_PLAIN),
                    ),
                ),
            ),
        };
        built.map_err(|source| SendError::Build { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> SmtpSettings {
        SmtpSettings {
            url: url.into(),
            from: "Vendor Billing <billing@vendor.example>".into(),
            credentials: Some(("u".into(), SecretString::from("hunter2-secret"))),
        }
    }

    #[test]
    fn loopback_is_recognised() {
        for h in [
            "127.0.0.1",
            "127.3.4.5",
            "[::1]",
            "::1",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "mail.example", "localhost.example"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn urls_are_checked_and_no_secret_is_printed() {
        let m = Mailer::new(&settings("smtp://mail.example:587")).unwrap();
        assert_eq!(m.server(), "smtp://mail.example:587");
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(
            Mailer::new(&settings("smtps://mail.example"))
                .unwrap()
                .server(),
            "smtps://mail.example:465"
        );
        assert!(matches!(
            Mailer::new(&settings("smtp://u:p@mail.example")),
            Err(SmtpSettingsError::CredentialsInUrl)
        ));
        assert!(matches!(
            Mailer::new(&settings("http://mail.example")),
            Err(SmtpSettingsError::Url(_))
        ));
        let mut s = settings("smtp://127.0.0.1:2525");
        s.from = "not an address".into();
        assert!(matches!(
            Mailer::new(&s),
            Err(SmtpSettingsError::From { .. })
        ));
    }

    #[test]
    fn recipients_are_plain_addresses() {
        assert!(valid_recipient("admin@msp.example"));
        for bad in [
            "",
            "admin",
            "a@",
            " a@b.example",
            "A <a@b.example>",
            "a@b.example,c@d.example",
        ] {
            assert!(!valid_recipient(bad), "{bad}");
        }
    }
}
