//! The contract's exit codes, and the one place where a command's result becomes one.
//!
//! Every command returns `Result<(), CommandError>`; [`CommandError`] wraps each module's typed
//! error with its source, and [`CommandError::exit`] is the whole mapping. Nothing below `cli`
//! knows about exit codes.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::connector::ConnectorError;
use crate::daemon::DaemonError;
use crate::demo::DemoError;
use crate::store::import::ImportError;
use crate::store::StoreError;
use crate::sync::SyncError;

/// Exit codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; every pair pushed or skipped for a documented reason.
    Ok = 0,
    /// Failed for a reason the message explains.
    Failed = 1,
    /// Bad command-line usage.
    Usage = 2,
    /// Bad import data: nothing was applied.
    DataErr = 65,
    /// Some pairs failed transiently, or a token was rejected; retried next run.
    TempFail = 75,
    /// Bad configuration.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Why a command did not finish with everything done.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is bad (its problems are in the message).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An import failed: bad lines (nothing applied) or the store.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A run could not start.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A run finished without pushing everything (its report is already printed).
    #[error("{message}")]
    RunIncomplete {
        /// What to do.
        message: String,
        /// Whether the next run may fix it (75) or the message names a cause to fix (1).
        transient: bool,
    },
    /// A connector command failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The daemon could not start or stopped on an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The demo failed.
    #[error(transparent)]
    Demo(#[from] DemoError),
    /// Bad command-line usage that clap cannot see (e.g. a malformed `--period`).
    #[error("{0}")]
    Usage(String),
    /// The new key file given to `store rotate-key` does not hold a store key.
    #[error("the new key file {} {why}", .path.display())]
    NewKeyUnusable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        why: crate::config::keyfile::StoreKeyError,
    },
    /// The new key file given to `store rotate-key` holds the key in use.
    #[error("{} holds the key in use (key id {key_id}); create a new one with `gradient-connector store new-key PATH`", .path.display())]
    NewKeyInUse {
        /// The file.
        path: std::path::PathBuf,
        /// The key's id (never the key).
        key_id: String,
    },
    /// A key file could not be read or written (the I/O error is the source).
    #[error(transparent)]
    KeyFileIo(#[from] crate::config::keyfile::KeyFileError),
    /// `store check` found problems.
    #[error("the store {} fails SQLite's integrity check:\n  {}\nrestore the latest backup (`gradient-connector store backup` makes one) or rebuild the store", path.display(), problems.join("\n  "))]
    StoreDamaged {
        /// The store file.
        path: std::path::PathBuf,
        /// What SQLite reported.
        problems: Vec<String>,
    },
    /// Run as root against a store another user owns: refused, nothing touched.
    #[error(transparent)]
    ForeignStore(#[from] super::root_guard::ForeignStore),
    /// Output could not be encoded.
    #[error("cannot write the output: {0}")]
    Output(#[source] serde_json::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The daemon's run report could not be read.
    #[error("the daemon's run report could not be read: {0}")]
    DaemonReport(#[source] serde_json::Error),
}

impl CommandError {
    /// The contract's exit code for this error: the only such mapping in the program.
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Config(_) => Exit::Config,
            CommandError::Store(e) => store_exit(e),
            CommandError::Import(
                ImportError::BadLines { .. } | ImportError::SnapshotShrink { .. },
            ) => Exit::DataErr,
            CommandError::Import(ImportError::Store(e)) => store_exit(e),
            CommandError::Import(_) => Exit::Failed,
            CommandError::Sync(SyncError::Config(_)) => Exit::Config,
            CommandError::Sync(SyncError::Store(e)) => store_exit(e),
            CommandError::Sync(_) => Exit::Failed,
            CommandError::RunIncomplete { transient, .. } => {
                if *transient {
                    Exit::TempFail
                } else {
                    Exit::Failed
                }
            }
            CommandError::Connector(ConnectorError::Store(e)) => store_exit(e),
            CommandError::Connector(e) if e.is_transient() => Exit::TempFail,
            CommandError::Connector(_) => Exit::Failed,
            CommandError::Daemon(e) if e.is_config() => Exit::Config,
            CommandError::Daemon(_) => Exit::Failed,
            CommandError::Demo(_) => Exit::Failed,
            CommandError::Usage(_) => Exit::Usage,
            CommandError::NewKeyUnusable { .. }
            | CommandError::NewKeyInUse { .. }
            | CommandError::KeyFileIo(_)
            | CommandError::StoreDamaged { .. } => Exit::Failed,
            CommandError::ForeignStore(_) => Exit::Failed,
            CommandError::Output(_) | CommandError::Runtime(_) | CommandError::DaemonReport(_) => {
                Exit::Failed
            }
        }
    }
}

/// A busy store or a held run lock may clear by itself (75); a missing or wrong store key is
/// configuration (78); anything else needs a fix (1).
fn store_exit(e: &StoreError) -> Exit {
    match e {
        StoreError::Busy | StoreError::RunInProgress => Exit::TempFail,
        StoreError::KeyMissing | StoreError::WrongKey { .. } => Exit::Config,
        _ => Exit::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_during_import_are_not_bad_data() {
        let disk_full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let full = CommandError::Import(ImportError::Store(StoreError::from(disk_full)));
        assert!(matches!(
            full,
            CommandError::Import(ImportError::Store(StoreError::NotWritable(_)))
        ));
        assert_eq!(full.exit(), Exit::Failed);
        let bad = CommandError::Import(ImportError::BadLines {
            lines: vec![],
            total: 1,
        });
        assert_eq!(bad.exit(), Exit::DataErr);
        let busy = CommandError::Import(ImportError::Store(StoreError::Busy));
        assert_eq!(busy.exit(), Exit::TempFail);
    }
}
