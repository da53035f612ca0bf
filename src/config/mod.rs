//! Configuration: the one TOML file (plus `GRADIENT_CONNECTOR__SECTION__KEY` environment overrides),
//! read into typed structs and validated as a whole.
//!
//! The `config` crate layers the file and the environment and deserializes them into serde structs
//! (`file`: one per section, each field a key, every value kept as given and undeclared keys
//! caught). One validation (`reader`) then reads each key by its declaration in [`KEYS`] (kind,
//! default, meaning — the same table makes the README's [`reference_table`], and a test holds the
//! structs' fields equal to it), defaults the unset ones and assembles the typed structs below.
//!
//! Validation never stops at the first mistake: every problem is collected and names its key, so an
//! operator can fix a file in one pass. Secrets never sit in the TOML: the vendor API key, the API
//! token, webhook secrets and the store key are read from files (or systemd credentials) by the one
//! key-file reader ([`keyfile`]) into secret types, only when a command needs them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use config::{Environment, File, FileFormat};
use secrecy::SecretString;
use url::Url;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gradient-connector/gradient-connector.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "GRADIENT_CONNECTOR_CONFIG";
/// Prefix of per-key environment overrides (`GRADIENT_CONNECTOR__SECTION__KEY`).
pub const ENV_PREFIX: &str = "GRADIENT_CONNECTOR";
/// Name of the systemd credential holding the vendor API key.
pub const VENDOR_KEY_CREDENTIAL: &str = "vendor-api-key";

mod email;
pub use email::{EmailConfig, SMTP_CREDENTIAL};
mod file;
pub mod keyfile;
mod keys;
mod reader;
mod secrets;
mod sources;
mod values;

pub use keys::{reference_table, Fallback, Key, Kind, KEYS, SERVICE, SOURCE, WEBHOOK};
pub use secrets::{SecretTextError, WebhookSecret, WEBHOOK_SECRET_MAX_BYTES};
pub use sources::{SourceConfig, SourceFrom};
pub use values::{Found, ValueProblem, LOG_LEVELS};

use crate::domain::{Cadence, EventKind, MonthlyCount, Targets, UnitKind};
pub use crate::gradient::types::{CATEGORIES, SUBCATEGORIES};
use crate::gradient::ClientSettings;
use crate::schedule::Schedule;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not TOML.
    #[error("cannot read configuration {path}: {reason}")]
    Unreadable {
        /// The configuration file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file was read but some values are wrong; each problem names its key.
    #[error("configuration {path} has {} problem(s):\n{}", problems.len(), render_problems(problems))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The vendor API key could not be loaded.
    #[error("{0}")]
    VendorKey(Problem),
    /// The store key could not be loaded.
    #[error("{0}")]
    StoreKey(Problem),
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem (or warning) found in the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `schedule.cron` or `service[2].category`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Log output format (`log.format`: `text` or `json`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Every text form, in declaration order.
    pub fn words() -> &'static [&'static str] {
        <Self as strum::VariantNames>::VARIANTS
    }
}

/// `[gradient]`: how to reach Gradient.
#[derive(Debug, Clone)]
pub struct GradientConfig {
    /// File holding the vendor API key (the systemd credential wins when present).
    pub vendor_api_key_file: PathBuf,
    /// How the client talks to Gradient (owned by `gradient`; read from this section).
    pub client: ClientSettings,
    /// A run's overall deadline: after it the remaining pairs are recorded `failed`.
    pub run_deadline: Duration,
    /// The vendor profile's `integrationPortalUrl`; None: not managed.
    pub integration_portal_url: Option<Url>,
    /// The vendor profile's `vendorSupportPageUrl`; None: not managed.
    pub support_page_url: Option<Url>,
}

/// `[store]`: where the SQLite store lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store file.
    pub path: PathBuf,
    /// How long a writer waits for another writer's lock.
    pub busy_timeout: Duration,
    /// The store key file as configured (the systemd credential `store-key` wins when present;
    /// unset: see [`Config::store_key_path`]).
    pub key_file: Option<PathBuf>,
    /// Ledger rows and finished runs older than this many days are pruned after each run; 0 keeps
    /// everything.
    pub ledger_retention_days: u32,
}

/// `[inventory]`: how the vendor's inventory comes in.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// The largest share (percent) of a channel's protected units or workspaces a snapshot may
    /// drop without `--allow-shrink`.
    pub max_snapshot_shrink_percent: u32,
    /// With sources: a run whose sources were not all pulled successfully within this many hours
    /// pushes nothing (0: no such rule).
    pub max_age_hours: u32,
}

/// `[schedule]`: when runs happen and what they count.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Daily or monthly figures.
    pub cadence: Cadence,
    /// Six-field cron expression (seconds first), as written (for display).
    pub cron: String,
    /// IANA time zone of the cron expression and of calendar months.
    pub timezone: Tz,
    /// Run once at start if a scheduled run was missed.
    pub catch_up: bool,
    /// Monthly cadence: how a month becomes one figure.
    pub monthly_count: MonthlyCount,
    /// Run a connector's first sync as soon as its token is pasted.
    pub sync_on_connect: bool,
    /// `cron` in `timezone`, parsed at load by the same function that judges it.
    pub parsed: Schedule,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Level or `tracing` filter directive (`RUST_LOG` wins when set).
    pub level: String,
}

/// One `[[service]]`: a module of ours that is a service (SKU) in Gradient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Module id used in the inventory.
    pub module: String,
    /// Service name in Gradient (matched exactly against the catalogue).
    pub name: String,
    /// Service description.
    pub description: String,
    /// What the service counts.
    pub unit: UnitKind,
    /// A quantity's unit name (`GB`), shown beside its figures.
    pub quantity_name: Option<String>,
    /// Decimals a quantity is rounded up to (0..=6).
    pub decimals: u8,
    /// Its own monthly rule, overriding `[schedule] monthly_count`.
    pub monthly_count: Option<MonthlyCount>,
    /// Gradient category.
    pub category: String,
    /// Gradient subcategory.
    pub subcategory: String,
    /// Optional support article URL.
    pub support_article: Option<String>,
    /// Optional support contact.
    pub support_contact: Option<String>,
}

/// Where the control API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiListen {
    /// No API.
    Off,
    /// A unix socket.
    Unix(PathBuf),
    /// TCP (bearer token; TLS unless loopback).
    Tcp(std::net::SocketAddr),
}

impl ApiListen {
    /// `""` → off, `unix:PATH` (a relative PATH resolves against `base_dir`, the configuration
    /// file's directory, like every other path), or `IP:PORT` (`localhost:PORT` means 127.0.0.1).
    pub fn parse(text: &str, base_dir: &Path) -> Result<ApiListen, ListenError> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(ApiListen::Off);
        }
        if let Some(p) = t.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ListenError::NoSocketPath(t.to_string()));
            }
            return Ok(ApiListen::Unix(base_dir.join(p)));
        }
        let t = t.replacen("localhost:", "127.0.0.1:", 1);
        t.parse::<std::net::SocketAddr>()
            .map(ApiListen::Tcp)
            .map_err(|source| ListenError::NotAnAddress {
                text: text.to_string(),
                source,
            })
    }
}

/// An `api.listen` that is none of the forms it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// `unix:` without a path.
    #[error("a unix socket needs a path (unix:/run/gradient-connector/api.sock), found {0:?}")]
    NoSocketPath(String),
    /// Neither a socket nor an address.
    #[error("must be \"unix:PATH\", \"IP:PORT\" or empty, found {text:?}")]
    NotAnAddress {
        /// The text.
        text: String,
        /// What the address parser said.
        #[source]
        source: std::net::AddrParseError,
    },
}

impl std::fmt::Display for ApiListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiListen::Off => f.write_str("off"),
            ApiListen::Unix(p) => write!(f, "unix:{}", p.display()),
            ApiListen::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// `[api]`: the control API (the vendor console's way in).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where it listens.
    pub listen: ApiListen,
    /// Whether `listen` is the default (then a socket that cannot be served is a warning).
    pub listen_is_default: bool,
    /// Unix socket permissions.
    pub socket_mode: u32,
    /// Bearer token file (TCP).
    pub token_file: PathBuf,
    /// TLS certificate chain (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Connections served at once (more are refused at accept).
    pub max_connections: usize,
    /// Largest `POST /v1/inventory` body, in bytes.
    pub max_inventory_bytes: u64,
}

/// One `[[webhook]]`: a receiver of events (the vendor's console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: Url,
    /// The file holding the signing secret (`whsec_` + base64); read by [`WebhookConfig::load_secret`].
    pub secret_file: PathBuf,
    /// The events it gets (default: all).
    pub events: Vec<EventKind>,
}

impl WebhookConfig {
    /// Reads and parses the secret file (at most [`WEBHOOK_SECRET_MAX_BYTES`]); a problem names
    /// `webhook[index].secret_file` and the file, never the content.
    pub fn load_secret(&self, index: usize) -> Result<WebhookSecret, Problem> {
        use secrecy::ExposeSecret;
        let problem = |message: String| Problem {
            key: format!("{WEBHOOK}[{index}].secret_file"),
            message,
        };
        let text = keyfile::read_key_file(&self.secret_file, WEBHOOK_SECRET_MAX_BYTES)
            .map_err(|e| problem(e.to_string()))?;
        WebhookSecret::parse(text.expose_secret())
            .map_err(|m| problem(format!("{}: {m}", self.secret_file.display())))
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    /// `[gradient]`
    pub gradient: GradientConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[schedule]`
    pub schedule: ScheduleConfig,
    /// `[inventory]`.
    pub inventory: InventoryConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[[service]]`
    pub services: Vec<ServiceConfig>,
    /// `[api]`
    pub api: ApiConfig,
    /// `[[webhook]]` (none: no event is written).
    pub webhooks: Vec<WebhookConfig>,
    /// `[[source]]` (none: the inventory comes by `import` and the API only).
    pub sources: Vec<SourceConfig>,
    /// `[email]` (None: `smtp_url` unset, no mail).
    pub email: Option<EmailConfig>,
    /// Non-fatal findings (printed by `check-config`, logged by the daemon).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// The configuration path from the command line, `$GRADIENT_CONNECTOR_CONFIG`, or the default.
    pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
        if let Some(p) = cli {
            return p.to_path_buf();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads and validates the file plus environment overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        Self::load_with_env(path, env)
    }

    /// Reads and validates the file plus the given environment overrides (for tests).
    pub fn load_with_env(
        path: &Path,
        env: BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("{e} (pass --config PATH or set {CONFIG_ENV})"),
        })?;
        Self::from_toml(&text, path, env)
    }

    /// Validates TOML text as if read from `path` (relative paths resolve against its directory),
    /// with the given environment overrides. Reads no file.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let env_vars = reader::env_vars(env.keys());
        let source = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .ignore_empty(true)
            .source(Some(env.into_iter().collect()));
        let built = config::Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .add_source(source)
            .build()
            .map_err(|e| ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: format!("not valid TOML: {e}"),
            })?;
        let file: file::ConfigFile =
            built
                .try_deserialize()
                .map_err(|e: config::ConfigError| ConfigError::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        let mut r = reader::Reader::new(base_dir, env_vars);
        let cfg = r.read(path, file);
        if r.problems.is_empty() {
            if let Some(mut cfg) = cfg {
                cfg.warnings = r.warnings;
                return Ok(cfg);
            }
        }
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: r.problems,
        })
    }

    /// Where the vendor key is read from: the systemd credential when present, else the key file.
    pub fn vendor_key_path(&self) -> PathBuf {
        keyfile::credential_or(VENDOR_KEY_CREDENTIAL, &self.gradient.vendor_api_key_file)
    }

    /// Loads the vendor API key (trimmed). Errors name the key and the file, never the content.
    pub fn load_vendor_key(&self) -> Result<SecretString, ConfigError> {
        use secrecy::ExposeSecret;
        let path = self.vendor_key_path();
        let problem = |message: String| {
            ConfigError::VendorKey(Problem {
                key: "gradient.vendor_api_key_file".into(),
                message,
            })
        };
        let text = keyfile::read_key_file(&path, keyfile::KEY_FILE_MAX_BYTES)
            .map_err(|e| problem(e.to_string()))?;
        let key = text.expose_secret().trim();
        if key.is_empty() {
            return Err(problem(format!(
                "the vendor API key file {} is empty; paste the vendor API key Gradient issued",
                path.display()
            )));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(problem(format!(
                "the vendor API key file {} holds more than one line or word; it must hold the key alone",
                path.display()
            )));
        }
        Ok(SecretString::from(key.to_owned()))
    }

    /// Checks that the vendor key loads and warns when its file is readable by group or others.
    pub fn check_vendor_key(&self) -> (Vec<Problem>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        match self.load_vendor_key() {
            Ok(_) => {
                if let Some(w) =
                    loose_permissions(&self.vendor_key_path(), "gradient.vendor_api_key_file")
                {
                    warnings.push(w);
                }
            }
            Err(ConfigError::VendorKey(p)) => problems.push(p),
            Err(other) => problems.push(Problem {
                key: "gradient.vendor_api_key_file".into(),
                message: other.to_string(),
            }),
        }
        (problems, warnings)
    }

    /// Loads every webhook's secret: problems name `webhook[i].secret_file`; a file readable by
    /// group or others is a warning. (`check-config` and the daemon's start.)
    pub fn check_webhook_secrets(&self) -> (Vec<Problem>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (i, h) in self.webhooks.iter().enumerate() {
            match h.load_secret(i) {
                Ok(_) => warnings.extend(loose_permissions(
                    &h.secret_file,
                    &format!("{WEBHOOK}[{i}].secret_file"),
                )),
                Err(p) => problems.push(p),
            }
        }
        (problems, warnings)
    }

    /// The webhook urls that get events of `kind` (empty: write no event).
    pub fn webhook_targets(&self, kind: EventKind) -> Vec<String> {
        webhook_targets(&self.webhooks, kind)
    }

    /// Who hears of what happens: the webhooks, and the contacts when `[email]` is set.
    pub fn audience(&self) -> Audience {
        Audience {
            webhooks: self.webhooks.clone(),
            mail: self.email.is_some(),
        }
    }

    /// Who hears of an event of `kind` ([`Audience::targets_of`]).
    pub fn targets(&self, kind: EventKind) -> Targets {
        Audience::targets_of(&self.webhooks, self.email.is_some(), kind)
    }

    /// The module ids the `[[service]]` entries name.
    pub fn service_modules(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.module.as_str()).collect()
    }

    /// Module → unit name of every quantity service that names one (`GB`).
    pub fn quantity_names(&self) -> std::collections::HashMap<String, String> {
        self.services
            .iter()
            .filter(|s| s.unit == UnitKind::Quantity)
            .filter_map(|s| Some((s.module.clone(), s.quantity_name.clone()?)))
            .collect()
    }

    /// The configured service for a module.
    pub fn service(&self, module: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.module == module)
    }
}

/// Who hears of the events a change writes: the `[[webhook]]`s, and the connectors' contacts when
/// mail is configured (`[email]`; without it no mail delivery is written, so mail set up later
/// never sends old news).
#[derive(Debug, Clone, Default)]
pub struct Audience {
    /// `[[webhook]]`.
    pub webhooks: Vec<WebhookConfig>,
    /// Whether `[email]` is configured.
    pub mail: bool,
}

impl Audience {
    /// The targets of an event of `kind`.
    pub fn targets(&self, kind: EventKind) -> Targets {
        Audience::targets_of(&self.webhooks, self.mail, kind)
    }

    /// The targets of an event of `kind` for these webhooks, mailed or not.
    pub fn targets_of(hooks: &[WebhookConfig], mail: bool, kind: EventKind) -> Targets {
        Targets::webhooks(webhook_targets(hooks, kind)).mailing(mail)
    }
}

/// The urls of the webhooks among `hooks` that get events of `kind` (empty: write no event).
pub fn webhook_targets(hooks: &[WebhookConfig], kind: EventKind) -> Vec<String> {
    hooks
        .iter()
        .filter(|h| h.events.contains(&kind))
        .map(|h| h.url.to_string())
        .collect()
}

/// A warning when `path` is readable by group or others (secrets and the store must not be).
pub fn loose_permissions(path: &Path, key: &str) -> Option<Problem> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| Problem {
        key: key.into(),
        message: format!(
            "{} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ),
    })
}

/// Whether a URL's host is the loopback interface (where plain http is allowed).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests;
