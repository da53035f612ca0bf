//! The mails as data and as text: [`Mail`] holds what one mail says, [`Templates`] renders its
//! subject, text part and HTML part (minijinja; `.html` templates auto-escape, so a customer
//! named `<script>` stays text), and the *synced* mail's CSV attachment is written here too.
//!
//! Template files (built in, each replaceable by a file of the same name in `templates_dir`):
//! `{kind}.subject.txt`, `{kind}.txt`, `{kind}.html` for kind `connected`, `synced`,
//! `token_rejected`.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};
use serde::Serialize;

/// The file name of the *synced* mail's attachment.
pub const ATTACHMENT: &str = "usage.csv";

/// Which of the three mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// The organization connected.
    Connected,
    /// A run pushed counts.
    Synced,
    /// Gradient rejected the token.
    TokenRejected,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [MailKind; 3] = [Self::Connected, Self::Synced, Self::TokenRejected];

    /// The one text form (the templates' file name stem).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Synced => "synced",
            Self::TokenRejected => "token_rejected",
        }
    }
}

/// *connected*: an MSP's organization connected.
#[derive(Debug, Clone, Serialize)]
pub struct Connected {
    /// The connector's id.
    pub connector: String,
    /// The organization Gradient names for the token.
    pub organization_name: Option<String>,
}

/// One row of the *synced* breakdown (one company × service the run pushed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncedRow {
    /// The company (the MSP's customer account) name.
    pub company: String,
    /// The service name.
    pub service: String,
    /// The count pushed, as text (`12`, a quantity `512.25`).
    pub count: String,
    /// The count's unit, when the service names one.
    pub unit: Option<String>,
    /// Change from the previous push of the same pair, signed (`+2`, `-1.5`, `+0`; None: the
    /// first push).
    pub change: Option<String>,
}

/// *synced*: one connector's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    /// The connector's id.
    pub connector: String,
    /// The organization's name.
    pub organization_name: Option<String>,
    /// The run.
    pub run_id: i64,
    /// The connector's outcome in the run (`ok`, `partial`, …).
    pub outcome: String,
    /// What was pushed, by company then service.
    pub rows: Vec<SyncedRow>,
}

/// *token rejected*: the MSP must paste a new token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRejected {
    /// The connector's id.
    pub connector: String,
    /// The organization's name.
    pub organization_name: Option<String>,
    /// Where the MSP pastes a new token (`gradient.integration_portal_url`).
    pub portal_url: Option<String>,
}

/// One mail's content.
#[derive(Debug, Clone)]
pub enum Mail {
    /// *connected*.
    Connected(Connected),
    /// *synced*.
    Synced(Synced),
    /// *token rejected*.
    TokenRejected(TokenRejected),
}

impl Mail {
    /// Its kind.
    pub fn kind(&self) -> MailKind {
        match self {
            Mail::Connected(_) => MailKind::Connected,
            Mail::Synced(_) => MailKind::Synced,
            Mail::TokenRejected(_) => MailKind::TokenRejected,
        }
    }

    fn context(&self) -> Value {
        match self {
            Mail::Connected(c) => Value::from(minijinja::value::Serde(c)),
            Mail::Synced(s) => {
                #[derive(Serialize)]
                struct Ctx<'a> {
                    #[serde(flatten)]
                    s: &'a Synced,
                    attachment: &'static str,
                }
                Value::from(minijinja::value::Serde(Ctx {
                    s,
                    attachment: ATTACHMENT,
                }))
            }
            Mail::TokenRejected(t) => Value::from(minijinja::value::Serde(t)),
        }
    }
}

/// A mail rendered: what the SMTP side sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject (one line).
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
    /// The CSV attachment (the *synced* mail only).
    pub csv: Option<String>,
}

/// A template could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// An override in `templates_dir` could not be read.
    #[error("cannot read the mail template {path}: {source}; fix the file or remove it to use the built-in one")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A template does not parse or does not render.
    #[error("the mail template {name} is not valid: {source}; see README \"E-mail to MSPs\" for its variables")]
    Template {
        /// The template's file name.
        name: String,
        /// minijinja's account.
        #[source]
        source: minijinja::Error,
    },
}

/// The built-in templates: (file name, source).
const BUILT_IN: [(&str, &str); 9] = [
    (
        "connected.subject.txt",
        include_str!("templates/connected.subject.txt"),
    ),
    ("connected.txt", include_str!("templates/connected.txt")),
    ("connected.html", include_str!("templates/connected.html")),
    (
        "synced.subject.txt",
        include_str!("templates/synced.subject.txt"),
    ),
    ("synced.txt", include_str!("templates/synced.txt")),
    ("synced.html", include_str!("templates/synced.html")),
    (
        "token_rejected.subject.txt",
        include_str!("templates/token_rejected.subject.txt"),
    ),
    (
        "token_rejected.txt",
        include_str!("templates/token_rejected.txt"),
    ),
    (
        "token_rejected.html",
        include_str!("templates/token_rejected.html"),
    ),
];

/// Every template file name, in the order README lists them.
pub fn template_names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|(n, _)| *n)
}

/// The nine templates, loaded once (overrides read from `templates_dir` at load).
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by `dir/NAME` when that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        // `.html` escapes HTML; `.txt` nothing (minijinja's default choice by file name).
        for (name, source) in BUILT_IN {
            let text = match dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => std::fs::read_to_string(&path)
                    .map_err(|source| TemplateError::Read { path, source })?,
                _ => source.to_string(),
            };
            env.add_template_owned(name.to_string(), text)
                .map_err(|source| TemplateError::Template {
                    name: name.into(),
                    source,
                })?;
        }
        Ok(Templates { env })
    }

    /// Renders one mail.
    pub fn render(&self, mail: &Mail) -> Result<Rendered, TemplateError> {
        let ctx = mail.context();
        let kind = mail.kind().as_str();
        let one = |suffix: &str| -> Result<String, TemplateError> {
            let name = format!("{kind}.{suffix}");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&ctx))
                .map_err(|source| TemplateError::Template { name, source })
        };
        let subject = one("subject.txt")?;
        // A subject is one line: control characters and newlines become spaces.
        let subject = subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rendered {
            subject,
            text: one("txt")?,
            html: one("html")?,
            csv: match mail {
                Mail::Synced(s) => Some(csv(&s.rows)),
                _ => None,
            },
        })
    }
}

/// The *synced* attachment: `company,service,count,unit,change` and one line per row (RFC 4180
/// quoting; a field a spreadsheet would run as a formula is prefixed with `'`).
pub fn csv(rows: &[SyncedRow]) -> String {
    let mut out = String::from("company,service,count,unit,change\r\n");
    for r in rows {
        let fields = [
            field(&r.company),
            field(&r.service),
            r.count.clone(),
            field(r.unit.as_deref().unwrap_or("")),
            r.change.clone().unwrap_or_default(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(company: &str) -> Mail {
        Mail::Synced(Synced {
            connector: "msp-1".into(),
            organization_name: Some("Acme MSP".into()),
            run_id: 7,
            outcome: "ok".into(),
            rows: vec![
                SyncedRow {
                    company: company.into(),
                    service: "Backup".into(),
                    count: "12".into(),
                    unit: Some("GB".into()),
                    change: Some("+2".into()),
                },
                SyncedRow {
                    company: "Globex, Inc.".into(),
                    service: "Mail".into(),
                    count: "3".into(),
                    unit: None,
                    change: None,
                },
            ],
        })
    }

    #[test]
    fn html_escapes_names_and_text_keeps_them() {
        let t = Templates::load(None).unwrap();
        let r = t.render(&synced("<script>alert(1)</script>")).unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(
            r.html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{}",
            r.html
        );
        assert!(
            r.text
                .contains("<script>alert(1)</script> / Backup: 12 GB (+2 since the previous push)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("Globex, Inc. / Mail: 3 (first push)"),
            "{}",
            r.text
        );
        assert_eq!(
            r.subject,
            "Usage sent to Gradient for Acme MSP: 2 counts (run 7)"
        );
    }

    #[test]
    fn the_csv_quotes_and_defuses_formulas() {
        let rows = vec![SyncedRow {
            company: "=HYPERLINK(\"x\")".into(),
            service: "a,b".into(),
            count: "-1".into(),
            unit: Some("seats".into()),
            change: Some("-4".into()),
        }];
        assert_eq!(
            csv(&rows),
            "company,service,count,unit,change\r\n\"'=HYPERLINK(\"\"x\"\")\",\"a,b\",-1,seats,-4\r\n"
        );
    }

    #[test]
    fn an_override_replaces_one_template_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("connected.subject.txt"),
            "Welcome {{ organization_name }}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let r = t
            .render(&Mail::Connected(Connected {
                connector: "c".into(),
                organization_name: Some("Initech".into()),
            }))
            .unwrap();
        assert_eq!(r.subject, "Welcome Initech");
        assert!(r.text.contains("Initech is now connected"));
        std::fs::write(dir.path().join("synced.html"), "{% for %}").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("synced.html"), "{e}");
    }

    #[test]
    fn token_rejected_names_the_portal_when_set() {
        let t = Templates::load(None).unwrap();
        let m = |portal: Option<&str>| {
            t.render(&Mail::TokenRejected(TokenRejected {
                connector: "c".into(),
                organization_name: None,
                portal_url: portal.map(String::from),
            }))
            .unwrap()
        };
        assert!(m(Some("https://vendor.example/gradient"))
            .html
            .contains("href=\"https:&#x2f;&#x2f;vendor.example&#x2f;gradient\""));
        assert!(!m(None).text.contains("http"));
    }
}
