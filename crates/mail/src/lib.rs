//! E-mail to MSPs: the three mails — *connected*, *synced*, *token rejected* — built from plain
//! data ([`message`]) with minijinja templates (built in, overridable from a directory; HTML parts
//! auto-escaped), and sent over SMTP with lettre on rustls ([`smtp`]). Nothing here knows the
//! store, the configuration file or Gradient: the product hands in plain values.

pub mod message;
pub mod smtp;

pub use message::{
    Connected, Mail, MailKind, Rendered, Synced, SyncedRow, TemplateError, Templates, TokenRejected,
};
pub use smtp::{Mailer, SendError, SmtpSettings, SmtpSettingsError};
