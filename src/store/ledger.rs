//! Ledger: connectors, services, runs, pushes and daemon state (work in progress).
