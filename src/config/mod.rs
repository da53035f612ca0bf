//! Configuration: the one TOML file (plus `GRADIENT_CONNECTOR__SECTION__KEY` environment overrides),
//! read into typed structs and validated as a whole.
//!
//! Validation never stops at the first mistake: every problem is collected and names its key, so an
//! operator can fix a file in one pass. Secrets never sit in the TOML: the vendor API key is read from
//! a file (or the systemd credential `vendor-api-key`) into a [`SecretString`] only when a command
//! needs it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use config::{Environment, File, FileFormat, Value, ValueKind};
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

use crate::domain::{Cadence, MonthlyCount, UnitKind};
pub use crate::gradient::types::{CATEGORIES, SUBCATEGORIES};
use crate::gradient::ClientSettings;

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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[gradient]`: how to reach Gradient.
#[derive(Debug, Clone)]
pub struct GradientConfig {
    /// File holding the vendor API key (the systemd credential wins when present).
    pub vendor_api_key_file: PathBuf,
    /// How the client talks to Gradient (owned by `gradient`; read from this section).
    pub client: ClientSettings,
}

/// `[store]`: where the SQLite store lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store file.
    pub path: PathBuf,
    /// How long a writer waits for another writer's lock.
    pub busy_timeout: Duration,
}

/// `[schedule]`: when runs happen and what they count.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Daily or monthly figures.
    pub cadence: Cadence,
    /// Six-field cron expression (seconds first).
    pub cron: String,
    /// IANA time zone of the cron expression and of calendar months.
    pub timezone: Tz,
    /// Run once at start if a scheduled run was missed.
    pub catch_up: bool,
    /// Monthly cadence: how a month becomes one figure.
    pub monthly_count: MonthlyCount,
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
    /// Gradient category.
    pub category: String,
    /// Gradient subcategory.
    pub subcategory: String,
    /// Optional support article URL.
    pub support_article: Option<String>,
    /// Optional support contact.
    pub support_contact: Option<String>,
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
    /// `[log]`
    pub log: LogConfig,
    /// `[[service]]`
    pub services: Vec<ServiceConfig>,
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
        let root: config::Map<String, Value> =
            built
                .try_deserialize()
                .map_err(|e: config::ConfigError| ConfigError::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        let mut r = Reader::default();
        let cfg = r.read(path, base_dir, root);
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
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let cred = Path::new(&dir).join(VENDOR_KEY_CREDENTIAL);
            if cred.exists() {
                return cred;
            }
        }
        self.gradient.vendor_api_key_file.clone()
    }

    /// Loads the vendor API key (trimmed). Errors name the key and the file, never the content.
    pub fn load_vendor_key(&self) -> Result<SecretString, ConfigError> {
        let path = self.vendor_key_path();
        let problem = |message: String| {
            ConfigError::VendorKey(Problem {
                key: "gradient.vendor_api_key_file".into(),
                message,
            })
        };
        let raw = std::fs::read(&path).map_err(|e| {
            problem(format!(
                "cannot read the vendor API key file {}: {e}; create it (mode 0600) or point the key at it",
                path.display()
            ))
        })?;
        let text = String::from_utf8(raw).map_err(|_| {
            problem(format!(
                "the vendor API key file {} is not UTF-8 text",
                path.display()
            ))
        })?;
        let key = text.trim();
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

    /// The configured service for a module.
    pub fn service(&self, module: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.module == module)
    }
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

type Table = config::Map<String, Value>;

/// Walks the raw key tree, converting and validating each key, collecting every problem.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn read(&mut self, path: &Path, base_dir: &Path, mut root: Table) -> Option<Config> {
        const SECTIONS: &[&str] = &["gradient", "store", "schedule", "log", "service"];
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                self.problem(
                    display_key(key),
                    format!(
                        "unknown section or key; known sections: {}",
                        SECTIONS.join(", ")
                    ),
                );
            }
        }
        let mut gradient = self.section(&mut root, "gradient");
        let mut store = self.section(&mut root, "store");
        let mut schedule = self.section(&mut root, "schedule");
        let mut log = self.section(&mut root, "log");

        let gradient = self.gradient(&mut gradient, base_dir);
        let store = self.store(&mut store, base_dir);
        let schedule = self.schedule(&mut schedule);
        let log = self.log(&mut log);
        let services = self.services(root.remove("service"));
        Some(Config {
            source: path.to_path_buf(),
            gradient: gradient?,
            store: store?,
            schedule: schedule?,
            log: log?,
            services: services?,
            warnings: Vec::new(),
        })
    }

    fn section(&mut self, root: &mut Table, name: &str) -> Table {
        match root.remove(name) {
            None => Table::new(),
            Some(v) => match v.kind {
                ValueKind::Table(t) => t,
                _ => {
                    self.problem(name, "must be a table ([section])");
                    Table::new()
                }
            },
        }
    }

    fn unknown_keys(&mut self, section: &str, known: &[&str], rest: Table) {
        for key in rest.keys() {
            self.problem(
                format!("{section}.{}", display_key(key)),
                format!("unknown key; known keys: {}", known.join(", ")),
            );
        }
    }

    fn take_string(&mut self, t: &mut Table, section: &str, key: &str) -> Option<Option<String>> {
        match t.remove(key) {
            None => Some(None),
            Some(v) => match v.kind {
                ValueKind::String(s) => Some(Some(s)),
                other => {
                    self.problem(
                        format!("{section}.{key}"),
                        format!("must be a string, found {}", kind_name(&other)),
                    );
                    None
                }
            },
        }
    }

    fn take_int(
        &mut self,
        t: &mut Table,
        section: &str,
        key: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let full = format!("{section}.{key}");
        let n = match t.remove(key) {
            None => default,
            Some(v) => match v.kind {
                ValueKind::I64(n) => n,
                ValueKind::U64(n) => i64::try_from(n).unwrap_or(i64::MAX),
                ValueKind::I128(n) => i64::try_from(n).unwrap_or(i64::MAX),
                ValueKind::U128(n) => i64::try_from(n).unwrap_or(i64::MAX),
                ValueKind::String(s) => match s.trim().parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => {
                        self.problem(full, format!("must be a whole number, found {s:?}"));
                        return None;
                    }
                },
                other => {
                    self.problem(
                        full,
                        format!("must be a whole number, found {}", kind_name(&other)),
                    );
                    return None;
                }
            },
        };
        if !range.contains(&n) {
            self.problem(
                full,
                format!(
                    "must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        Some(n)
    }

    fn take_bool(
        &mut self,
        t: &mut Table,
        section: &str,
        key: &str,
        default: bool,
    ) -> Option<bool> {
        match t.remove(key) {
            None => Some(default),
            Some(v) => match v.kind {
                ValueKind::Boolean(b) => Some(b),
                ValueKind::String(s) if s == "true" => Some(true),
                ValueKind::String(s) if s == "false" => Some(false),
                other => {
                    self.problem(
                        format!("{section}.{key}"),
                        format!("must be true or false, found {}", kind_name(&other)),
                    );
                    None
                }
            },
        }
    }

    fn take_choice<T: Copy>(
        &mut self,
        t: &mut Table,
        section: &str,
        key: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.take_string(t, section, key)?;
        let Some(s) = s else { return Some(default) };
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.problem(
                    format!("{section}.{key}"),
                    format!("must be one of {}, found {s:?}", names.join(", ")),
                );
                None
            }
        }
    }

    fn gradient(&mut self, t: &mut Table, base_dir: &Path) -> Option<GradientConfig> {
        let s = "gradient";
        let base_url = self.take_string(t, s, "base_url");
        let base_url = match base_url {
            None => None,
            Some(raw) => {
                let raw = raw.unwrap_or_else(|| "https://app.usegradient.com".into());
                match Url::parse(&raw) {
                    Err(e) => {
                        self.problem("gradient.base_url", format!("not a URL ({e}): {raw:?}"));
                        None
                    }
                    Ok(u) if u.scheme() == "https" => Some(u),
                    Ok(u) if u.scheme() == "http" && is_loopback(&u) => Some(u),
                    Ok(u) if u.scheme() == "http" => {
                        self.problem(
                            "gradient.base_url",
                            format!("must use https unless the host is loopback (127.0.0.1, ::1, localhost); found {raw:?}"),
                        );
                        drop(u);
                        None
                    }
                    Ok(_) => {
                        self.problem(
                            "gradient.base_url",
                            format!("must be an https:// URL, found {raw:?}"),
                        );
                        None
                    }
                }
            }
        };
        let key_file = self.take_string(t, s, "vendor_api_key_file").map(|p| {
            resolve(
                base_dir,
                p.unwrap_or_else(|| "/etc/gradient-connector/vendor-api-key".into()),
            )
        });
        let rps = self.take_int(t, s, "requests_per_second", 90, 1..=100);
        let in_flight = self.take_int(t, s, "max_in_flight", 8, 1..=256);
        let timeout = self.take_int(t, s, "request_timeout_secs", 30, 1..=600);
        let attempts = self.take_int(t, s, "max_attempts", 6, 1..=20);
        let initial = self.take_int(t, s, "retry_initial_delay_ms", 500, 1..=60_000);
        let max_delay = self.take_int(t, s, "retry_max_delay_secs", 30, 1..=3600);
        let rest = std::mem::take(t);
        self.unknown_keys(s, &gradient_keys(), rest);
        Some(GradientConfig {
            vendor_api_key_file: key_file?,
            client: ClientSettings {
                base_url: base_url?,
                requests_per_second: u32::try_from(rps?).ok()?,
                max_in_flight: usize::try_from(in_flight?).ok()?,
                request_timeout: Duration::from_secs(u64::try_from(timeout?).ok()?),
                max_attempts: u32::try_from(attempts?).ok()?,
                retry_initial_delay: Duration::from_millis(u64::try_from(initial?).ok()?),
                retry_max_delay: Duration::from_secs(u64::try_from(max_delay?).ok()?),
            },
        })
    }

    fn store(&mut self, t: &mut Table, base_dir: &Path) -> Option<StoreConfig> {
        let s = "store";
        let path = self.take_string(t, s, "path").map(|p| {
            resolve(
                base_dir,
                p.unwrap_or_else(|| "/var/lib/gradient-connector/store.db".into()),
            )
        });
        let busy = self.take_int(t, s, "busy_timeout_secs", 30, 0..=3600);
        let rest = std::mem::take(t);
        self.unknown_keys(s, &["path", "busy_timeout_secs"], rest);
        Some(StoreConfig {
            path: path?,
            busy_timeout: Duration::from_secs(u64::try_from(busy?).ok()?),
        })
    }

    fn schedule(&mut self, t: &mut Table) -> Option<ScheduleConfig> {
        let s = "schedule";
        let cadence = self.take_choice(
            t,
            s,
            "cadence",
            Cadence::Daily,
            &[("daily", Cadence::Daily), ("monthly", Cadence::Monthly)],
        );
        let cron = self.take_string(t, s, "cron").and_then(|c| {
            let c = c.unwrap_or_else(|| "0 0 2 * * *".into());
            match crate::schedule::parse_cron(&c) {
                Ok(_) => Some(c),
                Err(e) => {
                    self.problem("schedule.cron", e.to_string());
                    None
                }
            }
        });
        let timezone = self.take_string(t, s, "timezone").and_then(|z| {
            let z = z.unwrap_or_else(|| "UTC".into());
            match Tz::from_str(&z) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.problem(
                        "schedule.timezone",
                        format!(
                            "unknown IANA time zone {z:?} (e.g. \"UTC\", \"America/New_York\")"
                        ),
                    );
                    None
                }
            }
        });
        let catch_up = self.take_bool(t, s, "catch_up", true);
        let monthly = self.take_choice(
            t,
            s,
            "monthly_count",
            MonthlyCount::Peak,
            &[
                ("peak", MonthlyCount::Peak),
                ("end", MonthlyCount::End),
                ("distinct", MonthlyCount::Distinct),
            ],
        );
        let rest = std::mem::take(t);
        self.unknown_keys(
            s,
            &["cadence", "cron", "timezone", "catch_up", "monthly_count"],
            rest,
        );
        Some(ScheduleConfig {
            cadence: cadence?,
            cron: cron?,
            timezone: timezone?,
            catch_up: catch_up?,
            monthly_count: monthly?,
        })
    }

    fn log(&mut self, t: &mut Table) -> Option<LogConfig> {
        let s = "log";
        let format = self.take_choice(
            t,
            s,
            "format",
            LogFormat::Text,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        );
        let level = self.take_string(t, s, "level").and_then(|l| {
            let l = l.unwrap_or_else(|| "info".into());
            match tracing_subscriber::EnvFilter::try_new(&l) {
                Ok(_) => Some(l),
                Err(e) => {
                    self.problem("log.level", format!("not a level or filter ({e}): {l:?}"));
                    None
                }
            }
        });
        let rest = std::mem::take(t);
        self.unknown_keys(s, &["format", "level"], rest);
        Some(LogConfig {
            format: format?,
            level: level?,
        })
    }

    fn services(&mut self, raw: Option<Value>) -> Option<Vec<ServiceConfig>> {
        let items = match raw.map(|v| v.kind) {
            None => Vec::new(),
            Some(ValueKind::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "service",
                    format!(
                        "must be an array of tables ([[service]]), found {}",
                        kind_name(&other)
                    ),
                );
                return None;
            }
        };
        if items.is_empty() {
            self.problem(
                "service",
                "no [[service]] is configured: add one per module that Gradient should bill",
            );
        }
        let mut out = Vec::new();
        let mut ok = true;
        let mut modules = HashSet::new();
        let mut names = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let sec = format!("service[{i}]");
            let mut t = match item.kind {
                ValueKind::Table(t) => t,
                other => {
                    self.problem(sec, format!("must be a table, found {}", kind_name(&other)));
                    ok = false;
                    continue;
                }
            };
            let module = self.required(&mut t, &sec, "module");
            let name = self.required(&mut t, &sec, "name");
            let description = self.take_string(&mut t, &sec, "description");
            let unit = self
                .take_string(&mut t, &sec, "unit")
                .and_then(|u| match u.as_deref() {
                    Some("users") => Some(UnitKind::Users),
                    Some("devices") => Some(UnitKind::Devices),
                    Some(other) => {
                        self.problem(
                            format!("{sec}.unit"),
                            format!("must be \"users\" or \"devices\", found {other:?}"),
                        );
                        None
                    }
                    None => {
                        self.problem(format!("{sec}.unit"), "missing: \"users\" or \"devices\"");
                        None
                    }
                });
            let category = self.required(&mut t, &sec, "category").and_then(|c| {
                if CATEGORIES.contains(&c.as_str()) {
                    Some(c)
                } else {
                    self.problem(
                        format!("{sec}.category"),
                        format!(
                            "unknown Gradient category {c:?} (exact, case-sensitive); one of: {}",
                            CATEGORIES.join(", ")
                        ),
                    );
                    None
                }
            });
            let subcategory = self.required(&mut t, &sec, "subcategory").and_then(|c| {
                if SUBCATEGORIES.contains(&c.as_str()) {
                    Some(c)
                } else {
                    self.problem(
                        format!("{sec}.subcategory"),
                        format!("unknown Gradient subcategory {c:?} (exact, case-sensitive; see GRADIENT_API.md or the README for the list)"),
                    );
                    None
                }
            });
            let support_article = self.take_string(&mut t, &sec, "support_article");
            let support_contact = self.take_string(&mut t, &sec, "support_contact");
            self.unknown_keys(
                &sec,
                &[
                    "module",
                    "name",
                    "description",
                    "unit",
                    "category",
                    "subcategory",
                    "support_article",
                    "support_contact",
                ],
                t,
            );
            if let Some(m) = &module {
                if !modules.insert(m.clone()) {
                    self.problem(
                        format!("{sec}.module"),
                        format!("duplicate module {m:?}: each module is one service"),
                    );
                }
            }
            if let Some(n) = &name {
                if !names.insert(n.clone()) {
                    self.problem(
                        format!("{sec}.name"),
                        format!("duplicate service name {n:?}: Gradient matches services by name"),
                    );
                }
            }
            match (
                module,
                name,
                description,
                unit,
                category,
                subcategory,
                support_article,
                support_contact,
            ) {
                (
                    Some(module),
                    Some(name),
                    Some(description),
                    Some(unit),
                    Some(category),
                    Some(subcategory),
                    Some(support_article),
                    Some(support_contact),
                ) => out.push(ServiceConfig {
                    description: description.unwrap_or_else(|| name.clone()),
                    module,
                    name,
                    unit,
                    category,
                    subcategory,
                    support_article,
                    support_contact,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn required(&mut self, t: &mut Table, section: &str, key: &str) -> Option<String> {
        match self.take_string(t, section, key)? {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problem(format!("{section}.{key}"), "must not be empty");
                None
            }
            None => {
                self.problem(format!("{section}.{key}"), "missing");
                None
            }
        }
    }
}

fn gradient_keys() -> Vec<&'static str> {
    vec![
        "base_url",
        "vendor_api_key_file",
        "requests_per_second",
        "max_in_flight",
        "request_timeout_secs",
        "max_attempts",
        "retry_initial_delay_ms",
        "retry_max_delay_secs",
    ]
}

/// A key as TOML would write it: bare when it can be, quoted otherwise (an empty key is `""`).
fn display_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn resolve(base_dir: &Path, p: String) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base_dir.join(p)
    }
}

fn kind_name(k: &ValueKind) -> &'static str {
    match k {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "a number"
        }
        ValueKind::Float(_) => "a decimal number",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "an array",
    }
}

#[cfg(test)]
mod tests;
