//! The ledger writer: a thread that owns a store connection during a run and writes ledger rows in
//! small transactions as pushes complete, so that a crash loses at most the last few milliseconds of
//! records and the push path never waits on the disk. A busy store (another writer) is waited on,
//! never a reason to drop a row.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::store::ledger::LedgerEntry;
use crate::store::{StoreError, StoreLocation};

/// Most rows written in one transaction.
const BATCH: usize = 2000;

/// Handle to the writer thread.
pub struct LedgerWriter {
    tx: Sender<LedgerEntry>,
    handle: JoinHandle<Result<u64, StoreError>>,
}

impl LedgerWriter {
    /// Opens a connection and starts the thread.
    pub fn start(store: &StoreLocation) -> Result<LedgerWriter, StoreError> {
        let mut conn = store.open()?;
        let (tx, rx) = channel::<LedgerEntry>();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(&mut conn, rx))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the ledger writer: {e}")))?;
        Ok(LedgerWriter { tx, handle })
    }

    /// A sender for ledger rows (cheap to clone).
    pub fn sender(&self) -> Sender<LedgerEntry> {
        self.tx.clone()
    }

    /// Waits (off the async workers) until every row sent has been written; returns how many were
    /// written. Every other sender must have been dropped first.
    pub async fn finish(self) -> Result<u64, StoreError> {
        drop(self.tx);
        let handle = self.handle;
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| StoreError::Sqlite(format!("the ledger writer could not be joined: {e}")))?
            .map_err(|_| StoreError::Sqlite("the ledger writer panicked".into()))?
    }
}

/// Longest pause between two tries of a batch while another writer holds the store.
const BUSY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes one batch; while the store is busy (an import holds the write lock longer than the busy
/// timeout) it waits and tries again: a row Gradient accepted is never dropped for a busy store.
fn record_waiting(
    store: &mut crate::store::Store,
    batch: &[LedgerEntry],
) -> Result<(), StoreError> {
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match store.record(batch) {
            Err(StoreError::Busy) => {
                tracing::warn!(
                    rows = batch.len(),
                    "the store is busy (another writer, e.g. an import): ledger rows wait"
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(BUSY_PAUSE_MAX);
            }
            other => return other,
        }
    }
}

fn write_loop(
    store: &mut crate::store::Store,
    rx: Receiver<LedgerEntry>,
) -> Result<u64, StoreError> {
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    // recv() blocks until a row arrives or every sender is gone.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        record_waiting(store, &batch)?;
        written += batch.len() as u64;
        batch.clear();
    }
    Ok(written)
}
