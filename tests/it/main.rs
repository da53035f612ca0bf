//! The integration tests, one binary: one link, and the tests of every file run side by side
//! (`cargo test` at the root runs them; `cargo test --test it -- --ignored` the long ones).

mod common;

mod accounts_bulk;
mod api_edges;
mod architecture;
mod cli_foundation;
mod config_mistakes;
mod config_schema;
mod control_api;
mod control_api_tls;
mod daemon;
mod daemon_defects;
mod decoder_properties;
mod demo;
mod email;
mod faults;
mod gradient_contract;
mod headstart;
mod history_changes;
mod hostile_gradient;
mod hostile_input;
mod json_times;
mod kit;
mod ledger_edges;
mod metered;
mod openapi;
mod progress;
mod properties;
mod root_safety;
mod secrets;
mod secrets_at_rest;
mod sim_behaviour;
mod snapshots;
mod sources;
mod sources_pg;
mod status_page;
mod sync_e2e;
mod unreported_modules;
mod webhooks;
mod whose_token;
