//! Pull sources: the vendor's inventory comes in by itself, from its PostgreSQL database
//! ([`postgres`]) or from any program that prints JSON Lines ([`command`]). A pull streams the
//! source's records into the store's own import (the same code as `import` and `import
//! --snapshot`), in one transaction through the store's one writer: memory does not grow with the
//! result, and a pull that fails anywhere — a bad line, a non-zero exit, a dropped connection, a
//! timeout — applies nothing.
//!
//! A producer task feeds [`Piece`]s into a bounded channel; the import reads them as a byte stream
//! ([`reader::PieceReader`]) and sees the end of its input only when the producer said
//! [`Piece::Done`] — so the producer's verdict (the exit status, the end of the rows) always comes
//! before the commit.

pub mod command;
pub mod postgres;
mod reader;

use std::time::Duration;

use gradient_connector_domain::domain::escape;
use gradient_connector_store::import::{ImportError, ImportSummary, SnapshotRules};
use gradient_connector_store::{StoreError, StoreHandle};
use secrecy::SecretString;
use tokio::sync::mpsc;

pub use reader::Piece;

/// How much longer than its `statement_timeout` a PostgreSQL pull may take in all.
const POSTGRES_GRACE: Duration = Duration::from_secs(5);

/// Pieces waiting between the producer and the import (each a line or a chunk of lines).
const PIECES_IN_FLIGHT: usize = 64;

/// How a source's records are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// As `import --snapshot`: the whole state of every channel the records name.
    Snapshot(SnapshotRules),
    /// As `import`: changes.
    Records,
}

/// Where a source's records come from.
#[derive(Clone)]
pub enum SourceKind {
    /// One SQL statement on the vendor's PostgreSQL; each row's column `record` is one record.
    Postgres {
        /// The libpq URL (a secret: it may hold a password).
        url: SecretString,
        /// The statement.
        query: String,
    },
    /// A program (argv, no shell) that prints JSON Lines on stdout.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

impl std::fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Postgres { .. } => f.write_str("Postgres { url: [REDACTED], .. }"),
            SourceKind::Command { argv } => write!(f, "Command {{ argv: {argv:?} }}"),
        }
    }
}

/// One source, ready to pull.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Its name (`[[source]] name`).
    pub name: String,
    /// Where its records come from.
    pub kind: SourceKind,
    /// How they are applied.
    pub mode: PullMode,
    /// The whole pull's limit (and PostgreSQL's `statement_timeout`).
    pub timeout: Duration,
}

/// Why a pull applied nothing. Never holds a URL or a password.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}; check `command` (an absolute path, executable by the daemon's user)")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The program ended with a failure.
    #[error("{program:?} {status}; nothing was applied (its stderr is in the log)")]
    Exit {
        /// The program.
        program: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The pull took longer than its `timeout_secs`.
    #[error(
        "the pull took longer than {secs} s (timeout_secs) and was stopped; nothing was applied"
    )]
    Timeout {
        /// The limit.
        secs: u64,
    },
    /// PostgreSQL refused, failed or dropped the connection.
    #[error("PostgreSQL: {0}; nothing was applied")]
    Postgres(String),
    /// A row's `record` column is missing or not text or JSON.
    #[error(
        "the query's rows need a column `record` (json, jsonb or text): {0}; nothing was applied"
    )]
    Column(String),
    /// The records could not be imported (bad lines, a snapshot over the shrink guard).
    #[error("{0}")]
    Import(#[source] ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the program's output failed.
    #[error("cannot read {program:?}'s output: {source}")]
    Read {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Pulls `spec` into the store: the import's summary, or why nothing was applied.
pub async fn pull(store: &StoreHandle, spec: &SourceSpec) -> Result<ImportSummary, PullError> {
    let (pieces, receive) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    let name = spec.name.clone();
    let produce = {
        let spec = spec.clone();
        async move {
            let run = async {
                match &spec.kind {
                    SourceKind::Command { argv } => {
                        command::produce(&spec.name, argv, &pieces).await
                    }
                    SourceKind::Postgres { url, query } => {
                        postgres::produce(url, query, spec.timeout, &pieces).await
                    }
                }
            };
            // PostgreSQL's own `statement_timeout` (the same limit) speaks first, with its reason;
            // the pull's own limit is a little later for the connection and the transfer.
            let limit = match spec.kind {
                SourceKind::Postgres { .. } => spec.timeout + POSTGRES_GRACE,
                SourceKind::Command { .. } => spec.timeout,
            };
            let result = match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => Err(PullError::Timeout {
                    secs: spec.timeout.as_secs(),
                }),
            };
            // The import commits only after `Done`; anything else makes it fail (nothing applied).
            let last = match &result {
                Ok(()) => Piece::Done,
                Err(e) => Piece::Failed(e.to_string()),
            };
            let _ = pieces.send(last).await;
            result
        }
    };
    let producer = tokio::spawn(produce);
    let mode = spec.mode;
    let imported = store
        .write(move |s| {
            let input =
                std::io::BufReader::with_capacity(64 * 1024, reader::PieceReader::new(receive));
            let now = gradient_connector_domain::time::now_ms();
            Ok(match mode {
                PullMode::Snapshot(rules) => {
                    gradient_connector_store::import::import_snapshot(s, input, now, rules)
                }
                PullMode::Records => gradient_connector_store::import::import(s, input, now),
            })
        })
        .await;
    // The producer's own failure is the cause when there is one (the import saw only its text).
    let produced = match producer.await {
        Ok(r) => r,
        Err(e) => Err(PullError::Postgres(format!("the pull's task ended: {e}"))),
    };
    let summary = imported?;
    match (produced, summary) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(PullError::Import(e)),
        (Ok(()), Ok(summary)) => {
            tracing::info!(source = %escape(&name), lines = summary.lines, "source pulled");
            Ok(summary)
        }
    }
}
