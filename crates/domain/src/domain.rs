//! The words every layer shares: typed ids (channel, workspace, module, connector) and the enums of
//! the product's vocabulary (unit kind, connector state, pair and run outcomes, trigger, cadence,
//! monthly count), each with exactly one text form; and [`escape`], how text from Gradient or the
//! inventory is shown to a terminal or a log.
//!
//! The text form is declared once per enum (strum's `snake_case` for `Display`/`FromStr`/`as_str`,
//! serde's `snake_case` for JSON — the same words). Parsing a word that is not one of them is an
//! error, never a silent default: the store treats it as a decode error.
//!
//! This module is at the bottom of the dependency graph: it imports nothing from the crate.

pub use crate::count::UnitCount;
use serde::{Deserialize, Serialize};

/// Declares a string id newtype: serde-transparent, displayed as itself, borrowed as `&str`.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(v).map(Self)
            }
        }
    };
}

string_id!(
    /// An MSP in the vendor's inventory (Gradient's partner / organization).
    ChannelId
);
string_id!(
    /// A customer of an MSP; it is also the Gradient account id.
    WorkspaceId
);
string_id!(
    /// A module of the vendor's product, as named in the inventory and in `[[service]]`.
    ModuleId
);
string_id!(
    /// A connector: one per MSP, identified by its channel's id.
    ConnectorId
);

impl From<ChannelId> for ConnectorId {
    fn from(c: ChannelId) -> Self {
        ConnectorId(c.0)
    }
}

/// Declares a vocabulary enum: one text form (snake_case) for Display, FromStr, serde and `as_str`.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            strum::Display, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
            strum::EnumIter,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The one text form (stored, printed, and in JSON).
            pub fn as_str(self) -> &'static str {
                self.into()
            }
            /// Every text form, in declaration order.
            pub fn words() -> &'static [&'static str] {
                <Self as strum::VariantNames>::VARIANTS
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        /// A stored word that is not one of ours is a decode error, never a default.
        #[cfg(feature = "sqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let text = v.as_str()?;
                text.parse().map_err(|_| {
                    rusqlite::types::FromSqlError::Other(
                        format!(
                            "unknown {} {:?} in the store (known: {}); was the store written by a newer gradient-connector?",
                            stringify!($name),
                            text,
                            Self::words().join(", ")
                        )
                        .into(),
                    )
                })
            }
        }
    };
}

word_enum!(
    /// What a service counts.
    UnitKind {
        /// Protected users (mailboxes, identities).
        Users,
        /// Protected devices.
        Devices,
        /// A metered gauge (GB of backup, say) from `usage` records, not units.
        Quantity,
    }
);

word_enum!(
    /// Which figures a run pushes.
    Cadence {
        /// Counts as of the run.
        Daily,
        /// The previous calendar month, one figure per pair.
        Monthly,
    }
);

word_enum!(
    /// Monthly cadence: how a month of history becomes one figure.
    MonthlyCount {
        /// The highest daily count of the month.
        Peak,
        /// The count at the end of the month.
        End,
        /// Every unit protected at any time in the month (unit services only).
        Distinct,
        /// The time-weighted average of the month (quantity services only).
        Average,
    }
);

word_enum!(
    /// A connector's state.
    ConnectorState {
        /// A token is stored but Gradient has not (yet) accepted it.
        Unverified,
        /// The token works.
        Connected,
        /// Gradient answered 401: a newer token was generated. Nothing is sent until a new one is added.
        TokenRejected,
        /// Disconnected on our side; the token is forgotten.
        Disconnected,
    }
);

word_enum!(
    /// Outcome of one (account, service) pair in one run.
    PairOutcome {
        /// Gradient accepted the count.
        Pushed,
        /// Gradient answered 404 on the count route: account or service not mapped by the MSP (normal).
        Unmapped,
        /// Failed after retries (transient) or rejected as invalid; reason kept.
        Failed,
        /// Not sent (or answered 401): the connector's token was rejected.
        Rejected,
        /// Module disabled: nothing sent; Gradient keeps the last value.
        SkippedDisabled,
    }
);

word_enum!(
    /// Outcome of a whole run.
    RunOutcome {
        /// Every pair pushed or skipped for a documented reason.
        Ok,
        /// Some pairs failed or were rejected; the rest went through.
        Partial,
        /// The run could not do its job (e.g. the catalogue could not be read).
        Failed,
        /// Stopped before the end (shutdown or crash).
        Interrupted,
    }
);

word_enum!(
    /// What started a run.
    Trigger {
        /// `gradient-connector sync`.
        Cli,
        /// The schedule.
        Schedule,
        /// SIGUSR1.
        Signal,
        /// A missed slot (or an interrupted run) at start.
        CatchUp,
        /// The control API.
        Api,
    }
);

/// What the daemon tells the vendor's console (webhook events). One text form each.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
    strum::EnumIter,
)]
pub enum EventKind {
    /// A pasted token was verified and stored.
    #[serde(rename = "connector.connected")]
    #[strum(serialize = "connector.connected")]
    ConnectorConnected,
    /// Gradient rejected a connector's token (401): the MSP must paste a new one.
    #[serde(rename = "connector.token_rejected")]
    #[strum(serialize = "connector.token_rejected")]
    ConnectorTokenRejected,
    /// A connector was disconnected.
    #[serde(rename = "connector.disconnected")]
    #[strum(serialize = "connector.disconnected")]
    ConnectorDisconnected,
    /// One connector's part of a run ended (with what was pushed).
    #[serde(rename = "connector.synced")]
    #[strum(serialize = "connector.synced")]
    ConnectorSynced,
    /// A run found accounts or services the MSP has not mapped that it had not found before.
    #[serde(rename = "connector.mapping_needed")]
    #[strum(serialize = "connector.mapping_needed")]
    ConnectorMappingNeeded,
    /// The pull sources have not been pulled successfully within `inventory.max_age_hours`: runs
    /// push nothing until they are (told once per stale spell).
    #[serde(rename = "inventory.stale")]
    #[strum(serialize = "inventory.stale")]
    InventoryStale,
}

impl EventKind {
    /// The one text form.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Every text form.
    pub fn words() -> &'static [&'static str] {
        <Self as strum::VariantNames>::VARIANTS
    }
}

/// Who hears of an event: the webhook urls configured for its kind, and — when mail is configured
/// (`[email]`) — the contacts of its connector. Without mail no `mailto:` delivery is written, so
/// mail configured later never sends what happened before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// The webhook urls.
    pub webhooks: Vec<String>,
    /// Whether the connector's contacts are mailed.
    pub mail: bool,
}

impl Targets {
    /// These webhook urls; no mail.
    pub fn webhooks(urls: Vec<String>) -> Targets {
        Targets {
            webhooks: urls,
            mail: false,
        }
    }

    /// The same, and the contacts mailed when `mail`.
    pub fn mailing(self, mail: bool) -> Targets {
        Targets { mail, ..self }
    }
}

/// Per-outcome counts of a run (or of one connector in a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tally {
    /// Pushed pairs.
    pub pushed: u64,
    /// Unmapped pairs.
    pub unmapped: u64,
    /// Failed pairs.
    pub failed: u64,
    /// Rejected pairs.
    pub rejected: u64,
    /// Disabled pairs.
    pub skipped_disabled: u64,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, o: PairOutcome) {
        self.add_n(o, 1);
    }

    /// Counts `n` of one outcome.
    pub fn add_n(&mut self, o: PairOutcome, n: u64) {
        *self.slot(o) += n;
    }

    /// The count of one outcome.
    pub fn get(&self, o: PairOutcome) -> u64 {
        match o {
            PairOutcome::Pushed => self.pushed,
            PairOutcome::Unmapped => self.unmapped,
            PairOutcome::Failed => self.failed,
            PairOutcome::Rejected => self.rejected,
            PairOutcome::SkippedDisabled => self.skipped_disabled,
        }
    }

    fn slot(&mut self, o: PairOutcome) -> &mut u64 {
        match o {
            PairOutcome::Pushed => &mut self.pushed,
            PairOutcome::Unmapped => &mut self.unmapped,
            PairOutcome::Failed => &mut self.failed,
            PairOutcome::Rejected => &mut self.rejected,
            PairOutcome::SkippedDisabled => &mut self.skipped_disabled,
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &Tally) {
        use strum::IntoEnumIterator;
        for k in PairOutcome::iter() {
            self.add_n(k, o.get(k));
        }
    }

    /// All pairs counted.
    pub fn total(&self) -> u64 {
        use strum::IntoEnumIterator;
        PairOutcome::iter().map(|k| self.get(k)).sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use strum::IntoEnumIterator;
        let parts: Vec<String> = PairOutcome::iter()
            .map(|k| format!("{k}={}", self.get(k)))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// Text from Gradient or the inventory, made safe for a terminal: control characters (escape
/// sequences, newlines) are shown as `\u{…}` so nothing can forge or hide a line. JSON output is
/// never escaped this way.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn one_text_form_per_word() {
        for (w, v) in [
            ("token_rejected", ConnectorState::TokenRejected),
            ("unverified", ConnectorState::Unverified),
        ] {
            assert_eq!(v.as_str(), w);
            assert_eq!(v.to_string(), w);
            assert_eq!(ConnectorState::from_str(w).unwrap(), v);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{w}\""));
        }
        assert_eq!(PairOutcome::SkippedDisabled.as_str(), "skipped_disabled");
        assert_eq!(Trigger::CatchUp.as_str(), "catch_up");
        assert_eq!(UnitKind::words(), &["users", "devices", "quantity"]);
        assert_eq!(EventKind::ConnectorSynced.as_str(), "connector.synced");
        assert_eq!(
            serde_json::to_string(&EventKind::ConnectorTokenRejected).unwrap(),
            "\"connector.token_rejected\""
        );
        assert_eq!(
            EventKind::from_str("connector.connected").unwrap(),
            EventKind::ConnectorConnected
        );
        // An unknown word is an error, never a default.
        assert!(ConnectorState::from_str("bogus").is_err());
        assert!(RunOutcome::from_str("").is_err());
    }

    #[test]
    fn tally_text_and_sums() {
        let mut t = Tally::default();
        t.add(PairOutcome::Pushed);
        t.add_n(PairOutcome::SkippedDisabled, 2);
        assert_eq!(t.total(), 3);
        assert_eq!(
            t.to_string(),
            "pushed=1 unmapped=0 failed=0 rejected=0 skipped_disabled=2"
        );
        let ids: ConnectorId = ChannelId::new("msp-1").into();
        assert_eq!(ids, "msp-1");
    }
}
