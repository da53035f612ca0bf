//! The control API: the vendor console's way into the running daemon (HTTP/1.1 + JSON), served by
//! `run` on a unix socket (default; the socket's permissions are the access control) or on TCP with
//! a bearer token (TLS with rustls unless the address is loopback). [`routes`] holds the handlers —
//! each calls the same module as the CLI command it mirrors —, [`serve`] the listeners, [`client`]
//! the CLI's way to reach a running daemon, [`metrics`] the Prometheus series.
//!
//! Requests that start a run go to the daemon's queue as [`SyncAsk`]s (the daemon turns them into
//! its own events); the API never runs a sync itself.

pub mod client;
pub mod connections;
pub mod connectors;
pub mod inventory;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod serve;
pub mod sources;

use std::sync::{Arc, RwLock};

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};

use crate::domain::ConnectorId;
use crate::sync::{RunReport, SyncContext};

/// A request for a run from the API (the daemon queues it like SIGUSR1, with trigger `api`).
#[derive(Debug)]
pub struct SyncAsk {
    /// Only this connector.
    pub connector: Option<ConnectorId>,
    /// Told the report of the run that served the request (None when it could not start).
    pub done: Option<oneshot::Sender<Option<Arc<RunReport>>>>,
}

/// The context the daemon runs with; replaced on reload.
pub type SharedContext = Arc<RwLock<SyncContext>>;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The daemon's context (configuration, store, client).
    pub ctx: SharedContext,
    /// The daemon's run queue.
    pub queue: mpsc::Sender<SyncAsk>,
    /// The bearer token (TCP only).
    pub token: Option<Arc<SecretString>>,
    /// The Prometheus exposition.
    pub metrics: Option<metrics::Exposition>,
    /// Held by the inventory import under way (one at a time).
    pub imports: Arc<tokio::sync::Mutex<()>>,
}

impl ApiState {
    /// A snapshot of the context in force (cheap: clones handles).
    pub fn ctx(&self) -> SyncContext {
        match self.ctx.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Errors of starting the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address cannot be served.
    #[error("the control API cannot listen on {address}: {why}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        #[source]
        why: ListenProblem,
    },
    /// The token or TLS files are unusable.
    #[error("the control API's {what} is unusable: {why}")]
    Setup {
        /// Which file or key.
        what: &'static str,
        /// Why (never the content).
        #[source]
        why: SetupProblem,
    },
}

/// Why the control API's address cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenProblem {
    /// The socket's directory could not be made.
    #[error("cannot create {}: {source}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A daemon answers on the socket already.
    #[error("another daemon answers on this socket")]
    Taken,
    /// A dead socket file could not be removed.
    #[error("cannot replace the stale socket: {0}")]
    StaleSocket(#[source] std::io::Error),
    /// The bind itself failed.
    #[error(transparent)]
    Bind(std::io::Error),
    /// The socket's permissions could not be set.
    #[error("cannot set the socket's mode: {0}")]
    Mode(#[source] std::io::Error),
}

/// Why the control API's token or TLS files are unusable (never their content).
#[derive(Debug, thiserror::Error)]
pub enum SetupProblem {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] crate::config::keyfile::KeyFileError),
    /// The token is too short or not one word.
    #[error("{} must hold one token of at least 16 characters, on one line", .0.display())]
    WeakToken(std::path::PathBuf),
    /// Not PEM.
    #[error(transparent)]
    Pem(rustls::pki_types::pem::Error),
    /// No certificate in the PEM file.
    #[error("no PEM certificate in the file")]
    NoCertificate,
    /// No private key in the PEM file.
    #[error("no PEM private key in the file")]
    NoKey,
    /// rustls refused the certificate and key together.
    #[error(transparent)]
    Tls(rustls::Error),
}
