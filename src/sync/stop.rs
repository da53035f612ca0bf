//! Why a run stopped before its end: each reason is a variant that keeps its cause, and has one
//! text form (`StopKind`) that the run's report carries to the CLI, the API and the store.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::gradient::GradientError;

/// A run's stop reason, as the run's code raises it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunStop {
    /// A ledger row could not be written: no further push is sent.
    #[error("the ledger could not be written to the store {} ({cause}): the run stopped sending at once; free disk space or fix the store's permissions, then sync again", .store.display())]
    LedgerUnwritable {
        /// The store file.
        store: PathBuf,
        /// What the store's writer said.
        cause: String,
    },
    /// The end of the shutdown grace abandoned the requests in flight.
    #[error("stopped by shutdown: requests in flight were abandoned")]
    Shutdown,
    /// A stop was asked before the catalogue could be read.
    #[error("stopped before the catalogue was read")]
    StoppedBeforeCatalogue,
    /// The service catalogue could not be read: nothing was pushed.
    #[error("the service catalogue could not be read, so nothing was pushed (no service is created without reading the catalogue first): {0}")]
    CatalogueUnreadable(#[source] GradientError),
    /// Gradient rejected the token of every connector taking part: the vendor key is the likely
    /// cause, never the MSPs.
    #[error("Gradient rejected the token of every connector ({connectors}) in this run: the vendor key is the likely cause, not the MSPs. Check gradient.vendor_api_key_file (or the vendor-api-key credential; under systemd a new key needs a restart), then run `gradient-connector connector verify --all` — no MSP has to paste again")]
    EveryTokenRejected {
        /// How many connectors took part.
        connectors: usize,
    },
    /// Gradient answered 403: it detected an anomaly in our usage.
    #[error("Gradient answered 403 (it detected an anomaly in our usage): the run stopped sending; contact Gradient support before the next run")]
    Forbidden,
}

impl RunStop {
    /// The reason's one text form.
    pub fn kind(&self) -> StopKind {
        match self {
            RunStop::LedgerUnwritable { .. } => StopKind::LedgerUnwritable,
            RunStop::Shutdown | RunStop::StoppedBeforeCatalogue => StopKind::Shutdown,
            RunStop::CatalogueUnreadable(_) => StopKind::CatalogueUnreadable,
            RunStop::EveryTokenRejected { .. } => StopKind::EveryTokenRejected,
            RunStop::Forbidden => StopKind::Forbidden,
        }
    }
}

/// What stopped a run, in the report (`stopped_by`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum StopKind {
    /// The ledger could not be written.
    LedgerUnwritable,
    /// A shutdown.
    Shutdown,
    /// The catalogue could not be read.
    CatalogueUnreadable,
    /// Every token was rejected (the vendor key).
    EveryTokenRejected,
    /// Gradient answered 403.
    Forbidden,
    /// The run's deadline passed.
    Deadline,
    /// The pull sources have not been pulled successfully within `inventory.max_age_hours`.
    StaleInventory,
}

impl StopKind {
    /// Whether the next run may succeed with nobody changing anything: a deadline or a shutdown
    /// cut the run short. The others name a cause someone must fix (disk, vendor key, Gradient's
    /// catalogue, Gradient support).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            StopKind::Deadline | StopKind::Shutdown | StopKind::StaleInventory
        )
    }
}
