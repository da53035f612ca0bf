//! gradient-connector: reports a software vendor's billable usage, per MSP customer, to Gradient MSP.
//!
//! The crate is a library with two thin binaries: `gradient-connector` (the daemon and its command line)
//! and `gradient-sim` (a stand-in for Gradient's vendor API used by the demo, tests and benchmarks).
//! See ARCHITECTURE.md for the flow of one sync run through these modules.

pub mod api;
pub mod cli;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod events;
pub mod gradient;
pub mod kit;
pub mod schedule;
pub mod sim;
pub mod status;
pub mod store;
pub mod sync;
pub mod time;
