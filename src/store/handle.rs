//! The store's one handle for async code ([`StoreHandle`]): a **writer thread** that owns the only
//! writing connection of the process — write jobs and ledger rows go through it in order — and a
//! small pool of **reading connections** used on tokio's blocking pool. No SQLite call ever runs on
//! an async worker.
//!
//! Ledger rows are sent as they complete ([`LedgerSink`]) and written in small transactions; while
//! another process holds the store (an import), the writer waits and tries again: a row is never
//! dropped for a busy store. Because jobs run in the order they were sent, a write sent after a
//! run's rows (closing the run) sees every one of them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::key::StoreKey;
use super::ledger::LedgerEntry;
use super::{Store, StoreError};

/// Most ledger rows written in one transaction.
const BATCH: usize = 2000;
/// Reading connections kept open for reuse.
const READERS_KEPT: usize = 4;
/// Longest pause between two tries of a batch while another writer holds the store.
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(1);

type WriteJob = Box<dyn FnOnce(Result<&mut Store, &StoreError>) + Send>;
/// The store key every connection of a handle uses (replaced on a reload).
type SharedKey = Arc<Mutex<Option<Arc<StoreKey>>>>;

enum Job {
    Write(WriteJob),
    Row(LedgerEntry),
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    jobs: Mutex<Sender<Job>>,
    readers: Mutex<Vec<Store>>,
    ledger_error: Arc<Mutex<Option<String>>>,
    key: SharedKey,
}

/// The store, for async code. Cheap to clone; every clone shares the writer thread and the readers.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl StoreHandle {
    /// A handle on the store at `path`; the writer thread opens (creating and migrating) the file
    /// with its first job. Nothing is opened here.
    pub fn new(path: &Path, busy_timeout: Duration) -> StoreHandle {
        let (tx, rx) = channel::<Job>();
        let ledger_error = Arc::new(Mutex::new(None));
        let key: SharedKey = Arc::new(Mutex::new(None));
        let (p, errors, k) = (path.to_path_buf(), ledger_error.clone(), key.clone());
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&p, busy_timeout, rx, &errors, &k));
        if let Err(e) = spawned {
            // Every job's answer channel is dropped: callers get "the store writer stopped".
            tracing::error!(error = %e, "cannot start the store's writer thread");
        }
        StoreHandle {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                busy_timeout,
                jobs: Mutex::new(tx),
                readers: Mutex::new(Vec::new()),
                ledger_error,
                key,
            }),
        }
    }

    /// Seals and opens partner tokens with `key` from now on (every connection of this handle).
    /// The writer seals any token an older build left in plain text before its next job.
    pub fn with_key(self, key: Arc<StoreKey>) -> StoreHandle {
        if let Ok(mut k) = self.inner.key.lock() {
            *k = Some(key);
        }
        self
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread, after every job and row sent before it.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |store| {
            let result = match store {
                Ok(s) => f(s),
                Err(e) => Err(e.clone()),
            };
            let _ = tx.send(result);
        });
        self.send(Job::Write(job))?;
        rx.await
            .map_err(|_| StoreError::Sqlite("the store's writer thread stopped".into()))?
    }

    /// Runs `f` with a reading connection on tokio's blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .map_err(|_| StoreError::Sqlite("the reader pool is poisoned".into()))?
                .pop();
            let mut store = match pooled {
                Some(s) => s,
                None => Store::open(&inner.path, inner.busy_timeout)?,
            };
            store.set_key(inner.key.lock().ok().and_then(|k| k.clone()));
            let result = f(&mut store);
            if let Ok(mut pool) = inner.readers.lock() {
                if pool.len() < READERS_KEPT && store.conn().is_autocommit() {
                    pool.push(store);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))?
    }

    /// A sink for ledger rows: each row goes to the writer thread as it is sent.
    pub fn ledger(&self) -> Result<LedgerSink, StoreError> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .map_err(|_| StoreError::Sqlite("the store's job queue is poisoned".into()))?
            .clone();
        Ok(LedgerSink { jobs })
    }

    /// The last failure to write ledger rows (other than a busy store, which is waited on), taken.
    pub fn take_ledger_error(&self) -> Option<String> {
        self.inner.ledger_error.lock().ok()?.take()
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.inner
            .jobs
            .lock()
            .map_err(|_| StoreError::Sqlite("the store's job queue is poisoned".into()))?
            .send(job)
            .map_err(|_| StoreError::Sqlite("the store's writer thread stopped".into()))
    }
}

/// Where a run sends its ledger rows (cheap to clone).
#[derive(Clone)]
pub struct LedgerSink {
    jobs: Sender<Job>,
}

impl LedgerSink {
    /// Queues one row for the writer thread.
    pub fn send(&self, e: LedgerEntry) {
        // A send error means the writer thread is gone; the run's tally (read back from the
        // ledger) then shows what was written.
        let _ = self.jobs.send(Job::Row(e));
    }
}

fn writer_loop(
    path: &Path,
    busy_timeout: Duration,
    rx: Receiver<Job>,
    errors: &Mutex<Option<String>>,
    key: &SharedKey,
) {
    let mut store: Option<Store> = None;
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        let job = match queue.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every handle is gone
            },
        };
        if store.is_none() {
            match Store::open(path, busy_timeout) {
                Ok(s) => store = Some(s),
                Err(e) => {
                    fail(job, &e, errors);
                    continue;
                }
            }
        }
        let Some(s) = store.as_mut() else { continue };
        let current = key.lock().ok().and_then(|k| k.clone());
        let changed = match (&current, s.key()) {
            (Some(new), Some(old)) => !Arc::ptr_eq(new, old),
            (Some(_), None) => true,
            _ => false,
        };
        s.set_key(current);
        if changed {
            // The migration to sealed tokens: plain tokens left by an older build are sealed now.
            if let Err(e) = s.seal_plain_tokens() {
                tracing::error!(error = %e, "plain partner tokens could not be sealed");
                s.set_key(None);
                fail(job, &e, errors);
                continue;
            }
        }
        match job {
            Job::Write(f) => f(Ok(s)),
            Job::Row(first) => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Job::Row(e)) => batch.push(e),
                        Ok(other) => {
                            queue.push_back(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // Keep rows queued behind a write job in order: rows already taken go first.
                if let Err(e) = record_waiting(s, &batch) {
                    tracing::error!(error = %e, rows = batch.len(), "ledger rows could not be written");
                    if let Ok(mut slot) = errors.lock() {
                        *slot = Some(e.to_string());
                    }
                }
            }
        }
    }
}

fn fail(job: Job, e: &StoreError, errors: &Mutex<Option<String>>) {
    match job {
        Job::Write(f) => f(Err(e)),
        Job::Row(_) => {
            if let Ok(mut slot) = errors.lock() {
                *slot = Some(e.to_string());
            }
        }
    }
}

/// Writes one batch; while the store is busy (an import holds the write lock longer than the busy
/// timeout) it waits and tries again: a row Gradient accepted is never dropped for a busy store.
fn record_waiting(store: &mut Store, batch: &[LedgerEntry]) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(50);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cadence, PairOutcome, Trigger};

    fn row(run: i64, account: &str) -> LedgerEntry {
        LedgerEntry::for_test(run, "c", account, PairOutcome::Pushed, 1)
    }

    #[tokio::test]
    async fn a_write_after_rows_sees_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let h = StoreHandle::new(&dir.path().join("s.db"), Duration::from_secs(1));
        let (run, _) = h
            .write(|s| s.open_run(Trigger::Cli, Cadence::Daily, "p", None, 1))
            .await
            .unwrap();
        let sink = h.ledger().unwrap();
        for i in 0..5000 {
            sink.send(row(run, &format!("a{i}")));
        }
        let tally = h
            .write(move |s| s.run_tally_by_connector(run))
            .await
            .unwrap();
        assert_eq!(tally["c"].pushed, 5000);
        // Readers see it too.
        let n = h
            .read(move |s| s.run_tally_by_connector(run))
            .await
            .unwrap();
        assert_eq!(n["c"].pushed, 5000);
        assert!(h.take_ledger_error().is_none());
    }

    #[tokio::test]
    async fn an_unopenable_store_is_an_error_for_each_job() {
        let h = StoreHandle::new(Path::new("/nonexistent-dir/s.db"), Duration::from_secs(1));
        let e = h.write(|_| Ok(())).await.unwrap_err();
        assert!(e.to_string().contains("cannot open the store"), "{e}");
        assert!(h.read(|_| Ok(())).await.is_err());
    }
}
