//! Connectors: one row per MSP's connector — its state, what Gradient showed of the integration,
//! and its partner token (sealed; written and read back only as [`SecretString`], no row type
//! carries one) — and Gradient's ids of the configured services.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use secrecy::SecretString;
use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::ConnectorState;
use crate::time::Millis;

/// One connector, without its token.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorRow {
    /// Channel id.
    pub id: String,
    /// State.
    pub state: ConnectorState,
    /// Why it is in that state (e.g. Gradient's answer).
    pub state_reason: Option<String>,
    /// Integration status Gradient last reported (`pending`, `active`, ...).
    pub gradient_status: Option<String>,
    /// Organisation name Gradient reported.
    pub organization_name: Option<String>,
    /// When the current token was stored: identifies the token generation.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub token_set_at: Option<Millis>,
    /// When Gradient last accepted the token.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub verified_at: Option<Millis>,
    /// End of the last run in which this connector pushed without failures.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub last_success_at: Option<Millis>,
    /// Whether a token is stored.
    pub has_token: bool,
    /// The Gradient organization the token belongs to (one connector per organization).
    pub organization_id: Option<String>,
    /// A keyed fingerprint of the vendor key Gradient rejected this token with (never the key).
    #[serde(skip)]
    pub rejected_key_fp: Option<String>,
    /// When Gradient last saw a sync (`lastSyncedAt`; its 1900 sentinel is stored as never).
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    pub gradient_synced_at: Option<Millis>,
    /// Accounts Gradient says the MSP has not mapped yet (`isMapped: false`), as last read.
    pub unmapped_accounts: Vec<String>,
}

const CONNECTOR_COLUMNS: &str = "id, state, state_reason, gradient_status, organization_name, token_set_at, verified_at, last_success_at, token IS NOT NULL, organization_id, rejected_key_fp, gradient_synced_at, unmapped_accounts";

fn connector_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConnectorRow> {
    Ok(ConnectorRow {
        id: r.get(0)?,
        state: r.get(1)?,
        state_reason: r.get(2)?,
        gradient_status: r.get(3)?,
        organization_name: r.get(4)?,
        token_set_at: r.get(5)?,
        verified_at: r.get(6)?,
        last_success_at: r.get(7)?,
        has_token: r.get(8)?,
        organization_id: r.get(9)?,
        rejected_key_fp: r.get(10)?,
        gradient_synced_at: r.get(11)?,
        unmapped_accounts: r
            .get::<_, Option<String>>(12)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    })
}

/// What [`Store::forget_connector`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// Forgotten.
    Forgotten,
    /// No such connector (or already forgotten).
    Unknown,
    /// Not disconnected: nothing changed.
    NotDisconnected(ConnectorState),
}

impl Store {
    // ---- connectors ----

    /// Stores (or replaces) a connector's token; the connector becomes `unverified`.
    /// The token is sealed with the store key ([`super::key`]).
    pub fn set_token(&self, id: &str, token: &SecretString, now: Millis) -> Result<(), StoreError> {
        let (sealed, key_id) = self.seal_token(id, token)?;
        self.conn().execute(
            "INSERT INTO connectors (id, token, token_key_id, state, state_reason, token_set_at, updated_at)
             VALUES (?1, ?2, ?4, 'unverified', 'token stored, not yet verified', ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, token_key_id = excluded.token_key_id,
                state = 'unverified',
                state_reason = excluded.state_reason, token_set_at = excluded.token_set_at,
                updated_at = excluded.updated_at, forgotten_at = NULL",
            params![id, sealed, now, key_id],
        )?;
        Ok(())
    }

    /// A connector's token, if one is stored, opened with the store key.
    pub fn token(&self, id: &str) -> Result<Option<SecretString>, StoreError> {
        let t: Option<(Option<String>, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT token, token_key_id FROM connectors WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((stored, key_id)) = t else {
            return Ok(None);
        };
        super::key::unseal(self.key(), id, stored, key_id)
    }

    /// One connector.
    pub fn connector(&self, id: &str) -> Result<Option<ConnectorRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = ?1 AND forgotten_at IS NULL"
                ),
                [id],
                connector_row,
            )
            .optional()?)
    }

    /// Every connector, by id.
    pub fn connectors(&self) -> Result<Vec<ConnectorRow>, StoreError> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE forgotten_at IS NULL ORDER BY id"
        ))?;
        let rows = stmt.query_map([], connector_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records Gradient's acceptance of the token generation `token_set_at`: state `connected`.
    pub fn mark_connected(
        &self,
        id: &str,
        token_set_at: Option<Millis>,
        gradient_status: Option<&str>,
        organization_name: Option<&str>,
        organization_id: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET state = 'connected', state_reason = NULL, rejected_key_fp = NULL,
                gradient_status = COALESCE(?3, gradient_status),
                organization_name = COALESCE(?4, organization_name),
                organization_id = COALESCE(organization_id, ?6),
                verified_at = ?5, updated_at = ?5
             WHERE id = ?1 AND token IS NOT NULL AND token_set_at IS ?2",
            params![id, token_set_at, gradient_status, organization_name, now, organization_id],
        )?;
        Ok(n > 0)
    }

    /// Sets a connector's state and reason, but only while it still holds token generation
    /// `token_set_at` (a token pasted meanwhile is never marked by an older token's failure).
    pub fn set_connector_state(
        &self,
        id: &str,
        token_set_at: Option<Millis>,
        state: ConnectorState,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET state = ?3, state_reason = ?4, updated_at = ?5
             WHERE id = ?1 AND token_set_at IS ?2",
            params![id, token_set_at, state.as_str(), reason, now],
        )?;
        Ok(n > 0)
    }

    /// Records the integration status Gradient last reported.
    pub fn set_gradient_status(
        &self,
        id: &str,
        status: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE connectors SET gradient_status = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, status, now],
        )?;
        Ok(())
    }

    /// Records a run in which the connector pushed without failures.
    pub fn mark_success(&self, id: &str, now: Millis) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE connectors SET last_success_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Forgets the token and marks the connector `disconnected`; the ledger stays.
    pub fn disconnect(&self, id: &str, reason: &str, now: Millis) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET token = NULL, token_key_id = NULL, state = 'disconnected', state_reason = ?2,
                gradient_status = 'inactive', updated_at = ?3 WHERE id = ?1",
            params![id, reason, now],
        )?;
        Ok(n > 0)
    }

    /// What the console was last told needs mapping for this connector (JSON; None: nothing yet).
    pub fn mapping_told(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT mapping_told FROM connectors WHERE id = ?1",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Remembers what the console was told needs mapping.
    pub fn set_mapping_told(&self, id: &str, told: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE connectors SET mapping_told = ?2 WHERE id = ?1",
            params![id, told],
        )?;
        Ok(())
    }

    /// Whether a connector of this id was ever added (a removed one too: its ledger stays).
    pub fn connector_known(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM connectors WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Forgets a disconnected connector: it leaves every list (its ledger stays), and its
    /// organization is let go, so a later paste under its id starts afresh.
    pub fn forget_connector(&self, id: &str, now: Millis) -> Result<Forget, StoreError> {
        let Some(row) = self.connector(id)? else {
            return Ok(Forget::Unknown);
        };
        if row.state != ConnectorState::Disconnected {
            return Ok(Forget::NotDisconnected(row.state));
        }
        self.conn().execute(
            "UPDATE connectors SET forgotten_at = ?2, organization_id = NULL, organization_name = NULL,
                gradient_status = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(Forget::Forgotten)
    }

    // ---- services ----

    /// Gradient service ids we know, by module.
    pub fn service_ids(&self) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT module, name, gradient_id FROM services")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remembers a service's Gradient id.
    pub fn save_service_id(
        &self,
        module: &str,
        name: &str,
        gradient_id: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO services (module, name, gradient_id, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (module) DO UPDATE SET name = excluded.name,
                gradient_id = excluded.gradient_id, updated_at = excluded.updated_at",
            params![module, name, gradient_id, now],
        )?;
        Ok(())
    }
}
