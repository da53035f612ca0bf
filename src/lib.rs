//! gradient-connector: reports a software vendor's billable usage, per MSP customer, to Gradient MSP.
//!
//! The product crate of the workspace: configuration, the connector lifecycle, the sync run, status,
//! the control API, events, the daemon and the command line, with two thin binaries:
//! `gradient-connector` (the daemon and its command line) and `gradient-sim` (the stand-in's own
//! crate, run as a process by the benchmarks). See ARCHITECTURE.md for the crates and the flow of
//! one sync run through these modules.

// The lower crates, under the names the product's modules use (`crate::store::…`): each crate
// names only those below it, so the layers are the compiler's to keep.
pub use gradient_connector_domain::{domain, time};
pub use gradient_connector_mail as mail;
pub use gradient_connector_store as store;
pub use gradient_sim as sim;
pub use gradient_vendor_api as gradient;

pub mod api;
pub mod cli;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod schedule;
pub mod sources;
pub mod status;
pub mod sync;
