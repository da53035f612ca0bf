//! The store: one SQLite file holding the vendor's inventory (channels, workspaces, module enablement
//! and protected units as intervals over time), connector tokens, runs, the ledger of pushes and the
//! last-known counts.
//!
//! Submodules own one concern each: [`schema`] (numbered migrations), [`import`] (JSON Lines into the
//! inventory), [`counting`] (pure, set-based queries that turn inventory into unit counts) and
//! [`ledger`] (connectors, services, runs, pushes, daemon state) and [`outbox`] (webhook events
//! waiting to be delivered).
//!
//! The file is created with mode 0600, runs in WAL mode with foreign keys on, `secure_delete` on
//! (freed bytes are zeroed) and a busy timeout, and is migrated on open. Partner tokens are sealed
//! under the store key ([`key`]); [`lifecycle`] owns backup, integrity check, ledger retention and
//! the repair of future-dated history.

use gradient_connector_domain::{count, domain, time};

pub mod connectors;
pub mod contacts;
pub mod counting;
pub mod handle;
pub mod import;
pub mod key;
pub mod ledger;
pub mod lifecycle;
pub mod metered;
pub mod outbox;
pub mod ownership;
pub mod run_inputs;
pub mod runs;
pub mod schema;
pub mod sources;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use handle::{LedgerSink, StoreHandle};

use rusqlite::{Connection, OpenFlags};

/// The page cache of a store connection (`PRAGMA cache_size`; negative = KiB): 16 MB.
pub(crate) const CACHE_SIZE: i64 = -16000;
/// The page size of a new store, in bytes.
const PAGE_SIZE: u32 = 16384;

/// Errors of this module.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened.
    #[error("cannot open the store {path}: {reason}; check [store] path, that its directory exists and is writable by this user, and that the disk is not full")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store was written by a newer gradient-connector.
    #[error("the store {path} has schema version {found}, newer than this gradient-connector understands ({supported}); upgrade gradient-connector")]
    TooNew {
        /// The store file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another process holds the write lock longer than the busy timeout.
    #[error("the store is locked by another process (an import or a sync?) for longer than the busy timeout; try again when it has finished")]
    Busy,
    /// The disk is full or the file is read-only.
    #[error("the store cannot be written ({0}); free disk space or fix the file's permissions")]
    NotWritable(#[source] Arc<rusqlite::Error>),
    /// Another run (the daemon's or a `sync`) holds the run lock.
    #[error("another sync is running against this store (the daemon, or another `sync`); wait for it to finish or send the daemon SIGUSR1 instead")]
    RunInProgress,
    /// Tokens must be sealed or opened but no store key was given.
    #[error("the store key is missing: partner tokens are sealed at rest with it; set store.key_file or the systemd credential `store-key`, and create a key with `gradient-connector store new-key /etc/gradient-connector/store-key`")]
    KeyMissing,
    /// The stored tokens were sealed with another key than the configured one.
    #[error("the store's tokens were sealed with another key (key id {sealed_with}; the configured store key has id {configured}): point store.key_file at the key the store was sealed with, or paste every token again with `gradient-connector connector add`")]
    WrongKey {
        /// The id of the key the tokens were sealed with.
        sealed_with: String,
        /// The id of the configured key.
        configured: String,
    },
    /// A sealed token does not open with its key (the file was altered or damaged).
    #[error("connector {connector}'s sealed token does not open with the store key (the store file was altered or damaged); paste its token again with `gradient-connector connector add {connector} --token-file PATH`")]
    TokenUnreadable {
        /// The connector.
        connector: String,
    },
    /// Any other SQLite error.
    #[error("store error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The file holds something this build cannot read (a damaged or altered store).
    #[error("the store holds data this gradient-connector cannot read ({0}); run `gradient-connector store check`, and restore the latest backup if it reports problems")]
    Damaged(String),
    /// A token could not be sealed (no random bytes, or the cipher refused).
    #[error("a partner token could not be sealed: {0}")]
    Seal(String),
    /// The store's writer thread is gone (it panicked or could not start).
    #[error("the store's writer thread stopped; restart gradient-connector")]
    WriterStopped,
    /// A lock of the store handle was poisoned by a panic elsewhere.
    #[error(
        "an internal lock of the store ({0}) was poisoned by a panic; restart gradient-connector"
    )]
    Poisoned(&'static str),
    /// A blocking store task failed (it panicked or was cancelled at shutdown).
    #[error("a store task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DiskFull) | Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => {
                StoreError::NotWritable(Arc::new(e))
            }
            _ => StoreError::Sqlite(Arc::new(e)),
        }
    }
}

/// An open connection to the store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The key tokens are sealed with ([`key`]); None: tokens can be neither read nor written.
    key: Option<std::sync::Arc<key::StoreKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it with mode 0600 if missing, and applies migrations.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            // Create the file ourselves so that it is 0600 from its first byte.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| open_err(e.to_string()))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            key: None,
        };
        store.configure().map_err(|e| match e {
            StoreError::Busy => StoreError::Busy,
            other => open_err(other.to_string()),
        })?;
        schema::migrate(&mut store.conn, path)?;
        Ok(store)
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        // A new store gets larger pages than SQLite's 4 KiB: its trees are shallower and split less
        // often (an import is a quarter faster). An existing store keeps its page size.
        self.conn
            .execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))?;
        // WAL sidecar files (-wal, -shm) inherit the main file's permissions in SQLite.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Damaged(format!(
                "the store could not switch to WAL mode (got {mode})"
            )));
        }
        self.conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = {CACHE_SIZE};
             PRAGMA temp_store = MEMORY;
             PRAGMA threads = 2;"
        ))?;
        Ok(())
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA integrity_check`: `["ok"]` for a sound file, else each problem found.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One small write (the time of the probe in `daemon_state`): whether the store takes writes.
    pub fn probe_write(&self, now: crate::time::Millis) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO daemon_state (key, value) VALUES ('write_probe', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [now.to_string()],
        )?;
        Ok(())
    }

    /// The underlying connection: SQL stays inside `store`.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Mutable access to the connection (transactions): SQL stays inside `store`.
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
impl Store {
    /// Every unit interval `(unit ref, from, to)`, in unit and time order, for unit tests.
    pub(crate) fn unit_intervals_for_test(
        &self,
    ) -> Vec<(i64, crate::time::Millis, Option<crate::time::Millis>)> {
        self.conn()
            .prepare("SELECT unit, from_at, to_at FROM unit_intervals ORDER BY unit, from_at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// A new store `s.db` in a temporary directory, with a store key, for unit tests; the directory
/// lasts as long as the returned guard.
#[cfg(any(test, feature = "test-support"))]
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db"), Duration::from_secs(1)).unwrap();
    store.set_key(Some(std::sync::Arc::new(key::StoreKey::new(
        secrecy::SecretBox::new(Box::new([42; key::KEY_BYTES])),
    ))));
    (dir, store)
}

#[cfg(test)]
mod error_tests {
    use super::StoreError;

    #[test]
    fn sqlite_errors_keep_their_source_and_disk_full_is_not_writable() {
        let e = StoreError::from(rusqlite::Error::InvalidQuery);
        assert!(matches!(e, StoreError::Sqlite(_)));
        assert!(std::error::Error::source(&e).is_some(), "{e}");
        let full = StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert!(matches!(full, StoreError::NotWritable(_)), "{full}");
        assert!(std::error::Error::source(&full).is_some());
        assert!(full.to_string().contains("free disk space"), "{full}");
    }
}
