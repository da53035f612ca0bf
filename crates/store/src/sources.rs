//! What the store keeps of pull sources (`[[source]]`): each source's last pull — when, its
//! outcome, how many records, why it failed — and its last successful pull, from which the
//! inventory's age is judged; and whether the console was told the inventory is stale.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::time::Millis;

/// A pull's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PullOutcome {
    /// Applied in one transaction.
    Ok,
    /// Nothing applied (the message says why).
    Failed,
}

impl PullOutcome {
    fn as_str(self) -> &'static str {
        match self {
            PullOutcome::Ok => "ok",
            PullOutcome::Failed => "failed",
        }
    }
}

/// One source's last pull, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourcePull {
    /// The source's name.
    pub name: String,
    /// When the last pull ended.
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// Its outcome.
    pub outcome: PullOutcome,
    /// Records it read (applied or not).
    pub records: u64,
    /// Why it failed, or its summary.
    pub message: Option<String>,
    /// When a pull last succeeded (None: never).
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_success_at: Option<Millis>,
}

impl Store {
    /// Records a pull of `name` that ended at `at`.
    pub fn record_pull(
        &self,
        name: &str,
        at: Millis,
        outcome: PullOutcome,
        records: u64,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let ok = outcome == PullOutcome::Ok;
        self.conn().execute(
            "INSERT INTO source_pulls (name, at, outcome, records, message, last_success_at, stale_told)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 THEN ?2 END, 0)
             ON CONFLICT (name) DO UPDATE SET at = excluded.at, outcome = excluded.outcome,
                records = excluded.records, message = excluded.message,
                last_success_at = CASE WHEN ?6 THEN ?2 ELSE last_success_at END,
                stale_told = CASE WHEN ?6 THEN 0 ELSE stale_told END",
            params![
                name,
                at,
                outcome.as_str(),
                i64::try_from(records).unwrap_or(i64::MAX),
                message,
                ok
            ],
        )?;
        Ok(())
    }

    /// The last pull of each source that was ever pulled, by name.
    pub fn source_pulls(&self) -> Result<Vec<SourcePull>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT name, at, outcome, records, message, last_success_at FROM source_pulls ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            let outcome: String = r.get(2)?;
            Ok(SourcePull {
                name: r.get(0)?,
                at: r.get(1)?,
                outcome: if outcome == "ok" {
                    PullOutcome::Ok
                } else {
                    PullOutcome::Failed
                },
                records: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                message: r.get(4)?,
                last_success_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks the stale spell of `names` as told; true for the names not told before.
    pub fn tell_stale(&self, names: &[String], at: Millis) -> Result<Vec<String>, StoreError> {
        let mut newly = Vec::new();
        for name in names {
            let told: Option<i64> = self
                .conn()
                .query_row(
                    "SELECT stale_told FROM source_pulls WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            if told == Some(1) {
                continue;
            }
            self.conn().execute(
                "INSERT INTO source_pulls (name, at, outcome, records, message, last_success_at, stale_told)
                 VALUES (?1, ?2, 'failed', 0, 'never pulled', NULL, 1)
                 ON CONFLICT (name) DO UPDATE SET stale_told = 1",
                params![name, at],
            )?;
            newly.push(name.clone());
        }
        Ok(newly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_is_kept_through_failures_and_a_stale_spell_is_told_once() {
        let (_d, s) = crate::temp_store();
        s.record_pull("db", 1_000, PullOutcome::Ok, 5, None)
            .unwrap();
        s.record_pull("db", 2_000, PullOutcome::Failed, 0, Some("timeout"))
            .unwrap();
        let p = &s.source_pulls().unwrap()[0];
        assert_eq!(
            (p.at, p.outcome, p.last_success_at),
            (2_000, PullOutcome::Failed, Some(1_000))
        );
        assert_eq!(p.message.as_deref(), Some("timeout"));
        let names = vec!["db".to_string(), "never".to_string()];
        assert_eq!(s.tell_stale(&names, 3_000).unwrap(), names);
        assert!(s.tell_stale(&names, 4_000).unwrap().is_empty());
        // A success ends the spell: the next stale spell is told again.
        s.record_pull("db", 5_000, PullOutcome::Ok, 5, None)
            .unwrap();
        assert_eq!(s.tell_stale(&names, 6_000).unwrap(), vec!["db".to_string()]);
    }
}
