//! One key's value read and checked by its declared [`Kind`]: from the file's raw value, the
//! environment's text, or a default's text, into a [`Val`] — or a [`ValueProblem`] that says what
//! the key accepts and what it found (the message of the key's problem).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono_tz::Tz;
use config::ValueKind;
use url::Url;

use super::is_loopback;
use super::keys::Kind;
use crate::schedule::ScheduleError;

/// A value read and checked according to its key's [`Kind`].
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// `Str`, `Word`, `Listed`, `Cron`, `LogFilter`.
    Str(String),
    /// `Int`.
    Int(i64),
    /// `Bool`.
    Bool(bool),
    /// `Path`, resolved.
    Path(PathBuf),
    /// `Url`.
    Url(Url),
    /// `TimeZone`.
    Tz(Tz),
    /// `Words`: each word once, in the order first given.
    Words(Vec<String>),
}

/// What a refused value was, as a problem shows it: a text quoted, anything else by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A text (quoted when shown).
    Text(String),
    /// Another type ("a number", "a table", …).
    Type(&'static str),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Text(s) => write!(f, "{s:?}"),
            Found::Type(t) => f.write_str(t),
        }
    }
}

/// Why a key's value was refused. Its text is the problem's message.
#[derive(Debug, thiserror::Error)]
pub enum ValueProblem {
    /// A whole number was wanted.
    #[error("must be a whole number, found {0}")]
    NotWholeNumber(Found),
    /// A number outside the key's range.
    #[error("must be between {min} and {max}, found {found}")]
    OutOfRange {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
        /// What was given.
        found: i64,
    },
    /// `true` or `false` was wanted.
    #[error("must be true or false, found {0}")]
    NotBool(Found),
    /// A string was wanted.
    #[error("must be a string, found {0}")]
    NotString(Found),
    /// An entry of a list was refused.
    #[error("each entry {0}")]
    Entry(Box<ValueProblem>),
    /// A program and its arguments were wanted.
    #[error("must be an array of strings, the program first (e.g. [\"/usr/local/bin/export\", \"--all\"]), found {0}")]
    NotArgv(Found),
    /// The program's entry is empty.
    #[error("must name a program first (an absolute path)")]
    NoProgram,
    /// One of the key's words was wanted.
    #[error("must be {words}, found {found}")]
    NotWord {
        /// The words, as "a or b" / "one of a, b, c".
        words: String,
        /// What was given.
        found: Found,
    },
    /// Not an entry of a short fixed list.
    #[error("unknown {what} {found} (exact, case-sensitive); one of: {list}")]
    NotListed {
        /// What the list is.
        what: &'static str,
        /// What was given.
        found: Found,
        /// The list's entries.
        list: String,
    },
    /// Not an entry of a long fixed list (the README lists it).
    #[error("unknown {what} {found} (exact, case-sensitive; the README's \"Service categories\" lists them)")]
    NotInLongList {
        /// What the list is.
        what: &'static str,
        /// What was given.
        found: Found,
    },
    /// Not a URL at all.
    #[error("not a URL ({source}): {found}")]
    NotUrl {
        /// Why.
        source: url::ParseError,
        /// What was given.
        found: Found,
    },
    /// Plain http to a host that is not loopback.
    #[error("must use https unless the host is loopback (127.0.0.1, ::1, localhost); found {0}")]
    PlainHttp(Found),
    /// Another scheme than https.
    #[error("must be an https:// URL, found {0}")]
    NotHttps(Found),
    /// Not a cron expression that fires.
    #[error(transparent)]
    Cron(#[from] ScheduleError),
    /// Not an IANA time zone.
    #[error("unknown IANA time zone {0} (e.g. \"UTC\", \"America/New_York\")")]
    TimeZone(Found),
    /// A filter directive without `=` that is not a level.
    #[error("unknown log level {directive:?}: {}", log_levels_allowed())]
    LogLevel {
        /// The directive.
        directive: String,
    },
    /// Not a `tracing` filter.
    #[error("not a level or filter ({source}): {found}; {}", log_levels_allowed())]
    LogFilter {
        /// Why.
        source: tracing_subscriber::filter::ParseError,
        /// What was given.
        found: Found,
    },
    /// A list of words was wanted.
    #[error("must be an array of strings, found {0}")]
    NotArray(Found),
    /// A word of a list is not one of the key's words.
    #[error("unknown entry {found}; each must be {words}")]
    UnknownEntry {
        /// The word.
        found: Found,
        /// The key's words.
        words: String,
    },
    /// A list named no word.
    #[error("must name at least one of {0}")]
    NoWord(String),
    /// A required key left empty.
    #[error("must not be empty")]
    Empty,
    /// A required key not set.
    #[error("missing{}", .0.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    Missing(Option<String>),
}

impl Kind {
    /// Reads a raw value (from the file, the environment, or a default's text).
    pub(super) fn read(self, raw: ValueKind, base_dir: &Path) -> Result<Val, ValueProblem> {
        match self {
            Kind::Int { min, max } => {
                let n = match raw {
                    ValueKind::I64(n) => n,
                    ValueKind::U64(n) => i64::try_from(n).unwrap_or(i64::MAX),
                    ValueKind::I128(n) => i64::try_from(n).unwrap_or(i64::MAX),
                    ValueKind::U128(n) => i64::try_from(n).unwrap_or(i64::MAX),
                    ValueKind::String(s) => s
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| ValueProblem::NotWholeNumber(Found::Text(s)))?,
                    other => return Err(ValueProblem::NotWholeNumber(found(&other))),
                };
                if !(min..=max).contains(&n) {
                    return Err(ValueProblem::OutOfRange { min, max, found: n });
                }
                Ok(Val::Int(n))
            }
            Kind::Bool => match raw {
                ValueKind::Boolean(b) => Ok(Val::Bool(b)),
                ValueKind::String(s) if s == "true" => Ok(Val::Bool(true)),
                ValueKind::String(s) if s == "false" => Ok(Val::Bool(false)),
                other => Err(ValueProblem::NotBool(found(&other))),
            },
            Kind::Words(words) => read_words(raw, words()).map(Val::Words),
            Kind::Argv => read_argv(raw).map(Val::Words),
            _ => self.read_text(string(raw)?, base_dir),
        }
    }

    /// Every word of a [`Kind::Words`] key (its `Fallback::All` value).
    pub(super) fn all_words(self) -> Option<Val> {
        match self {
            Kind::Words(words) => Some(Val::Words(words().iter().map(|w| w.to_string()).collect())),
            _ => None,
        }
    }

    fn read_text(self, s: String, base_dir: &Path) -> Result<Val, ValueProblem> {
        match self {
            Kind::Str => Ok(Val::Str(s)),
            Kind::Path => Ok(Val::Path(resolve(base_dir, s))),
            Kind::Word(words) if words().contains(&s.as_str()) => Ok(Val::Str(s)),
            Kind::Word(words) => Err(ValueProblem::NotWord {
                words: one_of(words()),
                found: Found::Text(s),
            }),
            Kind::Listed { list, .. } if list.contains(&s.as_str()) => Ok(Val::Str(s)),
            Kind::Listed { what, list } if list.len() <= 10 => Err(ValueProblem::NotListed {
                what,
                found: Found::Text(s),
                list: list.join(", "),
            }),
            Kind::Listed { what, .. } => Err(ValueProblem::NotInLongList {
                what,
                found: Found::Text(s),
            }),
            Kind::Url => read_url(s).map(Val::Url),
            Kind::Cron => {
                crate::schedule::parse_cron(&s)?;
                Ok(Val::Str(s))
            }
            Kind::TimeZone => Tz::from_str(&s)
                .map(Val::Tz)
                .map_err(|_| ValueProblem::TimeZone(Found::Text(s))),
            Kind::LogFilter => read_log_filter(s),
            // `read` takes these before any text is read: a string given for them was refused
            // there, so this arm only restates the kind's own check.
            Kind::Int { .. } | Kind::Bool | Kind::Words(_) | Kind::Argv => {
                self.read(ValueKind::String(s), base_dir)
            }
        }
    }

    /// A required key that is not set.
    pub(super) fn missing(self) -> ValueProblem {
        match self {
            Kind::Word(words) | Kind::Words(words) => ValueProblem::Missing(Some(one_of(words()))),
            _ => ValueProblem::Missing(None),
        }
    }
}

/// A program and its arguments (no shell: each entry is one argument as it is).
fn read_argv(raw: ValueKind) -> Result<Vec<String>, ValueProblem> {
    let ValueKind::Array(items) = raw else {
        return Err(ValueProblem::NotArgv(found(&raw)));
    };
    let argv: Vec<String> = items
        .into_iter()
        .map(|v| string(v.kind))
        .collect::<Result<_, _>>()
        .map_err(|e| ValueProblem::Entry(Box::new(e)))?;
    match argv.first() {
        Some(p) if !p.trim().is_empty() => Ok(argv),
        _ => Err(ValueProblem::NoProgram),
    }
}

/// The levels `log.level` accepts, alone or after `target=` in a filter directive.
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn log_levels_allowed() -> String {
    format!(
        "use one of {} or a filter such as \"info,gradient_connector=debug\"",
        LOG_LEVELS.join(", ")
    )
}

/// A level or `tracing` filter. A directive without `=` must be a level: `tracing` would read a
/// misspelt level (`warning`, `debg`) as a target name and silence every message, errors included.
fn read_log_filter(s: String) -> Result<Val, ValueProblem> {
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=')
            && !LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(ValueProblem::LogLevel {
                directive: directive.to_string(),
            });
        }
    }
    match tracing_subscriber::EnvFilter::try_new(&s) {
        Ok(_) => Ok(Val::Str(s)),
        Err(source) => Err(ValueProblem::LogFilter {
            source,
            found: Found::Text(s),
        }),
    }
}

/// Words as a problem lists them: "a" or "b", or one of "a", "b", "c".
fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    match quoted.as_slice() {
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// A list of words: an array of strings, or one string of comma-separated words.
fn read_words(raw: ValueKind, known: &[&str]) -> Result<Vec<String>, ValueProblem> {
    let given: Vec<String> = match raw {
        ValueKind::Array(items) => items
            .into_iter()
            .map(|v| string(v.kind))
            .collect::<Result<_, _>>()
            .map_err(|e| ValueProblem::Entry(Box::new(e)))?,
        ValueKind::String(s) => s
            .split(',')
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect(),
        other => return Err(ValueProblem::NotArray(found(&other))),
    };
    let mut out: Vec<String> = Vec::new();
    for w in given {
        if !known.contains(&w.as_str()) {
            return Err(ValueProblem::UnknownEntry {
                found: Found::Text(w),
                words: one_of(known),
            });
        }
        if !out.contains(&w) {
            out.push(w);
        }
    }
    if out.is_empty() {
        return Err(ValueProblem::NoWord(known.join(", ")));
    }
    Ok(out)
}

fn string(raw: ValueKind) -> Result<String, ValueProblem> {
    match raw {
        ValueKind::String(s) => Ok(s),
        other => Err(ValueProblem::NotString(found(&other))),
    }
}

fn read_url(raw: String) -> Result<Url, ValueProblem> {
    match Url::parse(&raw) {
        Err(source) => Err(ValueProblem::NotUrl {
            source,
            found: Found::Text(raw),
        }),
        Ok(u) if u.scheme() == "https" => Ok(u),
        Ok(u) if u.scheme() == "http" && is_loopback(&u) => Ok(u),
        Ok(u) if u.scheme() == "http" => Err(ValueProblem::PlainHttp(Found::Text(raw))),
        Ok(_) => Err(ValueProblem::NotHttps(Found::Text(raw))),
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

/// A raw value that is not a text, as a problem names it.
fn found(k: &ValueKind) -> Found {
    Found::Type(kind_name(k))
}

/// How a raw value's type reads in a problem.
pub(super) fn kind_name(k: &ValueKind) -> &'static str {
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
