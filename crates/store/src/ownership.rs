//! Whose token is it, and who is owed a final zero: the Gradient organization each connector's
//! token belongs to, rejections with the fingerprint of the vendor key they happened with, and the
//! offboarding of workspaces that were removed or moved to another channel.

use rusqlite::{params, OptionalExtension};
use secrecy::SecretString;

use super::ledger::ConnectorRow;
use super::{Store, StoreError};
use crate::time::Millis;

/// What a verified paste stores, in one write.
#[derive(Debug, Clone)]
pub struct VerifiedToken<'a> {
    /// Connector (channel) id.
    pub id: &'a str,
    /// The token Gradient accepted.
    pub token: &'a SecretString,
    /// Its Gradient organization.
    pub organization_id: &'a str,
    /// Its name in Gradient.
    pub organization_name: Option<&'a str>,
    /// The integration status Gradient now shows.
    pub gradient_status: &'a str,
    /// Now (also the new token generation).
    pub now: Millis,
}

/// A pair owed a final zero: the account of a workspace that left `connector_id`'s channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offboarding {
    /// The old MSP's connector.
    pub connector_id: String,
    /// The account (workspace id).
    pub account_id: String,
}

impl Store {
    /// The connector (other than `except`) whose token belongs to Gradient organization `org`, if
    /// any. Disconnected connectors hold no organization.
    pub fn connector_holding(&self, org: &str, except: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM connectors WHERE organization_id = ?1 AND id != ?2
                   AND state != 'disconnected' ORDER BY id LIMIT 1",
                params![org, except],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a token that Gradient accepted, with its organization: the connector is `connected`
    /// from now on (a new token generation). Creates the connector when it is new.
    /// The token is sealed with the store key ([`super::key`]).
    pub fn store_verified_token(&self, v: &VerifiedToken<'_>) -> Result<(), StoreError> {
        let (sealed, key_id) = self.seal_token(v.id, v.token)?;
        self.conn().execute(
            "INSERT INTO connectors (id, token, state, state_reason, gradient_status, organization_name,
                organization_id, token_set_at, verified_at, updated_at, rejected_key_fp, token_key_id)
             VALUES (?1, ?2, 'connected', NULL, ?3, ?4, ?5, ?6, ?6, ?6, NULL, ?7)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, token_key_id = excluded.token_key_id,
                state = 'connected',
                state_reason = NULL, gradient_status = excluded.gradient_status,
                organization_name = COALESCE(excluded.organization_name, organization_name),
                organization_id = excluded.organization_id, token_set_at = excluded.token_set_at,
                verified_at = excluded.verified_at, updated_at = excluded.updated_at,
                rejected_key_fp = NULL, forgotten_at = NULL",
            params![
                v.id,
                sealed,
                v.gradient_status,
                v.organization_name,
                v.organization_id,
                v.now,
                key_id
            ],
        )?;
        Ok(())
    }

    /// Records that Gradient rejected the token generation `token_set_at` (401), with the vendor
    /// key's fingerprint. Returns false when a newer token was stored meanwhile.
    pub fn mark_rejected(
        &self,
        id: &str,
        token_set_at: Option<Millis>,
        reason: &str,
        vendor_key_fp: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE connectors SET state = 'token_rejected', state_reason = ?3, rejected_key_fp = ?4,
                updated_at = ?5
             WHERE id = ?1 AND token_set_at IS ?2",
            params![id, token_set_at, reason, vendor_key_fp, now],
        )?;
        Ok(n > 0)
    }

    /// Records what Gradient showed of a connector during a run: the integration status, when it
    /// last saw a sync, and the accounts the MSP has not mapped (when Gradient says so).
    pub fn record_gradient_view(
        &self,
        id: &str,
        status: Option<&str>,
        synced_at: Option<Millis>,
        unmapped_accounts: Option<&[String]>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let unmapped = unmapped_accounts.map(|u| serde_json::to_string(u).unwrap_or_default());
        self.conn().execute(
            "UPDATE connectors SET gradient_status = COALESCE(?2, gradient_status),
                gradient_synced_at = COALESCE(?3, gradient_synced_at),
                unmapped_accounts = COALESCE(?4, unmapped_accounts), updated_at = ?5
             WHERE id = ?1",
            params![id, status, synced_at, unmapped, now],
        )?;
        Ok(())
    }

    /// Connectors rejected with another vendor key than `vendor_key_fp`: worth verifying again.
    pub fn rejected_with_another_key(
        &self,
        vendor_key_fp: &str,
    ) -> Result<Vec<ConnectorRow>, StoreError> {
        Ok(self
            .connectors()?
            .into_iter()
            .filter(|c| {
                c.state == crate::domain::ConnectorState::TokenRejected
                    && c.has_token
                    && c.rejected_key_fp.as_deref() != Some(vendor_key_fp)
            })
            .collect())
    }

    /// Pairs owed a final zero (not yet done).
    pub fn offboarding_due(&self) -> Result<Vec<Offboarding>, StoreError> {
        let mut st = self.conn().prepare(
            "SELECT connector_id, account_id FROM offboarding WHERE done_at IS NULL
             ORDER BY connector_id, account_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Offboarding {
                connector_id: r.get(0)?,
                account_id: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// After run `run_id`: an offboarding whose final zeros were all accepted (or found unmapped,
    /// so Gradient holds no value) in that run is done; one with no last-known value is done too.
    pub fn settle_offboarding(&self, run_id: i64, now: Millis) -> Result<usize, StoreError> {
        let n = self.conn().execute(
            "UPDATE offboarding SET done_at = ?2
             WHERE done_at IS NULL AND (
                (EXISTS (SELECT 1 FROM ledger l WHERE l.run_id = ?1
                           AND l.connector_id = offboarding.connector_id
                           AND l.account_id = offboarding.account_id)
                 AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.run_id = ?1
                           AND l.connector_id = offboarding.connector_id
                           AND l.account_id = offboarding.account_id
                           AND l.outcome NOT IN ('pushed', 'unmapped')))
                OR NOT EXISTS (SELECT 1 FROM last_known k
                           WHERE k.connector_id = offboarding.connector_id
                             AND k.account_id = offboarding.account_id AND k.unit_count > 0))",
            params![run_id, now],
        )?;
        Ok(n)
    }
}
