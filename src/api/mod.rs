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
    #[error("the control API cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The token or TLS files are unusable.
    #[error("the control API's {what} is unusable: {reason}")]
    Setup {
        /// Which file or key.
        what: &'static str,
        /// Why (never the content).
        reason: String,
    },
}
