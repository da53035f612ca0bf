//! Every configuration key's declaration: its section, name, kind (what values it accepts),
//! default and one-line meaning. Validation reads each key by it (`values` reads one value by its
//! kind), defaults come from it, and so does the reference table in the README
//! ([`reference_table`]). The serde structs of `file` name the same keys, in the same order (a test
//! holds them equal).

use super::{LogFormat, CATEGORIES, SUBCATEGORIES};
use crate::domain::{Cadence, EventKind, MonthlyCount, UnitKind};

/// What values a key accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any string.
    Str,
    /// A whole number in `min..=max` (a numeric string, e.g. from the environment, counts).
    Int {
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed.
        max: i64,
    },
    /// `true` or `false`.
    Bool,
    /// A file path; a relative path resolves against the configuration file's directory.
    Path,
    /// One word of an enum's text form (the enum's `words()`; read with its `FromStr`).
    Word(fn() -> &'static [&'static str]),
    /// A list of such words: an array of strings (or, from the environment, one string with the
    /// words separated by commas); at least one.
    Words(fn() -> &'static [&'static str]),
    /// One entry of a fixed list that is not ours, exact and case-sensitive (Gradient's enums).
    Listed {
        /// What the list is, e.g. "Gradient category".
        what: &'static str,
        /// The entries.
        list: &'static [&'static str],
    },
    /// A URL: https, or plain http when the host is loopback.
    Url,
    /// A program and its arguments: an array of strings, the first (the program) not empty.
    Argv,
    /// A six-field cron expression (judged by [`crate::schedule::parse_cron`]).
    Cron,
    /// An IANA time zone.
    TimeZone,
    /// A `tracing` level or filter directive.
    LogFilter,
}

/// A key's value when the file (and the environment) do not set it.
#[derive(Debug, Clone, Copy)]
pub enum Fallback {
    /// This value, in the file's own text form (it passes the key's own check).
    Value(&'static str),
    /// None: the key must be set.
    Required,
    /// None: the key is optional.
    Absent,
    /// The value of this other key of the same section.
    SameAs(&'static str),
    /// Every word of the key's list ([`Kind::Words`]).
    All,
}

/// One declared key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Section (`gradient`, `store`, `schedule`, `log`, or `service` / `webhook` for each
    /// `[[service]]` / `[[webhook]]`).
    pub section: &'static str,
    /// The key within its section.
    pub name: &'static str,
    /// What values it accepts.
    pub kind: Kind,
    /// Its value when unset.
    pub default: Fallback,
    /// What it means (one line of Markdown, no `|`).
    pub doc: &'static str,
}

/// The control API's default address.
pub const DEFAULT_API_LISTEN: &str = "unix:/run/gradient-connector/api.sock";

/// The section whose entries are an array of tables (`[[service]]`).
pub const SERVICE: &str = "service";
/// The other section whose entries are an array of tables (`[[webhook]]`).
pub const WEBHOOK: &str = "webhook";
/// The third: `[[source]]`.
pub const SOURCE: &str = "source";
/// The sections written as arrays of tables.
pub const ARRAY_SECTIONS: &[&str] = &[SERVICE, WEBHOOK, SOURCE];

const fn key(
    section: &'static str,
    name: &'static str,
    kind: Kind,
    default: Fallback,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        kind,
        default,
        doc,
    }
}

/// `[[source]] kind`.
fn source_kinds() -> &'static [&'static str] {
    &["postgres", "command"]
}

/// `[[source]] mode`.
fn pull_modes() -> &'static [&'static str] {
    &["snapshot", "records"]
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

use Fallback::{Absent, All, Required, SameAs, Value as Def};

/// Every key of the configuration, in the order the README lists them.
#[rustfmt::skip]
pub static KEYS: &[Key] = &[
    key("gradient", "base_url", Kind::Url, Def("https://app.usegradient.com"),
        "Gradient; https required unless the host is loopback (127.0.0.1, ::1, localhost)"),
    key("gradient", "vendor_api_key_file", Kind::Path, Def("/etc/gradient-connector/vendor-api-key"),
        "the vendor key (one line, mode 0600); under systemd the credential `vendor-api-key` in `$CREDENTIALS_DIRECTORY` wins"),
    key("gradient", "requests_per_second", int(1, 100), Def("90"),
        "whole daemon, evenly spaced; Gradient's documented limit is 100/s. Each 429 slows the pace by a tenth (a `Retry-After` holds every request), and clean answers bring it back at 10% of this rate per second"),
    key("gradient", "max_in_flight", int(1, 256), Def("64"),
        "concurrent requests; a run reaches its rate only with `requests_per_second` × latency in flight (Little's law), so keep it at least `requests_per_second` / 2 for latencies up to 500 ms"),
    key("gradient", "request_timeout_secs", int(1, 600), Def("30"), "per request"),
    key("gradient", "max_attempts", int(1, 20), Def("6"),
        "per request, for 429, 5xx, network errors and timeouts"),
    key("gradient", "retry_initial_delay_ms", int(1, 60_000), Def("500"),
        "first backoff ceiling; doubles per attempt, full jitter"),
    key("gradient", "retry_max_delay_secs", int(1, 3600), Def("30"),
        "backoff cap; also caps an honoured `Retry-After`"),
    key("gradient", "max_list_body_kib", int(16, 1_048_576), Def("4096"),
        "the largest list answer (the catalogue, accounts) read from Gradient, in KiB; a larger one is an error, read no further"),
    key("gradient", "max_body_kib", int(4, 65_536), Def("64"),
        "the largest other answer read from Gradient, in KiB; a larger one is an error, read no further"),
    key("gradient", "run_deadline_secs", int(1, 604_800), Def("3600"),
        "a run's overall deadline: after it, the pairs not yet pushed are recorded `failed` and the run closes (exit 75)"),
    key("gradient", "integration_portal_url", Kind::Url, Absent,
        "the vendor profile's `integrationPortalUrl` (what Gradient's \"Open Vendor Portal\" opens); https unless loopback; unset or empty: not managed"),
    key("gradient", "support_page_url", Kind::Url, Absent,
        "the vendor profile's `vendorSupportPageUrl`; https unless loopback; unset or empty: not managed"),
    key("store", "path", Kind::Path, Def("/var/lib/gradient-connector/store.db"),
        "the SQLite store (created 0600, WAL)"),
    key("store", "busy_timeout_secs", int(0, 3600), Def("30"),
        "how long a writer waits for another, e.g. an import"),
    key("store", "key_file", Kind::Path, Fallback::Absent,
        "the store key that seals partner tokens at rest: one line, standard base64 of 32 random bytes, mode 0600 (`gradient-connector store new-key PATH` writes one; the package makes `/etc/gradient-connector/store-key` and sets this key); under systemd the credential `store-key` wins; unset: `/etc/gradient-connector/store-key` when that file exists, else `STORE.key` beside the store, created at first use (`check-config` warns: a copy of the store's directory then carries its key)"),
    key("store", "ledger_retention_days", int(0, 36500), Def("0"),
        "after each run, ledger rows and finished runs older than this many days are pruned (each pair's newest push and `last_known` always stay); 0 keeps everything"),
    key("schedule", "cadence", Kind::Word(Cadence::words), Def("daily"),
        "`daily`: counts as of the run; `monthly`: the previous calendar month"),
    key("schedule", "cron", Kind::Cron, Def("0 0 2 * * *"),
        "six fields, seconds first: sec min hour day-of-month month day-of-week; it must fire within 400 days"),
    key("schedule", "timezone", Kind::TimeZone, Def("UTC"),
        "IANA zone of the cron expression and of calendar months"),
    key("schedule", "catch_up", Kind::Bool, Def("true"),
        "at start, run once for a slot missed while down, or an interrupted run"),
    key("schedule", "monthly_count", Kind::Word(MonthlyCount::words), Def("peak"),
        "monthly: `peak` (highest simultaneous count), `end` (last instant), `distinct` (any time in the month; unit services) or `average` (time-weighted; quantity services); a `[[service]]` may set its own"),
    key("schedule", "sync_on_connect", Kind::Bool, Def("false"),
        "run a connector's first sync as soon as its token is pasted (else at the next scheduled run)"),
    key("api", "listen", Kind::Str, Def(DEFAULT_API_LISTEN),
        "the control API: `unix:PATH` (the default; the socket's permissions are the access control; a relative PATH resolves against the configuration file's directory), `HOST:PORT` for TCP (needs `token_file`; TLS unless loopback), or empty to turn it off"),
    key("api", "socket_mode", Kind::Str, Def("0660"), "permissions of the unix socket (octal)"),
    key("api", "token_file", Kind::Path, Def("/etc/gradient-connector/api-token"),
        "bearer token for TCP (one line); under systemd the credential `api-token` wins"),
    key("api", "tls_cert_file", Kind::Path, Fallback::Absent,
        "PEM certificate chain; required to listen on a non-loopback address"),
    key("api", "tls_key_file", Kind::Path, Fallback::Absent, "PEM private key of `tls_cert_file`"),
    key("api", "max_connections", Kind::Int { min: 1, max: 60_000 }, Def("256"),
        "connections served at once; more are closed at accept (never queued). Each connection has 10 s to send its request head (and finish a TLS handshake); an idle keep-alive connection is closed after 60 s"),
    key("api", "max_inventory_mib", Kind::Int { min: 1, max: 1_048_576 }, Def("1024"),
        "largest `POST /v1/inventory` body, in MiB (streamed into the import: memory does not grow with it; larger bodies get 413 and nothing is applied)"),
    key("inventory", "max_snapshot_shrink_percent", int(0, 100), Def("50"),
        "a snapshot (`import --snapshot`, `POST /v1/inventory?snapshot=true`) that would unprotect more than this share of a channel's protected units, or remove more than this share of its workspaces, is refused whole (exit 65; API 422 `snapshot_shrink`): a truncated export must never zero an MSP's bill; `--allow-shrink` accepts one"),
    key("inventory", "max_age_hours", int(0, 8760), Def("26"),
        "with `[[source]]`s: a run whose sources have not all been pulled successfully within this many hours pushes nothing (exit 75, the run `failed` with `stale inventory`; `status`, `/readyz` and the event `inventory.stale` say so); 0 turns the rule off"),
    key("email", "smtp_url", Kind::Str, Absent,
        "mail to MSPs' contacts (see *E-mail to MSPs*): `smtps://HOST[:PORT]` (TLS from the start, port 465) or `smtp://HOST[:PORT]` (port 25; STARTTLS required unless the host is loopback, where it is used when offered); unset or empty: no mail"),
    key("email", "from", Kind::Str, Absent,
        "the From: of every mail, `Name <addr@vendor.example>` or `addr@vendor.example`; required with `smtp_url`"),
    key("email", "credentials_file", Kind::Path, Absent,
        "the SMTP login, one line `user:password` (mode 0600); under systemd the credential `smtp-credentials` wins; unset: no login"),
    key("email", "templates_dir", Kind::Path, Absent,
        "a directory whose files replace built-in mail templates of the same name (`connected.subject.txt`, `synced.html`, …); unset: the built-in ones"),
    key("log", "format", Kind::Word(LogFormat::words), Def("text"),
        "`text` (no timestamps under journald) or `json`"),
    key("log", "level", Kind::LogFilter, Def("info"),
        "`trace`, `debug`, `info`, `warn`, `error` or `off`, or a tracing filter (`info,gradient_connector=debug`); any other word is an error; `RUST_LOG` wins"),
    key(SERVICE, "module", Kind::Str, Required, "the module id used in the inventory"),
    key(SERVICE, "name", Kind::Str, Required,
        "the service name in Gradient (matched exactly; created once when missing)"),
    key(SERVICE, "description", Kind::Str, SameAs("name"), "service description"),
    key(SERVICE, "unit", Kind::Word(UnitKind::words), Required,
        "`users` or `devices` (counted units), or `quantity` (a metered gauge from `usage` records, e.g. GB of backup)"),
    key(SERVICE, "quantity_name", Kind::Str, Absent,
        "a quantity service's unit name (`GB`), shown beside its figures and in the default description"),
    key(SERVICE, "decimals", int(0, 6), Def("2"),
        "a quantity service's figures are rounded **up** to this many decimals (unit counts are whole)"),
    key(SERVICE, "monthly_count", Kind::Word(MonthlyCount::words), Absent,
        "this service's monthly rule, overriding `[schedule] monthly_count`: `peak` or `end`, `distinct` (unit services) or `average` (time-weighted; quantity services)"),
    key(SERVICE, "category", Kind::Listed { what: "Gradient category", list: CATEGORIES }, Required,
        "Gradient's exact, case-sensitive category (see *Service categories* below)"),
    key(SERVICE, "subcategory", Kind::Listed { what: "Gradient subcategory", list: SUBCATEGORIES }, Required,
        "Gradient's exact, case-sensitive subcategory (see *Service categories* below)"),
    key(SERVICE, "support_article", Kind::Str, Absent,
        "support article URL; optional, sent when the service is created"),
    key(SERVICE, "support_contact", Kind::Str, Absent,
        "support contact; optional, sent when the service is created"),
    key(SOURCE, "name", Kind::Str, Required,
        "the source's name: letters, digits, `-` and `_` (its systemd credential is `source-NAME-url`; the label of its metric)"),
    key(SOURCE, "kind", Kind::Word(source_kinds), Required,
        "`postgres` (a PostgreSQL database the vendor runs) or `command` (any program that prints JSON Lines on stdout)"),
    key(SOURCE, "url_file", Kind::Path, Absent,
        "postgres: a file holding the libpq URL (a secret, mode 0600; `?sslmode=require` for TLS); under systemd the credential `source-NAME-url` wins"),
    key(SOURCE, "query_file", Kind::Path, Absent,
        "postgres: a file holding one SQL statement whose rows each have a column `record` (json, jsonb or text): one inventory record"),
    key(SOURCE, "command", Kind::Argv, Absent,
        "command: the program and its arguments, e.g. `[\"/usr/local/bin/export-inventory\", \"--since-last\"]` (no shell)"),
    key(SOURCE, "mode", Kind::Word(pull_modes), Def("records"),
        "`snapshot` (as `import --snapshot`: the whole state of every channel it names) or `records` (as `import`)"),
    key(SOURCE, "timeout_secs", int(1, 86_400), Def("300"),
        "the whole pull's limit (a command is killed; PostgreSQL's `statement_timeout`); a pull over it applies nothing"),
    key(WEBHOOK, "url", Kind::Url, Required,
        "where events are POSTed; https unless the host is loopback; each url once"),
    key(WEBHOOK, "secret_file", Kind::Path, Required,
        "the signing secret: one line `whsec_` + base64 of 24..=64 random bytes (mode 0600); under systemd point it at the credential, e.g. `/run/credentials/gradient-connector.service/webhook-secret`"),
    key(WEBHOOK, "events", Kind::Words(EventKind::words), All,
        "the events this webhook gets: `connector.connected`, `connector.token_rejected`, `connector.disconnected`, `connector.synced`, `connector.mapping_needed`"),
];

/// The sections, in table order.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        if !out.contains(&k.section) {
            out.push(k.section);
        }
    }
    out
}

/// The declared keys of one section, in table order.
pub fn keys_of(section: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

/// The Markdown reference table of every key (columns: key, default, meaning), generated from
/// [`KEYS`]. The README's "Configuration" section holds it verbatim.
pub fn reference_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in KEYS {
        let name = if ARRAY_SECTIONS.contains(&k.section) {
            format!("`[[{}]] {}`", k.section, k.name)
        } else {
            format!("`{}.{}`", k.section, k.name)
        };
        let default = match k.default {
            Fallback::Value(v) => format!("`{v}`"),
            Fallback::Required => "required".into(),
            Fallback::Absent => "none".into(),
            Fallback::SameAs(other) => format!("the `{other}`"),
            Fallback::All => "all".into(),
        };
        let meaning = match k.kind {
            Kind::Int { min, max } => format!("{} ({min}..={max})", k.doc),
            _ => k.doc.to_string(),
        };
        out.push_str(&format!("| {name} | {default} | {meaning} |\n"));
    }
    out
}
