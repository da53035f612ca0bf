//! The store key and the sealing of partner tokens at rest.
//!
//! A partner token is never written to the store in plain text: it is sealed with
//! XChaCha20-Poly1305 under the **store key** (32 random bytes held outside the store: a file, or
//! the systemd credential `store-key`), with a fresh random 24-byte nonce per seal and the
//! connector id as associated data (a sealed token moved to another connector's row does not
//! open). The `connectors` row keeps `base64(nonce ‖ ciphertext)` in `token` and the key's id in
//! `token_key_id`: a keyed fingerprint of the key (never the key), so that a store opened with
//! another key says so instead of failing to decrypt.
//!
//! This module owns the key type ([`StoreKey`]), seal/open, and the store's operations on sealed
//! tokens: sealing the plain tokens an older build left ([`Store::seal_plain_tokens`]), re-sealing
//! every token under a new key in one transaction ([`Store::rotate_key`]) and wiping freed bytes
//! from the WAL ([`Store::wipe_freed`]).

use std::sync::Arc;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rusqlite::params;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

use super::{Store, StoreError};

/// Bytes of a store key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
const NONCE_BYTES: usize = 24;
/// Domain separation of the associated data (bumped if the sealed form ever changes).
const AAD_PREFIX: &[u8] = b"gradient-connector/partner-token/v1\0";
/// What the key id is a keyed fingerprint of.
const KEY_ID_LABEL: &[u8] = b"gradient-connector/store-key-id/v1";

/// The store key: 32 bytes, never printed, with its id (a keyed fingerprint, safe to show).
pub struct StoreKey {
    key: SecretBox<[u8; KEY_BYTES]>,
    id: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl StoreKey {
    /// A key from its 32 bytes.
    pub fn new(key: SecretBox<[u8; KEY_BYTES]>) -> StoreKey {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(KEY_ID_LABEL);
        let tag = mac.finalize().into_bytes();
        let id = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        StoreKey { key, id }
    }

    /// The key's id: a keyed fingerprint (HMAC-SHA256 of a fixed label under the key, 8 bytes in
    /// hex). It identifies the key without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.expose_secret().into())
    }

    /// Seals `token` for connector `connector`: `base64(nonce ‖ ciphertext ‖ tag)`.
    pub fn seal(&self, connector: &str, token: &SecretString) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| {
            StoreError::Seal(format!("no random bytes from the operating system: {e}"))
        })?;
        let aad = aad(connector);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: token.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Seal("the cipher refused it".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens a token sealed by [`StoreKey::seal`] for `connector`.
    pub fn open(&self, connector: &str, sealed: &str) -> Result<SecretString, StoreError> {
        let broken = || StoreError::TokenUnreadable {
            connector: connector.to_string(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| broken())?;
        if raw.len() < NONCE_BYTES + 16 {
            return Err(broken());
        }
        let (nonce, body) = raw.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| broken())?;
        let aad = aad(connector);
        let plain = self
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| broken())?;
        let text = String::from_utf8(plain).map_err(|_| broken())?;
        Ok(SecretString::from(text))
    }
}

fn aad(connector: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(connector.as_bytes());
    aad
}

/// A stored token column pair (`token`, `token_key_id`), turned back into the token.
pub(crate) fn unseal(
    key: Option<&Arc<StoreKey>>,
    connector: &str,
    stored: Option<String>,
    key_id: Option<String>,
) -> Result<Option<SecretString>, StoreError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let Some(key) = key else {
        return Err(StoreError::KeyMissing);
    };
    match key_id {
        // Plain text left by an older build: readable, and sealed by the next keyed open.
        None => Ok(Some(SecretString::from(stored))),
        Some(id) if id != key.id() => Err(StoreError::WrongKey {
            sealed_with: id,
            configured: key.id().to_string(),
        }),
        Some(_) => key.open(connector, &stored).map(Some),
    }
}

impl Store {
    /// Uses `key` to seal and open tokens from now on (None: tokens can be neither read nor
    /// written).
    pub fn set_key(&mut self, key: Option<Arc<StoreKey>>) {
        self.key = key;
    }

    /// The key in use.
    pub fn key(&self) -> Option<&Arc<StoreKey>> {
        self.key.as_ref()
    }

    /// The key in use, or the error that says how to provide one.
    pub(crate) fn require_key(&self) -> Result<&Arc<StoreKey>, StoreError> {
        self.key.as_ref().ok_or(StoreError::KeyMissing)
    }

    /// Seals `token` for connector `id` under the key in use: the `(token, token_key_id)` pair.
    pub(crate) fn seal_token(
        &self,
        id: &str,
        token: &SecretString,
    ) -> Result<(String, String), StoreError> {
        let key = self.require_key()?;
        Ok((key.seal(id, token)?, key.id().to_string()))
    }

    /// The ids of the keys the stored tokens are sealed with (empty: no sealed token), and how
    /// many tokens are still plain text.
    pub fn token_keys(&self) -> Result<(Vec<String>, u64), StoreError> {
        let mut st = self.conn().prepare(
            "SELECT DISTINCT token_key_id FROM connectors
             WHERE token IS NOT NULL AND token_key_id IS NOT NULL ORDER BY 1",
        )?;
        let ids = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        let plain: i64 = self.conn().query_row(
            "SELECT count(*) FROM connectors WHERE token IS NOT NULL AND token_key_id IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok((ids, plain.max(0) as u64))
    }

    /// Fails with [`StoreError::WrongKey`] when a stored token is sealed with another key than
    /// the one in use (or [`StoreError::KeyMissing`] when tokens are stored and no key is).
    pub fn check_key(&self) -> Result<(), StoreError> {
        let (ids, plain) = self.token_keys()?;
        if ids.is_empty() && plain == 0 {
            return Ok(());
        }
        let key = self.require_key()?;
        match ids.into_iter().find(|id| id != key.id()) {
            Some(other) => Err(StoreError::WrongKey {
                sealed_with: other,
                configured: key.id().to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The migration to sealed tokens: seals every plain-text token (left by an older build) under
    /// the key in use, in one transaction, then wipes the freed bytes. Returns how many.
    pub fn seal_plain_tokens(&mut self) -> Result<usize, StoreError> {
        if self.token_keys()?.1 == 0 {
            return Ok(0);
        }
        let key = self.require_key()?.clone();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let plain: Vec<(String, String)> = {
            let mut st = tx.prepare(
                "SELECT id, token FROM connectors WHERE token IS NOT NULL AND token_key_id IS NULL",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, token) in &plain {
            let sealed = key.seal(id, &SecretString::from(token.clone()))?;
            tx.execute(
                "UPDATE connectors SET token = ?2, token_key_id = ?3 WHERE id = ?1",
                params![id, sealed, key.id()],
            )?;
        }
        tx.commit()?;
        self.wipe_freed();
        tracing::info!(
            tokens = plain.len(),
            key_id = key.id(),
            "partner tokens left in plain text by an older version are now sealed with the store key"
        );
        Ok(plain.len())
    }

    /// Re-seals every stored token under `new`, in one transaction: each is opened with the key in
    /// use (a token sealed with another key fails the whole rotation, nothing changes), sealed
    /// under `new` with a fresh nonce, then the freed bytes are wiped. Afterwards the store uses
    /// `new`. Returns how many tokens were re-sealed.
    pub fn rotate_key(&mut self, new: Arc<StoreKey>) -> Result<usize, StoreError> {
        let old = self.key.clone();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows: Vec<(String, Option<String>, Option<String>)> = {
            let mut st = tx.prepare(
                "SELECT id, token, token_key_id FROM connectors WHERE token IS NOT NULL ORDER BY id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, stored, key_id) in &rows {
            let token = unseal(old.as_ref(), id, stored.clone(), key_id.clone())?
                .ok_or_else(|| StoreError::Damaged("a token vanished during rotation".into()))?;
            tx.execute(
                "UPDATE connectors SET token = ?2, token_key_id = ?3 WHERE id = ?1",
                params![id, new.seal(id, &token)?, new.id()],
            )?;
        }
        tx.commit()?;
        self.key = Some(new);
        self.wipe_freed();
        Ok(rows.len())
    }

    /// Moves every committed page from the WAL into the file and truncates the WAL, so that bytes
    /// freed by a forgotten or replaced token (zeroed in the file by `secure_delete`) do not
    /// survive as an old page image in `-wal`. Best effort: a reader holding an old snapshot
    /// (another process) delays it to the next write.
    pub fn wipe_freed(&self) {
        if let Err(e) = self
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        {
            tracing::debug!(error = %e, "WAL checkpoint after a token change did not run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(byte: u8) -> Arc<StoreKey> {
        Arc::new(StoreKey::new(SecretBox::new(Box::new([byte; KEY_BYTES]))))
    }

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_connector() {
        let k = key(1);
        let t = SecretString::from("partner-token-123".to_string());
        let a = k.seal("c1", &t).unwrap();
        let b = k.seal("c1", &t).unwrap();
        assert_ne!(a, b, "a fresh nonce per seal");
        assert!(!a.contains("partner-token"));
        assert_eq!(
            k.open("c1", &a).unwrap().expose_secret(),
            "partner-token-123"
        );
        assert!(matches!(
            k.open("c2", &a),
            Err(StoreError::TokenUnreadable { .. })
        ));
        assert!(key(2).open("c1", &a).is_err());
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id().len(), 16);
        assert!(!format!("{:?}", k).contains("1, 1"));
    }

    #[test]
    fn tokens_are_sealed_in_the_store_and_rotation_reseals_them() {
        let (_d, mut s) = crate::temp_store();
        s.set_key(None);
        let t = SecretString::from("tok-abc".to_string());
        // Without a key a token can be neither written nor read.
        assert!(matches!(
            s.set_token("c", &t, 1),
            Err(StoreError::KeyMissing)
        ));
        s.set_key(Some(key(1)));
        s.set_token("c", &t, 1).unwrap();
        let raw: String = s
            .conn()
            .query_row("SELECT token FROM connectors", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.contains("tok-abc"));
        assert_eq!(s.token("c").unwrap().unwrap().expose_secret(), "tok-abc");
        // Another key is told apart from a broken seal.
        s.set_key(Some(key(2)));
        assert!(matches!(s.token("c"), Err(StoreError::WrongKey { .. })));
        assert!(matches!(
            s.rotate_key(key(3)),
            Err(StoreError::WrongKey { .. })
        ));
        s.set_key(Some(key(1)));
        assert_eq!(s.rotate_key(key(2)).unwrap(), 1);
        assert_eq!(s.token("c").unwrap().unwrap().expose_secret(), "tok-abc");
        s.set_key(Some(key(1)));
        assert!(matches!(s.check_key(), Err(StoreError::WrongKey { .. })));
    }

    #[test]
    fn plain_tokens_left_by_an_older_build_are_sealed() {
        let (_d, mut s) = crate::temp_store();
        s.conn()
            .execute(
                "INSERT INTO connectors (id, token, state, updated_at) VALUES ('c', 'plain-tok', 'connected', 1)",
                [],
            )
            .unwrap();
        s.set_key(None);
        assert!(matches!(s.seal_plain_tokens(), Err(StoreError::KeyMissing)));
        s.set_key(Some(key(7)));
        assert_eq!(s.seal_plain_tokens().unwrap(), 1);
        assert_eq!(s.seal_plain_tokens().unwrap(), 0);
        let (ids, plain) = s.token_keys().unwrap();
        assert_eq!((ids, plain), (vec![key(7).id().to_string()], 0));
        assert_eq!(s.token("c").unwrap().unwrap().expose_secret(), "plain-tok");
    }

    /// Whether the store's file or its WAL holds `needle`.
    fn file_holds(s: &Store, needle: &[u8]) -> bool {
        let mut wal = s.path().as_os_str().to_owned();
        wal.push("-wal");
        [s.path().to_path_buf(), wal.into()]
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
    }

    #[test]
    fn forgotten_and_replaced_tokens_leave_no_bytes_in_the_file_or_the_wal() {
        let (_d, mut s) = crate::temp_store();
        let secure: i64 = s
            .conn()
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(secure, 1, "secure_delete on for every connection");
        // Plain tokens an older build left, among other rows.
        for i in 0..20 {
            s.conn()
                .execute(
                    "INSERT INTO connectors (id, token, state, updated_at) VALUES (?1, ?2, 'connected', 1)",
                    params![format!("c{i}"), format!("PLAINTOKEN-{i:03}-xyzzy")],
                )
                .unwrap();
        }
        assert!(file_holds(&s, b"PLAINTOKEN-007-xyzzy"));
        s.seal_plain_tokens().unwrap();
        for i in 0..20 {
            let t = format!("PLAINTOKEN-{i:03}-xyzzy");
            assert!(!file_holds(&s, t.as_bytes()), "{t} left after sealing");
        }
        assert!(s.disconnect("c3", "test", 2).unwrap());
        let sealed_c4: String = s
            .conn()
            .query_row("SELECT token FROM connectors WHERE id = 'c4'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(s.disconnect("c4", "test", 2).unwrap());
        s.wipe_freed();
        assert!(
            !file_holds(&s, sealed_c4.as_bytes()),
            "a forgotten token's sealed bytes"
        );
    }
}
