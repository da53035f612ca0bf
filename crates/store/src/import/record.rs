//! Inventory records: the JSON form of each line and the checks that need no store (ids, names,
//! times).

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum Record {
    Channel(ChannelRecord),
    Workspace(WorkspaceRecord),
    Module(ModuleRecord),
    User(UnitRecord),
    Device(UnitRecord),
    /// A metered quantity of a workspace's module, in force from `at` until its next usage record.
    Usage(UsageRecord),
    /// A snapshot's header (its first line): the instant the file's state is as of.
    Snapshot(SnapshotRecord),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotRecord {
    pub(super) at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelRecord {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkspaceRecord {
    pub(super) id: String,
    /// Required unless `removed`.
    pub(super) channel: Option<String>,
    /// Required unless `removed`.
    pub(super) name: Option<String>,
    /// The workspace left the vendor: its MSP's account gets one final zero per service.
    pub(super) removed: Option<bool>,
    pub(super) at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModuleRecord {
    pub(super) workspace: String,
    pub(super) module: String,
    pub(super) enabled: bool,
    pub(super) at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnitRecord {
    pub(super) workspace: String,
    pub(super) id: String,
    pub(super) protected: bool,
    pub(super) at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageRecord {
    pub(super) workspace: String,
    pub(super) module: String,
    /// Any JSON value: checked by [`parse_line`] (a non-negative finite number).
    pub(super) quantity: serde_json::Value,
    pub(super) at: Option<String>,
}

impl UsageRecord {
    /// The quantity, checked: a non-negative JSON number (NaN cannot be JSON), exact to a
    /// millionth (rounded up beyond).
    pub(super) fn quantity(&self) -> Result<UnitCount, RecordProblem> {
        let bad = || RecordProblem::Quantity(self.quantity.to_string());
        match &self.quantity {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(UnitCount::whole)
                .or_else(|| n.as_f64().and_then(UnitCount::from_quantity))
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// Why a line is a bad line (its text is the reason listed with the line's number).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordProblem {
    /// The line is longer than the import reads.
    #[error("line is longer than {max} bytes ({len} bytes)")]
    TooLong {
        /// The limit.
        max: usize,
        /// The line's length.
        len: usize,
    },
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Not JSON, an unknown type or field, a wrong type (serde's own words name it).
    #[error("{0}")]
    Json(String),
    /// A field a workspace needs unless it is removed.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// An empty id.
    #[error("\"{0}\" must not be empty")]
    EmptyId(String),
    /// An id over the limit.
    #[error("\"{0}\" is longer than {MAX_ID_CHARS} characters")]
    LongId(String),
    /// Control characters in an id.
    #[error("\"{0}\" contains control characters")]
    ControlInId(String),
    /// White space around an id.
    #[error("\"{field}\" has leading or trailing white space: {value:?}")]
    SpacedId {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// An empty name.
    #[error("\"name\" must not be empty")]
    EmptyName,
    /// A name over the limit.
    #[error("\"name\" is longer than {MAX_NAME_CHARS} characters")]
    LongName,
    /// Control characters in a name.
    #[error("\"name\" contains control characters (e.g. a line break)")]
    ControlInName,
    /// A usage record's quantity that is not a non-negative number.
    #[error("\"quantity\" must be a non-negative number, not {0}")]
    Quantity(String),
    /// A time that is not RFC 3339.
    #[error("\"at\": {0}")]
    At(#[source] crate::time::TimeError),
    /// A time too far in the future.
    #[error("\"at\" {0} is more than 5 minutes in the future; a record takes effect when it happened — fix the exporter's clock or date")]
    Future(String),
}

/// One line, parsed and checked against everything that does not need the store.
pub struct ParsedLine {
    pub(super) record: Record,
    pub(super) at: Millis,
}

impl ParsedLine {
    /// The record type (`channel`, `workspace`, `module`, `user`, `device`, `usage`).
    pub fn kind(&self) -> &'static str {
        match self.record {
            Record::Channel(_) => "channel",
            Record::Workspace(_) => "workspace",
            Record::Module(_) => "module",
            Record::User(_) => "user",
            Record::Device(_) => "device",
            Record::Usage(_) => "usage",
            Record::Snapshot(_) => "snapshot",
        }
    }

    /// When it takes effect.
    pub fn at(&self) -> Millis {
        self.at
    }
}

/// Parses and checks one line (JSON, type, fields, ids, names, time); `now` is the default `at`.
pub fn parse_line(text: &str, now: Millis) -> Result<ParsedLine, RecordProblem> {
    let record: Record =
        serde_json::from_str(text).map_err(|e| RecordProblem::Json(json_reason(&e, text)))?;
    let at = match &record {
        Record::Channel(r) => {
            check_id("id", &r.id)?;
            check_name(&r.name)?;
            at_or(&r.at, now)?
        }
        Record::Workspace(r) => {
            check_id("id", &r.id)?;
            if r.removed != Some(true) {
                let channel = r
                    .channel
                    .as_deref()
                    .ok_or(RecordProblem::Missing("channel"))?;
                let name = r.name.as_deref().ok_or(RecordProblem::Missing("name"))?;
                check_id("channel", channel)?;
                check_name(name)?;
            }
            at_or(&r.at, now)?
        }
        Record::Module(r) => {
            check_id("workspace", &r.workspace)?;
            check_id("module", &r.module)?;
            at_or(&r.at, now)?
        }
        Record::User(r) | Record::Device(r) => {
            check_id("workspace", &r.workspace)?;
            check_id("id", &r.id)?;
            at_or(&r.at, now)?
        }
        Record::Usage(r) => {
            check_id("workspace", &r.workspace)?;
            check_id("module", &r.module)?;
            r.quantity()?;
            at_or(&r.at, now)?
        }
        Record::Snapshot(r) => at_or(&r.at, now)?,
    };
    Ok(ParsedLine { record, at })
}

pub(super) fn json_reason(e: &serde_json::Error, text: &str) -> String {
    let msg = e.to_string();
    if e.is_syntax() || e.is_eof() {
        return format!("not valid JSON ({msg})");
    }
    if msg.starts_with("unknown variant") || msg.contains("missing field `type`") {
        return format!(
            "{msg}; \"type\" must be one of channel, workspace, module, user, device, usage"
        );
    }
    if !text.starts_with('{') {
        return "each line must be one JSON object".into();
    }
    // serde's own words name the field: "missing field `id`", "invalid type: integer `5`, expected a string".
    msg.split(" at line ").next().unwrap_or(&msg).to_string()
}

pub(super) fn check_id(field: &str, v: &str) -> Result<(), RecordProblem> {
    if v.is_empty() {
        return Err(RecordProblem::EmptyId(field.into()));
    }
    if v.chars().count() > MAX_ID_CHARS {
        return Err(RecordProblem::LongId(field.into()));
    }
    if v.chars().any(char::is_control) {
        return Err(RecordProblem::ControlInId(field.into()));
    }
    if v.trim() != v {
        return Err(RecordProblem::SpacedId {
            field: field.into(),
            value: v.into(),
        });
    }
    Ok(())
}

pub(super) fn check_name(v: &str) -> Result<(), RecordProblem> {
    if v.trim().is_empty() {
        return Err(RecordProblem::EmptyName);
    }
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(RecordProblem::LongName);
    }
    if v.chars().any(char::is_control) {
        return Err(RecordProblem::ControlInName);
    }
    Ok(())
}

/// How far in the future an `at` may be (clock skew between the vendor's systems and ours).
pub const MAX_FUTURE_MS: Millis = 5 * 60 * 1000;

pub(super) fn at_or(at: &Option<String>, now: Millis) -> Result<Millis, RecordProblem> {
    match at {
        None => Ok(now),
        Some(s) => {
            let t = parse_rfc3339(s).map_err(RecordProblem::At)?;
            // The future is judged by the wall clock (an import's `now` may be set back in tests).
            if t > now.max(crate::time::now_ms()) + MAX_FUTURE_MS {
                return Err(RecordProblem::Future(s.clone()));
            }
            Ok(t)
        }
    }
}
