//! The store's one handle for async code ([`StoreHandle`]): a **writer thread** that owns the only
//! writing connection of the process — write jobs and ledger rows go through it in order — and a
//! small pool of **reading connections** used on tokio's blocking pool. No SQLite call ever runs on
//! an async worker.
//!
//! Ledger rows are sent as they complete ([`LedgerSink`]) and written in small transactions; while
//! another process holds the store (an import), the writer waits and tries again: a row is never
//! dropped for a busy store. Because jobs run in the order they were sent, a write sent after a
//! run's rows (closing the run) sees every one of them.
//!
//! A row that cannot be written (a full disk, a read-only file) breaks its sink at once
//! ([`LedgerSink::broken`]): the run stops sending. The handle then counts the store as not
//! writable ([`StoreHandle::unwritable`], `/readyz`) until a write succeeds again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

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
    Row(LedgerEntry, Arc<Breakage>),
}

/// Why ledger rows could not be written: one per sink (one per run), and one for the handle.
#[derive(Debug, Default)]
struct Breakage {
    broken: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Breakage {
    fn set(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| reason.to_string());
        }
        self.broken.cancel();
    }

    fn reason(&self) -> Option<String> {
        self.reason.lock().ok()?.clone()
    }
}

/// How long after a refused write the store is taken to be unwritable before a probe tries again
/// (so a readiness check right after a full disk says so, and one later sees the room freed).
pub const REPROBE_AFTER: Duration = Duration::from_secs(3);

/// Why the store refused its last write, and when it was last seen refusing one.
#[derive(Debug, Clone)]
struct Refusal {
    reason: String,
    seen: std::time::Instant,
}

/// Whether the store took its last write (`None`) or why not; shared with the writer thread.
type Health = Arc<Mutex<Option<Refusal>>>;

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    jobs: Mutex<Sender<Job>>,
    readers: Mutex<Vec<Store>>,
    health: Health,
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
        let health: Health = Arc::default();
        let key: SharedKey = Arc::new(Mutex::new(None));
        let (p, h, k) = (path.to_path_buf(), health.clone(), key.clone());
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&p, busy_timeout, rx, &h, &k));
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
                health,
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
        let health = self.inner.health.clone();
        let job: WriteJob = Box::new(move |store| {
            let result = match store {
                Ok(s) => f(s),
                Err(e) => Err(e.clone()),
            };
            if let Err(e @ StoreError::NotWritable(_)) = &result {
                set_health(&health, Some(e.to_string()));
            }
            // The caller may have gone (a run abandoned at shutdown): the write itself happened.
            let _ = tx.send(result);
        });
        self.send(Job::Write(job))?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
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
                .map_err(|_| StoreError::Poisoned("the reader pool"))?
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
        .map_err(|e| StoreError::Task(Arc::new(e)))?
    }

    /// A sink for one run's ledger rows: each row goes to the writer thread as it is sent, and a
    /// row that cannot be written breaks the sink ([`LedgerSink::broken`]).
    pub fn ledger(&self) -> Result<LedgerSink, StoreError> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .map_err(|_| StoreError::Poisoned("the job queue"))?
            .clone();
        Ok(LedgerSink {
            jobs,
            breakage: Arc::default(),
        })
    }

    /// Why the store's last write failed (a full disk, a read-only file), until a write succeeds
    /// again; `None` while the store takes writes.
    pub fn unwritable(&self) -> Option<String> {
        Some(self.inner.health.lock().ok()?.as_ref()?.reason.clone())
    }

    /// While the store is unwritable: once [`REPROBE_AFTER`] has passed since it last refused a
    /// write, tries one small write, so that a store with room again is seen as such. Returns why
    /// it is still unwritable.
    pub async fn recheck_writable(&self) -> Option<String> {
        let refusal = self.inner.health.lock().ok()?.clone()?;
        if refusal.seen.elapsed() < REPROBE_AFTER {
            return Some(refusal.reason);
        }
        let now = crate::time::now_ms();
        match self.write(move |s| s.probe_write(now)).await {
            Ok(()) => {
                set_health(&self.inner.health, None);
                None
            }
            Err(e) => Some(e.to_string()),
        }
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.inner
            .jobs
            .lock()
            .map_err(|_| StoreError::Poisoned("the job queue"))?
            .send(job)
            .map_err(|_| StoreError::WriterStopped)
    }
}

/// Where a run sends its ledger rows (cheap to clone; clones share one breakage).
#[derive(Clone)]
pub struct LedgerSink {
    jobs: Sender<Job>,
    breakage: Arc<Breakage>,
}

impl LedgerSink {
    /// Queues one row for the writer thread. When the writer is gone the sink breaks.
    pub fn send(&self, e: LedgerEntry) {
        if self.jobs.send(Job::Row(e, self.breakage.clone())).is_err() {
            tracing::error!("a ledger row could not be queued: the store's writer thread stopped");
            self.breakage.set("the store's writer thread stopped");
        }
    }

    /// Resolves when a row of this sink could not be written: the run must stop sending.
    pub fn broken(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.breakage.broken.cancelled()
    }

    /// Why a row of this sink could not be written, if one could not.
    pub fn failure(&self) -> Option<String> {
        if self.breakage.broken.is_cancelled() {
            self.breakage.reason()
        } else {
            None
        }
    }
}

fn set_health(health: &Mutex<Option<Refusal>>, state: Option<String>) {
    if let Ok(mut h) = health.lock() {
        let was_ok = h.is_none();
        match (&state, was_ok) {
            (Some(_), true) => metrics::gauge!("gradient_connector_store_writable").set(0.0),
            (None, false) => {
                metrics::gauge!("gradient_connector_store_writable").set(1.0);
                tracing::info!("the store takes writes again");
            }
            _ => {}
        }
        *h = state.map(|reason| Refusal {
            reason,
            seen: std::time::Instant::now(),
        });
    }
}

/// A batch of rows could not be written: every run that sent one stops, and the store counts as
/// not writable.
fn rows_failed(rows: usize, sinks: &[Arc<Breakage>], e: &StoreError, health: &Health) {
    tracing::error!(error = %e, rows, "ledger rows could not be written: the run stops sending");
    metrics::counter!("gradient_connector_store_write_failures_total").increment(1);
    let reason = e.to_string();
    for b in sinks {
        b.set(&reason);
    }
    set_health(health, Some(reason));
}

fn writer_loop(
    path: &Path,
    busy_timeout: Duration,
    rx: Receiver<Job>,
    health: &Health,
    key: &SharedKey,
) {
    metrics::gauge!("gradient_connector_store_writable").set(1.0);
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
                    fail(job, &e, health);
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
                fail(job, &e, health);
                continue;
            }
        }
        match job {
            Job::Write(f) => f(Ok(s)),
            Job::Row(first, b) => {
                let mut batch = vec![(first, b)];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Job::Row(e, b)) => batch.push((e, b)),
                        Ok(other) => {
                            queue.push_back(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // Rows of a sink that already broke are not written: its run stopped, and rows
                // after a hole would make the ledger look complete where it is not.
                batch.retain(|(_, b)| !b.broken.is_cancelled());
                if batch.is_empty() {
                    continue;
                }
                // Keep rows queued behind a write job in order: rows already taken go first.
                let (rows, sinks): (Vec<LedgerEntry>, Vec<Arc<Breakage>>) =
                    batch.into_iter().unzip();
                match record_waiting(s, &rows) {
                    Ok(()) => set_health(health, None),
                    Err(e) => rows_failed(rows.len(), &sinks, &e, health),
                }
            }
        }
    }
}

fn fail(job: Job, e: &StoreError, health: &Health) {
    match job {
        Job::Write(f) => f(Err(e)),
        Job::Row(_, b) => rows_failed(1, &[b], e, health),
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
        assert!(sink.failure().is_none());
        assert!(h.unwritable().is_none());
    }

    #[tokio::test]
    async fn an_unopenable_store_is_an_error_for_each_job() {
        let h = StoreHandle::new(Path::new("/nonexistent-dir/s.db"), Duration::from_secs(1));
        let e = h.write(|_| Ok(())).await.unwrap_err();
        assert!(e.to_string().contains("cannot open the store"), "{e}");
        assert!(h.read(|_| Ok(())).await.is_err());
    }
}
