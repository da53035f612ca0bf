//! `[[source]]`: a place the daemon pulls the vendor's inventory from before every run.

use std::path::PathBuf;
use std::time::Duration;

/// Where a source's records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFrom {
    /// A PostgreSQL database: the URL (a secret) and the statement, each in a file.
    Postgres {
        /// The file holding the libpq URL (the credential `source-NAME-url` wins).
        url_file: PathBuf,
        /// The file holding the SQL statement.
        query_file: PathBuf,
    },
    /// A program that prints JSON Lines.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

/// One `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Its name.
    pub name: String,
    /// Where its records come from.
    pub from: SourceFrom,
    /// `mode = "snapshot"` (else records).
    pub snapshot: bool,
    /// The whole pull's limit.
    pub timeout: Duration,
}

impl SourceConfig {
    /// The systemd credential that holds a postgres source's URL.
    pub fn url_credential(&self) -> String {
        format!("source-{}-url", self.name)
    }
}
