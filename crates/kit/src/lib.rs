//! The test kit: typed builders for what tests, the demo and the benchmark feed the product —
//! inventories ([`Inventory`], written as the import's JSON Lines by serde) and configuration files
//! ([`ConfigBuilder`], rendered as TOML by the `toml` crate, every key checked against the key
//! table). Nothing in the daemon's own code paths uses it.

use gradient_connector::{config, domain, time};

mod config_builder;
mod inventory;

pub use config_builder::{ensure_store_key, ConfigBuilder, Service, Source, Webhook};
pub use inventory::{
    msp_id, unit_id, workspace_id, ChannelRecord, Inventory, ModuleRecord, Record, UnitRecord,
    Units, WorkspaceRecord, OCTOBER_2026, STANDARD_MODULES,
};
