//! Mail to the MSPs' contacts (`[email]`): the task the daemon runs beside webhook delivery. It
//! reads the outbox's mail deliveries (`mailto:ADDRESS`, one per event and recipient, written with
//! the event — see `store::contacts`), turns each event into its mail (`connector.connected` →
//! *connected*, `connector.synced` → *synced* with the run's breakdown read from the ledger,
//! `connector.token_rejected` → *token rejected*), sends it over SMTP, and records the outcome with
//! the webhooks' rules: a failed send is retried by [`super::next_attempt`] (5 s, doubling, capped
//! at an hour) and given up after 24 hours. Nothing in a mail comes from a token.

use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::queue::{Attempt, Channel, Deliverer, Queue, Words};
use crate::config::{Config, ConfigError, Problem};
use crate::mail::{
    Connected, Mail, Mailer, SmtpSettings, Synced, SyncedRow, Templates, TokenRejected,
};
use crate::store::contacts::{PushedPair, MAILTO};
use crate::store::outbox::Due;
use crate::store::{Store, StoreError, StoreHandle};
use crate::time::SystemClock;

/// What mails need from the configuration: service names and units, the portal link.
#[derive(Debug, Clone, Default)]
pub struct MailFacts {
    /// module → (service name, unit word).
    pub services: HashMap<String, (String, String)>,
    /// `gradient.integration_portal_url`.
    pub portal_url: Option<String>,
}

impl MailFacts {
    /// From the configuration.
    pub fn of(config: &Config) -> MailFacts {
        MailFacts {
            services: config
                .services
                .iter()
                .map(|s| {
                    // A quantity's unit is its name (`GB`); units are users or devices.
                    let unit = match (&s.quantity_name, s.unit) {
                        (Some(q), crate::domain::UnitKind::Quantity) => q.clone(),
                        _ => s.unit.as_str().to_string(),
                    };
                    (s.module.clone(), (s.name.clone(), unit))
                })
                .collect(),
            portal_url: config
                .gradient
                .integration_portal_url
                .as_ref()
                .map(|u| u.to_string()),
        }
    }
}

/// Everything the mail task needs, loaded at start (or reload): None when `[email]` is unset.
#[derive(Debug, Clone)]
pub struct MailSetup {
    mailer: Mailer,
    templates: Arc<Templates>,
    facts: MailFacts,
}

/// `[email]` made ready: the login read, the templates loaded, the mailer built. Every problem
/// names its key, in one configuration error.
pub fn setup(config: &Config) -> Result<Option<MailSetup>, ConfigError> {
    let Some(email) = &config.email else {
        return Ok(None);
    };
    let problem = |key: &str, message: String| ConfigError::Invalid {
        path: config.source.clone(),
        problems: vec![Problem {
            key: key.into(),
            message,
        }],
    };
    let credentials = email
        .credentials()
        .map_err(|m| problem("email.credentials_file", m.to_string()))?;
    let templates = Templates::load(email.templates_dir.as_deref())
        .map_err(|e| problem("email.templates_dir", e.to_string()))?;
    let mailer = Mailer::new(&SmtpSettings {
        url: email.smtp_url.to_string(),
        from: email.from.clone(),
        credentials,
    })
    .map_err(|e| problem("email.smtp_url", e.to_string()))?;
    Ok(Some(MailSetup {
        mailer,
        templates: Arc::new(templates),
        facts: MailFacts::of(config),
    }))
}

/// The mail task (the daemon runs it as one of its tasks): sends until `stop` is cancelled.
pub async fn deliver(store: StoreHandle, setup: MailSetup, stop: CancellationToken) {
    tracing::info!(server = %setup.mailer.server(), "mail to MSP contacts started");
    let task = Deliverer {
        store,
        channel: setup,
        clock: Arc::new(SystemClock),
    };
    tokio::select! {
        _ = task.run() => {}
        _ = stop.cancelled() => {}
    }
}

/// The mail as a delivery channel: the outbox's `mailto:` rows, each event made into its mail.
impl Channel for MailSetup {
    fn queue(&self) -> Queue {
        Queue::Mail
    }

    /// Mails are slower to send than webhooks: fewer per pass.
    const BATCH: u32 = 32;

    fn words(&self) -> Words {
        Words {
            sent: "mail sent",
            failed: "mail not sent",
            sent_is_news: true,
        }
    }

    fn shown(&self, due: &Due) -> String {
        due.url.trim_start_matches(MAILTO).to_string()
    }

    fn attempt<'a>(&'a self, store: &'a StoreHandle, due: &'a Due) -> Attempt<'a> {
        Box::pin(async move {
            let (facts, body, kind) = (self.facts.clone(), due.body.clone(), due.kind.clone());
            let mail = store
                .read(move |s| mail_for(s, &kind, &body, &facts))
                .await
                .map_err(|e| format!("cannot read the event's facts: {e}"))?
                .ok_or("the event's body is not one this build mails")?;
            let rendered = self.templates.render(&mail)?;
            let to = self.shown(due);
            // The error's chain (lettre's account of the SMTP conversation) carries no login.
            Ok(self.mailer.send(&to, &rendered).await?)
        })
    }
}

/// The mail an outbox event makes (None: not a mailed kind). The *synced* breakdown comes from the
/// ledger: the rows the run pushed for the connector, each with its change from the previous push.
pub fn mail_for(
    s: &Store,
    kind: &str,
    body: &str,
    facts: &MailFacts,
) -> Result<Option<Mail>, StoreError> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(None);
    };
    let data = &event["data"];
    let Some(connector) = data["connector"].as_str().map(String::from) else {
        return Ok(None);
    };
    let organization_name = match data["organization_name"].as_str() {
        Some(n) => Some(n.to_string()),
        None => s.connector(&connector)?.and_then(|c| c.organization_name),
    };
    Ok(Some(match kind {
        "connector.connected" => Mail::Connected(Connected {
            connector,
            organization_name,
        }),
        "connector.token_rejected" => Mail::TokenRejected(TokenRejected {
            connector,
            organization_name,
            portal_url: facts.portal_url.clone(),
        }),
        "connector.synced" => {
            let Some(run_id) = data["run"].as_i64() else {
                return Ok(None);
            };
            let rows = s
                .pushed_pairs(run_id, &connector)?
                .into_iter()
                .map(|p| synced_row(p, facts))
                .collect();
            Mail::Synced(Synced {
                connector,
                organization_name,
                run_id,
                outcome: data["outcome"].as_str().unwrap_or("").to_string(),
                rows,
            })
        }
        _ => return Ok(None),
    }))
}

/// One breakdown row: the service by its configured name and unit (the module id when no longer
/// configured), and the change from the previous push.
fn synced_row(p: PushedPair, facts: &MailFacts) -> SyncedRow {
    let (service, unit) = match facts.services.get(&p.module) {
        Some((name, unit)) => (name.clone(), Some(unit.clone())),
        None => (p.module.clone(), None),
    };
    SyncedRow {
        company: p.account_name,
        service,
        count: p.count.to_string(),
        unit,
        change: p.previous.map(|prev| p.count.change_from(prev)),
    }
}
