//! `validate`: reads the file's sections ([`ConfigFile`], as serde filled it) key by key as
//! [`KEYS`](super::keys::KEYS) declares them — checking every value by its kind, defaulting the
//! unset ones, collecting every problem by key — and assembles the typed configuration.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use config::ValueKind;

mod email;
mod services;
mod sources;

use super::file::{ConfigFile, Entries, Keys, Part, WebhookKeys};
use super::keys::{self, Fallback, Kind, WEBHOOK};
use super::values::{kind_name, Val, ValueProblem};
use super::{
    ApiConfig, ApiListen, Config, GradientConfig, InventoryConfig, LogConfig, Problem,
    ScheduleConfig, StoreConfig, WebhookConfig,
};
use crate::domain::EventKind;
use crate::gradient::ClientSettings;
use crate::schedule::Schedule;

/// Reads the file's sections key by key, converting and validating each value, collecting every
/// problem.
pub(super) struct Reader<'a> {
    /// Relative paths resolve against this directory (the configuration file's).
    base_dir: &'a Path,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// Non-fatal findings.
    pub warnings: Vec<Problem>,
    /// Keys set from the environment (`gradient.max_in_flight`) → their variable
    /// (`GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT`): a problem with such a key names the variable.
    env_vars: HashMap<String, String>,
}

/// The keys the environment overrides, each mapped to its variable: the `config` crate reads
/// `GRADIENT_CONNECTOR__GRADIENT__MAX_IN_FLIGHT` as `gradient.max_in_flight`.
pub(super) fn env_vars<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, String> {
    let prefix = format!("{}__", super::ENV_PREFIX);
    names
        .filter_map(|var| {
            let rest = var.strip_prefix(&prefix)?;
            let key = rest
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase();
            Some((key, var.clone()))
        })
        .collect()
}

/// One section's checked values (each `[[service]]` entry is a section of its own).
struct Section {
    /// How problems name the section: `gradient`, `service[2] (module "edr")`.
    name: String,
    /// Values read (or defaulted) and checked.
    vals: HashMap<&'static str, Val>,
    /// Keys whose value was refused (their problem is recorded).
    refused: HashSet<&'static str>,
    /// Keys read as another kind than declared: a bug in this module, reported as a problem.
    misread: Vec<Problem>,
}

impl Section {
    fn take<T>(&mut self, key: &'static str, want: fn(Val) -> Result<T, Val>) -> Option<T> {
        match want(self.vals.remove(key)?) {
            Ok(v) => Some(v),
            Err(other) => {
                self.misread.push(Problem {
                    key: format!("{}.{key}", self.name),
                    message: format!("internal error: read as another kind than declared ({other:?}); please report"),
                });
                None
            }
        }
    }

    fn str(&mut self, key: &'static str) -> Option<String> {
        self.take(key, |v| match v {
            Val::Str(s) => Ok(s),
            other => Err(other),
        })
    }

    /// An optional key: `None` when its value was refused, `Some(None)` when unset.
    fn opt_str(&mut self, key: &'static str) -> Option<Option<String>> {
        if self.refused.contains(key) {
            return None;
        }
        Some(self.str(key))
    }

    /// An optional word: `None` when its value was refused, `Some(None)` when unset.
    fn opt_word<T: FromStr>(&mut self, key: &'static str) -> Option<Option<T>> {
        if self.refused.contains(key) {
            return None;
        }
        Some(self.word(key))
    }

    /// A word of an enum, parsed with the enum's own `FromStr` (the table checked it is one).
    fn word<T: FromStr>(&mut self, key: &'static str) -> Option<T> {
        self.take(key, |v| match v {
            Val::Str(s) => s.parse().map_err(|_| Val::Str(s)),
            other => Err(other),
        })
    }

    /// A whole number, converted to the field's type (the table's range makes it fit).
    fn num<T: TryFrom<i64>>(&mut self, key: &'static str) -> Option<T> {
        self.take(key, |v| match v {
            Val::Int(n) => T::try_from(n).map_err(|_| Val::Int(n)),
            other => Err(other),
        })
    }

    fn bool(&mut self, key: &'static str) -> Option<bool> {
        self.take(key, |v| match v {
            Val::Bool(b) => Ok(b),
            other => Err(other),
        })
    }

    fn path(&mut self, key: &'static str) -> Option<std::path::PathBuf> {
        self.take(key, |v| match v {
            Val::Path(p) => Ok(p),
            other => Err(other),
        })
    }

    /// An optional path: `None` when its value was refused, `Some(None)` when unset.
    fn opt_path(&mut self, key: &'static str) -> Option<Option<std::path::PathBuf>> {
        if self.refused.contains(key) {
            return None;
        }
        Some(self.path(key))
    }

    fn url(&mut self, key: &'static str) -> Option<url::Url> {
        self.take(key, |v| match v {
            Val::Url(u) => Ok(u),
            other => Err(other),
        })
    }

    /// An optional URL: `None` when its value was refused, `Some(None)` when unset (or empty).
    fn opt_url(&mut self, key: &'static str) -> Option<Option<url::Url>> {
        if self.refused.contains(key) {
            return None;
        }
        Some(self.url(key))
    }

    /// An optional list (`Argv`): `None` when its value was refused, `Some(None)` when unset.
    fn opt_words(&mut self, key: &'static str) -> Option<Option<Vec<String>>> {
        if self.refused.contains(key) {
            return None;
        }
        Some(self.take(key, |v| match v {
            Val::Words(ws) => Ok(ws),
            other => Err(other),
        }))
    }

    /// A list of words, each parsed with the enum's own `FromStr` (the table checked them).
    fn words<T: FromStr>(&mut self, key: &'static str) -> Option<Vec<T>> {
        self.take(key, |v| match v {
            Val::Words(ws) => {
                let parsed: Result<Vec<T>, ()> =
                    ws.iter().map(|w| w.parse().map_err(|_| ())).collect();
                parsed.map_err(|_| Val::Words(ws))
            }
            other => Err(other),
        })
    }

    fn tz(&mut self, key: &'static str) -> Option<chrono_tz::Tz> {
        self.take(key, |v| match v {
            Val::Tz(z) => Ok(z),
            other => Err(other),
        })
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(base_dir: &'a Path, env_vars: HashMap<String, String>) -> Self {
        Reader {
            base_dir,
            problems: Vec::new(),
            warnings: Vec::new(),
            env_vars,
        }
    }

    /// Records a problem; a key the environment set is named by its variable.
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let (key, mut message) = (key.into(), message.into());
        let key = match self.env_vars.get(&key) {
            Some(var) => {
                message.push_str(&format!(
                    " (set by the environment variable {var}, which overrides {key} of the file)"
                ));
                var.clone()
            }
            None => key,
        };
        self.problems.push(Problem { key, message });
    }

    /// `validate`: every section of the file read by its declared keys into the typed
    /// configuration, every problem recorded (None when any key was refused).
    pub(super) fn read(&mut self, path: &Path, file: ConfigFile) -> Option<Config> {
        let sections = keys::sections();
        for key in file.unknown.keys() {
            self.problem(
                display_key(key),
                format!(
                    "unknown section or key; known sections: {}",
                    sections.join(", ")
                ),
            );
        }
        let gradient = self.section(file.gradient, "gradient");
        let store = self.section(file.store, "store");
        let schedule = self.section(file.schedule, "schedule");
        let inventory = self.section(file.inventory, "inventory");
        let log = self.section(file.log, "log");
        let api = self.section(file.api, "api");
        let email = self.section(file.email, "email");
        let gradient = self.finish(gradient, |s| {
            Some(GradientConfig {
                vendor_api_key_file: s.path("vendor_api_key_file")?,
                client: ClientSettings {
                    base_url: s.url("base_url")?,
                    requests_per_second: s.num("requests_per_second")?,
                    max_in_flight: s.num("max_in_flight")?,
                    request_timeout: Duration::from_secs(s.num("request_timeout_secs")?),
                    max_attempts: s.num("max_attempts")?,
                    retry_initial_delay: Duration::from_millis(s.num("retry_initial_delay_ms")?),
                    retry_max_delay: Duration::from_secs(s.num("retry_max_delay_secs")?),
                    max_list_body: s.num::<usize>("max_list_body_kib")? * 1024,
                    max_body: s.num::<usize>("max_body_kib")? * 1024,
                },
                run_deadline: Duration::from_secs(s.num("run_deadline_secs")?),
                integration_portal_url: s.opt_url("integration_portal_url")?,
                support_page_url: s.opt_url("support_page_url")?,
            })
        });
        let store = self.finish(store, |s| {
            Some(StoreConfig {
                path: s.path("path")?,
                busy_timeout: Duration::from_secs(s.num("busy_timeout_secs")?),
                key_file: s.opt_path("key_file")?,
                ledger_retention_days: s.num("ledger_retention_days")?,
            })
        });
        let schedule = self.schedule(schedule);
        let inventory = self.finish(inventory, |s| {
            Some(InventoryConfig {
                max_snapshot_shrink_percent: s.num("max_snapshot_shrink_percent")?,
                max_age_hours: s.num("max_age_hours")?,
            })
        });
        let log = self.finish(log, |s| {
            Some(LogConfig {
                format: s.word("format")?,
                level: s.str("level")?,
            })
        });
        let api = self.api(api);
        let email = self.email(email);
        let services = self.services(file.service);
        if let (Some(schedule), Some(services)) = (&schedule, &services) {
            self.check_measures(schedule, services);
        }
        let webhooks = self.webhooks(file.webhook);
        let sources = self.sources(file.source);
        Some(Config {
            source: path.to_path_buf(),
            gradient: gradient?,
            store: store?,
            schedule: schedule?,
            inventory: inventory?,
            log: log?,
            services: services?,
            api: api?,
            webhooks: webhooks?,
            sources: sources?,
            email: email?,
            warnings: Vec::new(),
        })
    }

    /// `[api]`: the listen address, the socket mode and the TLS files must make sense together.
    fn api(&mut self, s: Section) -> Option<ApiConfig> {
        let mut late: Vec<(&'static str, String)> = Vec::new();
        let api = self.finish(s, |s| {
            let raw = s.str("listen")?;
            let listen = match ApiListen::parse(&raw, self.base_dir) {
                Ok(l) => l,
                Err(e) => {
                    late.push(("api.listen", e.to_string()));
                    return None;
                }
            };
            let mode_text = s.str("socket_mode")?;
            let socket_mode = match u32::from_str_radix(mode_text.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => m,
                _ => {
                    late.push((
                        "api.socket_mode",
                        format!("must be octal permissions like \"0660\", found {mode_text:?}"),
                    ));
                    return None;
                }
            };
            let cfg = ApiConfig {
                listen_is_default: raw == super::keys::DEFAULT_API_LISTEN,
                listen,
                socket_mode,
                token_file: s.path("token_file")?,
                tls_cert_file: s.opt_path("tls_cert_file")?,
                tls_key_file: s.opt_path("tls_key_file")?,
                max_connections: s.num("max_connections")?,
                max_inventory_bytes: s.num::<u64>("max_inventory_mib")? * 1024 * 1024,
            };
            if let ApiListen::Tcp(addr) = &cfg.listen {
                let tls = cfg.tls_cert_file.is_some() || cfg.tls_key_file.is_some();
                if cfg.tls_cert_file.is_some() != cfg.tls_key_file.is_some() {
                    late.push(("api.tls_cert_file", "tls_cert_file and tls_key_file go together".into()));
                    return None;
                }
                if !addr.ip().is_loopback() && !tls {
                    late.push((
                        "api.tls_cert_file",
                        format!("required to listen on the non-loopback address {addr} (set tls_cert_file and tls_key_file, or listen on 127.0.0.1 or a unix socket)"),
                    ));
                    return None;
                }
            }
            Some(cfg)
        });
        for (key, message) in late {
            self.problem(key, message);
        }
        api
    }

    /// Reads a section (an empty one when absent).
    fn section<K: Keys + Default>(&mut self, part: Part<K>, name: &str) -> Section {
        let mut keys = match part {
            Part::Read(k) => k,
            Part::Absent => K::default(),
            Part::Misshapen(_) => {
                self.problem(name, "must be a table ([section])");
                K::default()
            }
        };
        self.read_section(name, name.to_string(), &mut keys)
    }

    /// Reads every declared key of `decl` (or its default), then reports the keys given that it
    /// does not declare. `name` is how problems name the section.
    fn read_section<K: Keys>(&mut self, decl: &str, name: String, t: &mut K) -> Section {
        let mut s = Section {
            name,
            vals: HashMap::new(),
            refused: HashSet::new(),
            misread: Vec::new(),
        };
        for k in keys::keys_of(decl) {
            let full = format!("{}.{}", s.name, k.name);
            let raw = match (t.take(k.name), k.default) {
                (Some(v), _) => v,
                (None, Fallback::Value(text)) => ValueKind::String(text.into()),
                (None, Fallback::Required) => {
                    self.problem(full, k.kind.missing().to_string());
                    continue;
                }
                (None, Fallback::Absent | Fallback::SameAs(_)) => continue,
                (None, Fallback::All) => {
                    if let Some(v) = k.kind.all_words() {
                        s.vals.insert(k.name, v);
                    }
                    continue;
                }
            };
            let blank = matches!(&raw, ValueKind::String(x) if x.trim().is_empty());
            // An optional URL left empty is unset ("not managed"); so is an empty `[email]` key.
            if blank
                && matches!(k.default, Fallback::Absent)
                && (matches!(k.kind, Kind::Url) || decl == "email")
            {
                continue;
            }
            let read = if blank && matches!(k.default, Fallback::Required) {
                Err(ValueProblem::Empty)
            } else {
                k.kind.read(raw, self.base_dir)
            };
            match read {
                Ok(v) => {
                    s.vals.insert(k.name, v);
                }
                Err(problem) => {
                    self.problem(full, problem.to_string());
                    s.refused.insert(k.name);
                }
            }
        }
        let known = K::NAMES;
        for key in t.unknown() {
            self.problem(
                format!("{}.{}", s.name, display_key(key)),
                format!("unknown key; known keys: {}", known.join(", ")),
            );
        }
        s
    }

    /// Assembles a section's struct, keeping any misread key as a problem.
    fn finish<T>(
        &mut self,
        mut s: Section,
        build: impl FnOnce(&mut Section) -> Option<T>,
    ) -> Option<T> {
        let out = build(&mut s);
        self.problems.append(&mut s.misread);
        out
    }

    fn schedule(&mut self, s: Section) -> Option<ScheduleConfig> {
        let mut late = Vec::new();
        let out = self.finish(s, |s| {
            let cron = s.str("cron")?;
            let timezone = s.tz("timezone")?;
            // The same judge as the table's cron check; it cannot refuse what that accepted, but
            // if it did, the problem still names the key.
            let parsed = Schedule::new(&cron, timezone)
                .map_err(|e| late.push(e.to_string()))
                .ok()?;
            // A cron that parses but never fires (February 31st) would idle the daemon for ever.
            if let Err(e) = parsed.check_fires(crate::time::now_ms()) {
                late.push(e.to_string());
                return None;
            }
            Some(ScheduleConfig {
                cadence: s.word("cadence")?,
                cron,
                timezone,
                catch_up: s.bool("catch_up")?,
                monthly_count: s.word("monthly_count")?,
                sync_on_connect: s.bool("sync_on_connect")?,
                parsed,
            })
        });
        for message in late {
            self.problem("schedule.cron", message);
        }
        out
    }
}

impl Reader<'_> {
    /// The entries of an array of tables (`[[service]]`, `[[webhook]]`, `[[source]]`), each read
    /// as a section named `decl[i]`. `None` when it is not an array; the flag is false when an
    /// entry is not a table (its problem is recorded).
    fn entries<K: Keys>(
        &mut self,
        decl: &'static str,
        raw: Entries<K>,
    ) -> Option<(Vec<(String, Section)>, bool)> {
        let items = match raw {
            Part::Absent => Vec::new(),
            Part::Read(items) => items,
            Part::Misshapen(other) => {
                self.problem(
                    decl,
                    format!(
                        "must be an array of tables ([[{decl}]]), found {}",
                        kind_name(&other)
                    ),
                );
                return None;
            }
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Part::Read(mut t) => {
                    // An entry is named by its index and, when it has one, its module:
                    // `service[2] (module "edr")`.
                    let sec = match t.get("module") {
                        Some(ValueKind::String(m)) if !m.trim().is_empty() => {
                            format!("{decl}[{i}] (module {m:?})")
                        }
                        _ => format!("{decl}[{i}]"),
                    };
                    let s = self.read_section(decl, sec.clone(), &mut t);
                    out.push((sec, s));
                }
                Part::Misshapen(other) => {
                    self.problem(
                        format!("{decl}[{i}]"),
                        format!("must be a table, found {}", kind_name(&other)),
                    );
                    ok = false;
                }
                Part::Absent => {}
            }
        }
        Some((out, ok))
    }

    /// `[[webhook]]` entries (none is fine: no events are written then).
    fn webhooks(&mut self, raw: Entries<WebhookKeys>) -> Option<Vec<WebhookConfig>> {
        let (entries, mut ok) = self.entries(WEBHOOK, raw)?;
        let mut out = Vec::new();
        let mut urls = HashSet::new();
        for (sec, s) in entries {
            let hook = self.finish(s, |s| {
                Some(WebhookConfig {
                    url: s.url("url")?,
                    secret_file: s.path("secret_file")?,
                    events: s.words::<EventKind>("events")?,
                })
            });
            match hook {
                Some(h) if !urls.insert(h.url.to_string()) => {
                    self.problem(
                        format!("{sec}.url"),
                        format!("duplicate webhook url {:?}: list each receiver once, with every event it wants", h.url.as_str()),
                    );
                    ok = false;
                }
                Some(h) => out.push(h),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
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

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
