//! A configuration file built from typed values and rendered by the `toml` crate (strings quoted
//! and escaped by it, never by hand). Every `[section] key` is checked against the key table
//! ([`crate::config::KEYS`]): a misspelt key panics in the test that wrote it.

use std::path::Path;

use serde::Serialize;

use crate::config::KEYS;
use crate::domain::UnitKind;

/// The `[[service]]` section's name in the key table.
const SERVICE: &str = "service";
/// The `[[webhook]]` section's name in the key table.
const WEBHOOK: &str = "webhook";

/// One `[[service]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The module id used in the inventory.
    pub module: String,
    /// The service name in Gradient.
    pub name: String,
    /// Service description (defaults to the name when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What it counts.
    pub unit: UnitKind,
    /// A quantity's unit name (`GB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity_name: Option<String>,
    /// Decimals a quantity is rounded up to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// Its own monthly rule (`peak`, `end`, `distinct`, `average`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_count: Option<String>,
    /// Gradient's category.
    pub category: String,
    /// Gradient's subcategory.
    pub subcategory: String,
    /// Support article URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_article: Option<String>,
    /// Support contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_contact: Option<String>,
}

impl Service {
    /// A service without description or support fields.
    pub fn new(
        module: &str,
        name: &str,
        unit: UnitKind,
        category: &str,
        subcategory: &str,
    ) -> Service {
        Service {
            module: module.into(),
            name: name.into(),
            description: None,
            unit,
            quantity_name: None,
            decimals: None,
            monthly_count: None,
            category: category.into(),
            subcategory: subcategory.into(),
            support_article: None,
            support_contact: None,
        }
    }

    /// With a description.
    pub fn description(mut self, text: &str) -> Service {
        self.description = Some(text.into());
        self
    }

    /// A metered service (`unit = "quantity"`) counting `quantity_name`s (`GB`).
    pub fn quantity(module: &str, name: &str, quantity_name: &str) -> Service {
        Service {
            quantity_name: Some(quantity_name.into()),
            ..Service::new(module, name, UnitKind::Quantity, "backup", "cloud backup")
        }
    }

    /// With `decimals`.
    pub fn decimals(mut self, decimals: u8) -> Service {
        self.decimals = Some(decimals);
        self
    }

    /// With its own monthly rule.
    pub fn monthly_count(mut self, rule: &str) -> Service {
        self.monthly_count = Some(rule.into());
        self
    }

    /// `endpoint_security` / "Endpoint Security", counting devices.
    pub fn endpoint_security() -> Service {
        Service::new(
            "endpoint_security",
            "Endpoint Security",
            UnitKind::Devices,
            "security",
            "endpoint detection and response (EDR)",
        )
        .description("Protected devices")
    }

    /// `email_security` / "Email Security", counting users.
    pub fn email_security() -> Service {
        Service::new(
            "email_security",
            "Email Security",
            UnitKind::Users,
            "security",
            "email security",
        )
        .description("Protected mailboxes")
    }
}

/// One `[[webhook]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// Where events are POSTed.
    pub url: String,
    /// The file holding `whsec_` + base64 of the signing key.
    pub secret_file: String,
    /// The events it gets (absent: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl Webhook {
    /// A webhook getting every event.
    pub fn new(url: &str, secret_file: impl AsRef<Path>) -> Webhook {
        Webhook {
            url: url.into(),
            secret_file: secret_file.as_ref().to_string_lossy().into_owned(),
            events: None,
        }
    }

    /// Only these events.
    pub fn events(mut self, events: &[&str]) -> Webhook {
        self.events = Some(events.iter().map(|e| e.to_string()).collect());
        self
    }
}

/// One `[[source]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Its name.
    pub name: String,
    /// `postgres` or `command`.
    pub kind: String,
    /// postgres: the URL file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<String>,
    /// postgres: the query file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_file: Option<String>,
    /// command: the program and its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `snapshot` or `records`.
    pub mode: String,
    /// The pull's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl Source {
    /// A `command` source running `argv`, in `mode`.
    pub fn command(name: &str, argv: &[&str], mode: &str) -> Source {
        Source {
            name: name.into(),
            kind: "command".into(),
            url_file: None,
            query_file: None,
            command: Some(argv.iter().map(|a| a.to_string()).collect()),
            mode: mode.into(),
            timeout_secs: None,
        }
    }

    /// A `postgres` source reading its URL and query from these files, in `mode`.
    pub fn postgres(
        name: &str,
        url_file: impl AsRef<Path>,
        query_file: impl AsRef<Path>,
        mode: &str,
    ) -> Source {
        Source {
            name: name.into(),
            kind: "postgres".into(),
            url_file: Some(url_file.as_ref().to_string_lossy().into_owned()),
            query_file: Some(query_file.as_ref().to_string_lossy().into_owned()),
            command: None,
            mode: mode.into(),
            timeout_secs: None,
        }
    }

    /// With `timeout_secs`.
    pub fn timeout_secs(mut self, secs: u64) -> Source {
        self.timeout_secs = Some(secs);
        self
    }
}

/// A configuration file: `[section] key = value` entries (each a key of the table) and
/// `[[service]]` entries, rendered as TOML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigBuilder {
    /// (section, key, value), in the order first set.
    values: Vec<(String, String, toml::Value)>,
    services: Vec<Service>,
    webhooks: Vec<Webhook>,
    sources: Vec<Source>,
}

impl ConfigBuilder {
    /// A configuration with `gradient.base_url` set and nothing else.
    pub fn new(base_url: &str) -> ConfigBuilder {
        ConfigBuilder::default().set("gradient", "base_url", base_url)
    }

    /// Sets `[section] key = value`, replacing an earlier value. Panics when the table has no
    /// such key (services are added with [`ConfigBuilder::service`]). The value is not checked:
    /// tests of invalid configurations write invalid values on purpose.
    pub fn set(self, section: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        let (section, key) = known(section, key);
        self.set_unchecked(section, key, value)
    }

    /// Sets `[section] key = value` without checking the key against the table: only for tests
    /// of the unknown-key check itself.
    pub fn set_unchecked(
        mut self,
        section: &str,
        key: &str,
        value: impl Into<toml::Value>,
    ) -> Self {
        let value = value.into();
        match self
            .values
            .iter_mut()
            .find(|(s, k, _)| s == section && k == key)
        {
            Some(slot) => slot.2 = value,
            None => self.values.push((section.into(), key.into(), value)),
        }
        self
    }

    /// Removes `[section] key` (so that its default applies). Panics on an unknown key.
    pub fn unset(mut self, section: &str, key: &str) -> Self {
        let (section, key) = known(section, key);
        self.values.retain(|(s, k, _)| !(s == section && k == key));
        self
    }

    /// The value set for `[section] key`, if any.
    pub fn get(&self, section: &str, key: &str) -> Option<&toml::Value> {
        self.values
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v)
    }

    /// `gradient.base_url`.
    pub fn base_url(self, url: &str) -> Self {
        self.set("gradient", "base_url", url)
    }

    /// `gradient.vendor_api_key_file` (a relative path resolves against the file's directory).
    pub fn vendor_key_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.set("gradient", "vendor_api_key_file", path)
    }

    /// `store.key_file` (a relative path resolves against the file's directory).
    pub fn store_key_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.set("store", "key_file", path)
    }

    /// `store.path` (a relative path resolves against the file's directory).
    pub fn store_path(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.set("store", "path", path)
    }

    /// Adds a `[[service]]` entry.
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// Adds the two standard test services: `endpoint_security` (devices) and `email_security`
    /// (users).
    pub fn standard_services(self) -> Self {
        self.service(Service::endpoint_security())
            .service(Service::email_security())
    }

    /// Adds a `[[webhook]]` entry.
    pub fn webhook(mut self, webhook: Webhook) -> Self {
        self.webhooks.push(webhook);
        self
    }

    /// Adds a `[[source]]` entry.
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// Removes every `[[webhook]]` entry (to derive a variant with other webhooks).
    pub fn without_webhooks(mut self) -> Self {
        self.webhooks.clear();
        self
    }

    /// The `[[webhook]]` entries.
    pub fn webhooks(&self) -> &[Webhook] {
        &self.webhooks
    }

    /// The `[[service]]` entries.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The file's text: sections and keys in the key table's order (keys it does not know
    /// after those, in the order set), then the services.
    pub fn render(&self) -> String {
        let rank = |section: &str, key: &str| {
            let i = KEYS
                .iter()
                .position(|k| k.section == section && k.name == key);
            let s = KEYS.iter().position(|k| k.section == section);
            (s.unwrap_or(KEYS.len()), i.unwrap_or(KEYS.len()))
        };
        let mut values: Vec<&(String, String, toml::Value)> = self.values.iter().collect();
        // A stable sort: unknown keys keep the order they were set in.
        values.sort_by_key(|(s, k, _)| rank(s, k));
        let mut doc = toml::Table::new();
        for (section, key, value) in values {
            let table = doc
                .entry(section.as_str())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = table {
                t.insert(key.clone(), value.clone());
            }
        }
        let mut text = toml::to_string(&doc).expect("a table of TOML values renders");
        #[derive(Serialize)]
        struct Services<'a> {
            service: &'a [Service],
        }
        if !self.services.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text += &toml::to_string(&Services {
                service: &self.services,
            })
            .expect("services render");
        }
        #[derive(Serialize)]
        struct Webhooks<'a> {
            webhook: &'a [Webhook],
        }
        if !self.webhooks.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text += &toml::to_string(&Webhooks {
                webhook: &self.webhooks,
            })
            .expect("webhooks render");
        }
        #[derive(Serialize)]
        struct Sources<'a> {
            source: &'a [Source],
        }
        if !self.sources.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text += &toml::to_string(&Sources {
                source: &self.sources,
            })
            .expect("sources render");
        }
        text
    }

    /// Writes the file's text to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.render())
    }
}

/// Makes sure a store key exists at `path`: an existing file is kept (a store sealed with it keeps
/// its tokens), a missing one is created fresh (mode 0600) the way `store new-key` does.
pub fn ensure_store_key(path: &Path) -> Result<(), crate::config::keyfile::KeyFileError> {
    if path.exists() {
        return Ok(());
    }
    crate::config::keyfile::write_new_store_key(path)
}

/// The table's own `(section, key)` for a known key; panics otherwise.
fn known(section: &str, key: &str) -> (&'static str, &'static str) {
    match KEYS
        .iter()
        .find(|k| k.section == section && k.name == key && ![SERVICE, WEBHOOK].contains(&k.section))
    {
        Some(k) => (k.section, k.name),
        None => panic!(
            "no configuration key [{section}] {key} in config::KEYS (services and webhooks go through ConfigBuilder::service / ::webhook)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::BTreeMap;

    fn load(text: &str) -> Config {
        Config::from_toml(
            text,
            Path::new("/etc/gc/gradient-connector.toml"),
            BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_rendered_file_loads_with_every_value() {
        let b = ConfigBuilder::new("http://127.0.0.1:8080")
            .vendor_key_file("vendor-api-key")
            .store_path("store.db")
            .set("gradient", "max_attempts", 3)
            .set("gradient", "max_attempts", 4)
            .set("schedule", "catch_up", false)
            .set("schedule", "cron", "0 30 3 * * *")
            .set("schedule", "timezone", "America/New_York")
            .set("log", "level", "debug")
            .standard_services()
            .service(Service::new(
                "backup",
                "Cloud \"Backup\" — ü\\",
                UnitKind::Devices,
                "backup",
                "cloud backup",
            ));
        let text = b.render();
        let c = load(&text);
        assert_eq!(c.gradient.client.max_attempts, 4, "the later value wins");
        assert_eq!(
            c.gradient.client.base_url.as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            c.gradient.vendor_api_key_file,
            Path::new("/etc/gc/vendor-api-key")
        );
        assert_eq!(c.store.path, Path::new("/etc/gc/store.db"));
        assert!(!c.schedule.catch_up);
        assert_eq!(c.services.len(), 3);
        assert_eq!(c.services[0].module, "endpoint_security");
        assert_eq!(c.services[0].unit, UnitKind::Devices);
        assert_eq!(c.services[1].unit, UnitKind::Users);
        assert_eq!(c.services[2].name, "Cloud \"Backup\" — ü\\");
        assert_eq!(c.services[2].description, c.services[2].name);
        // Sections in the table's order.
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in\n{text}"));
        assert!(at("[gradient]") < at("[schedule]") && at("[schedule]") < at("[log]"));
        assert!(at("[log]") < at("[[service]]"));
    }

    #[test]
    fn unset_restores_the_default() {
        let b = ConfigBuilder::new("http://127.0.0.1:1")
            .set("schedule", "cadence", "monthly")
            .standard_services();
        assert_eq!(
            load(&b.render()).schedule.cadence,
            crate::domain::Cadence::Monthly
        );
        let b = b.unset("schedule", "cadence");
        assert_eq!(b.get("schedule", "cadence"), None);
        assert_eq!(
            load(&b.render()).schedule.cadence,
            crate::domain::Cadence::Daily
        );
    }

    #[test]
    fn an_invalid_value_is_written_as_given() {
        let text = ConfigBuilder::new("http://127.0.0.1:1")
            .set("schedule", "cron", "not a cron")
            .standard_services()
            .render();
        let e = Config::from_toml(&text, Path::new("/x/c.toml"), BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("schedule.cron"), "{e}");
    }

    #[test]
    fn an_unchecked_key_is_written_for_the_unknown_key_check() {
        let text = ConfigBuilder::new("http://127.0.0.1:1")
            .set_unchecked("schedule", "nonsense", 1)
            .set("schedule", "cron", "0 0 2 * * *")
            .standard_services()
            .render();
        assert!(
            text.contains("cron = \"0 0 2 * * *\"\nnonsense = 1\n"),
            "{text}"
        );
        let e = Config::from_toml(&text, Path::new("/x/c.toml"), BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("schedule.nonsense"), "{e}");
    }

    #[test]
    #[should_panic(expected = "no configuration key [gradient] max_attempt")]
    fn a_misspelt_key_panics() {
        let _ = ConfigBuilder::new("http://127.0.0.1:1").set("gradient", "max_attempt", 3);
    }

    #[test]
    #[should_panic(expected = "no configuration key [service] module")]
    fn a_service_key_goes_through_service() {
        let _ = ConfigBuilder::new("http://127.0.0.1:1").set("service", "module", "x");
    }
}
