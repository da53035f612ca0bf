//! The configuration's shape as serde reads it: [`ConfigFile`] and one struct per section, each
//! field one key. The `config` crate layers the file and the environment; `try_deserialize` fills
//! these structs. Nothing here refuses a value: each key's value is kept as given ([`Setting`]) for
//! `validate` (the reader) to check by the key's declared kind, so one wrong value is one problem
//! and the others are still read. A key no struct declares lands in its section's `unknown` map
//! (serde's `flatten`); a section or entry of the wrong shape is kept as [`Part::Misshapen`]. The
//! fields are the keys of the table in `keys` (its docs, kinds and defaults): a test holds the two
//! equal, section by section.

use std::collections::BTreeMap;

use config::{Value, ValueKind};
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;

/// A key's value as the file (or the environment) gave it; `None` when unset.
#[derive(Debug, Clone, Default)]
pub(super) struct Setting(Option<ValueKind>);

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Setting(Some(v.kind)))
    }
}

/// A section (a table) or an array of tables, as given.
#[derive(Debug, Default)]
pub(super) enum Part<T> {
    /// Not in the file.
    #[default]
    Absent,
    /// Read.
    Read(T),
    /// Something of another shape (its raw value).
    Misshapen(ValueKind),
}

/// What shape of raw value a [`Part`] holds.
pub(super) trait Shape {
    /// Whether `kind` has this shape.
    fn fits(kind: &ValueKind) -> bool;
}

impl<T> Shape for Vec<T> {
    fn fits(kind: &ValueKind) -> bool {
        matches!(kind, ValueKind::Array(_))
    }
}

impl<'de, T: DeserializeOwned + Shape> Deserialize<'de> for Part<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        if !T::fits(&value.kind) {
            return Ok(Part::Misshapen(value.kind));
        }
        let kind = value.kind.clone();
        // Sections hold only `Setting`s and a catch-all map: a table always reads.
        Ok(T::deserialize(value)
            .map(Part::Read)
            .unwrap_or(Part::Misshapen(kind)))
    }
}

/// One section's keys, by name (the reader takes each declared key once).
pub(super) trait Keys {
    /// The declared keys, in declaration order.
    const NAMES: &'static [&'static str];
    /// A key's value, taken out (None: unset, or not a key of this section).
    fn take(&mut self, key: &str) -> Option<ValueKind>;
    /// A key's value, left in place.
    fn get(&self, key: &str) -> Option<&ValueKind>;
    /// The keys given that the section does not declare.
    fn unknown(&self) -> Vec<&str>;
}

/// Declares a section's struct: one [`Setting`] per key, the rest caught in `unknown`.
macro_rules! section {
    ($(#[$doc:meta])* $name:ident { $($key:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        pub(super) struct $name {
            $($key: Setting,)*
            /// Keys not declared here.
            #[serde(flatten)]
            unknown: BTreeMap<String, Value>,
        }

        impl Shape for $name {
            fn fits(kind: &ValueKind) -> bool {
                matches!(kind, ValueKind::Table(_))
            }
        }

        impl Keys for $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($key)),*];

            fn take(&mut self, key: &str) -> Option<ValueKind> {
                match key {
                    $(stringify!($key) => self.$key.0.take(),)*
                    _ => None,
                }
            }

            fn get(&self, key: &str) -> Option<&ValueKind> {
                match key {
                    $(stringify!($key) => self.$key.0.as_ref(),)*
                    _ => None,
                }
            }

            fn unknown(&self) -> Vec<&str> {
                self.unknown.keys().map(String::as_str).collect()
            }
        }
    };
}

section!(
    /// `[gradient]`.
    GradientKeys {
        base_url, vendor_api_key_file, requests_per_second, max_in_flight, request_timeout_secs,
        max_attempts, retry_initial_delay_ms, retry_max_delay_secs, max_list_body_kib,
        max_body_kib, run_deadline_secs, integration_portal_url, support_page_url,
    }
);
section!(
    /// `[store]`.
    StoreKeys { path, busy_timeout_secs, key_file, ledger_retention_days }
);
section!(
    /// `[schedule]`.
    ScheduleKeys { cadence, cron, timezone, catch_up, monthly_count, sync_on_connect }
);
section!(
    /// `[api]`.
    ApiKeys {
        listen, socket_mode, token_file, tls_cert_file, tls_key_file, max_connections,
        max_inventory_mib,
    }
);
section!(
    /// `[inventory]`.
    InventoryKeys { max_snapshot_shrink_percent, max_age_hours }
);
section!(
    /// `[email]`.
    EmailKeys { smtp_url, from, credentials_file, templates_dir }
);
section!(
    /// `[log]`.
    LogKeys { format, level }
);
section!(
    /// One `[[service]]`.
    ServiceKeys {
        module, name, description, unit, quantity_name, decimals, monthly_count, category,
        subcategory, support_article, support_contact,
    }
);
section!(
    /// One `[[source]]`.
    SourceKeys { name, kind, url_file, query_file, command, mode, timeout_secs }
);
section!(
    /// One `[[webhook]]`.
    WebhookKeys { url, secret_file, events }
);

/// An array of tables: each entry a section of its own.
pub(super) type Entries<T> = Part<Vec<Part<T>>>;

/// The whole file (with the environment's overrides), as serde reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ConfigFile {
    pub gradient: Part<GradientKeys>,
    pub store: Part<StoreKeys>,
    pub schedule: Part<ScheduleKeys>,
    pub inventory: Part<InventoryKeys>,
    pub log: Part<LogKeys>,
    pub api: Part<ApiKeys>,
    pub email: Part<EmailKeys>,
    pub service: Entries<ServiceKeys>,
    pub webhook: Entries<WebhookKeys>,
    pub source: Entries<SourceKeys>,
    /// Sections (or top-level keys) not declared.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::keys_of;

    fn names(section: &str) -> Vec<&'static str> {
        keys_of(section).map(|k| k.name).collect()
    }

    #[test]
    fn the_structs_declare_exactly_the_tables_keys_in_its_order() {
        for (section, declared) in [
            ("gradient", GradientKeys::NAMES),
            ("store", StoreKeys::NAMES),
            ("schedule", ScheduleKeys::NAMES),
            ("api", ApiKeys::NAMES),
            ("inventory", InventoryKeys::NAMES),
            ("email", EmailKeys::NAMES),
            ("log", LogKeys::NAMES),
            ("service", ServiceKeys::NAMES),
            ("source", SourceKeys::NAMES),
            ("webhook", WebhookKeys::NAMES),
        ] {
            assert_eq!(declared, names(section).as_slice(), "[{section}]");
        }
        let mut sections = crate::config::keys::sections();
        sections.sort_unstable();
        let mut ours = vec![
            "gradient",
            "store",
            "schedule",
            "api",
            "inventory",
            "email",
            "log",
            "service",
            "source",
            "webhook",
        ];
        ours.sort_unstable();
        assert_eq!(sections, ours);
    }

    #[test]
    fn a_wrong_value_a_wrong_shape_and_an_unknown_key_each_stay_for_validate() {
        let built = config::Config::builder()
            .add_source(config::File::from_str(
                "colour = 1\nlog = 5\n[gradient]\nmax_in_flight = \"lots\"\ntypo = true\n\
                 [store]\npath = 3\nlog = \"text\"\n[[service]]\nmodule = \"edr\"\n[[webhook]]\n",
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap();
        let mut f: ConfigFile = built.try_deserialize().unwrap();
        assert_eq!(f.unknown.keys().collect::<Vec<_>>(), ["colour"]);
        assert!(matches!(f.log, Part::Misshapen(ValueKind::I64(5))));
        let Part::Read(g) = &mut f.gradient else {
            panic!("{:?}", f.gradient)
        };
        assert!(matches!(g.take("max_in_flight"), Some(ValueKind::String(s)) if s == "lots"));
        assert_eq!(g.unknown(), ["typo"]);
        assert!(g.take("base_url").is_none());
        let Part::Read(s) = &mut f.store else {
            panic!()
        };
        assert!(matches!(s.take("path"), Some(ValueKind::I64(3))));
        assert_eq!(s.unknown(), ["log"]);
        let Part::Read(services) = &f.service else {
            panic!()
        };
        let Part::Read(edr) = &services[0] else {
            panic!()
        };
        assert!(matches!(edr.get("module"), Some(ValueKind::String(m)) if m == "edr"));
        assert!(matches!(&f.webhook, Part::Read(w) if w.len() == 1));
    }
}
