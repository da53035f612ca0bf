//! `gradient-connector store …`: the store key (`new-key`, `rotate-key`), `backup`, `check` and
//! `repair-future`. Plain store work: no async runtime.

use std::path::Path;
use std::sync::Arc;

use secrecy::ExposeSecret;

use super::exit::CommandError;
use super::StoreCommand;
use crate::config::{keyfile, Config};
use crate::store::key::StoreKey;
use crate::store::Store;

type Done = Result<(), CommandError>;

/// Runs one `store` subcommand. `new-key` needs no configuration.
pub fn execute(config_path: &Path, command: StoreCommand) -> Done {
    match command {
        StoreCommand::NewKey { path } => new_key(&path),
        StoreCommand::RotateKey { new_key_file } => {
            rotate_key(&super::commands::load(config_path)?, &new_key_file)
        }
        StoreCommand::Backup { path } => backup(&super::commands::load(config_path)?, &path),
        StoreCommand::Check => check(&super::commands::load(config_path)?),
        StoreCommand::RepairFuture => repair_future(&super::commands::load(config_path)?),
    }
}

fn open(cfg: &Config) -> Result<Store, CommandError> {
    Ok(Store::open(&cfg.store.path, cfg.store.busy_timeout)?)
}

fn new_key(path: &Path) -> Done {
    keyfile::write_new_store_key(path)?;
    println!(
        "wrote a new store key to {} (mode 0600); point store.key_file at it",
        path.display()
    );
    Ok(())
}

fn rotate_key(cfg: &Config, new_key_file: &Path) -> Done {
    let current = Arc::new(StoreKey::new(cfg.load_store_key()?));
    let text = keyfile::read_key_file(new_key_file, keyfile::KEY_FILE_MAX_BYTES)?;
    let new = keyfile::parse_store_key(text.expose_secret()).map_err(|why| {
        CommandError::NewKeyUnusable {
            path: new_key_file.to_path_buf(),
            why,
        }
    })?;
    let new = Arc::new(StoreKey::new(new));
    if new.id() == current.id() {
        return Err(CommandError::NewKeyInUse {
            path: new_key_file.to_path_buf(),
            key_id: current.id().to_string(),
        });
    }
    let mut store = open(cfg)?;
    store.set_key(Some(current.clone()));
    let n = store.rotate_key(new.clone())?;
    println!(
        "re-sealed {n} partner tokens with the new key (key id {}; was {}).",
        new.id(),
        current.id()
    );
    println!(
        "now make it the configured key: move {} over {} (or point store.key_file at it), then reload the daemon (`systemctl reload gradient-connector`; with a systemd credential `store-key`, update it and restart instead). Until then the daemon's runs fail with \"sealed with another key\".",
        new_key_file.display(),
        cfg.store_key_path().display()
    );
    Ok(())
}

fn backup(cfg: &Config, dest: &Path) -> Done {
    let store = open(cfg)?;
    store.backup_to(dest)?;
    println!(
        "backed up {} to {} (mode 0600; partner tokens stay sealed: keep the store key to use it)",
        cfg.store.path.display(),
        dest.display()
    );
    Ok(())
}

fn check(cfg: &Config) -> Done {
    let store = open(cfg)?;
    let problems = store.integrity_check()?;
    if problems.len() == 1 && problems[0] == "ok" {
        println!(
            "store {} passes SQLite's integrity check",
            cfg.store.path.display()
        );
        return Ok(());
    }
    Err(CommandError::StoreDamaged {
        path: cfg.store.path.clone(),
        problems,
    })
}

fn repair_future(cfg: &Config) -> Done {
    let mut store = open(cfg)?;
    let now = crate::time::now_ms();
    let found = store.future_dated(now)?;
    if found == 0 {
        println!("no inventory record is dated in the future; nothing to repair");
        return Ok(());
    }
    let changed = store.redate_future(now)?;
    println!(
        "re-dated {found} future-dated inventory times to now ({}); {changed} rows changed. Imports and syncs count them from now on.",
        crate::time::format_ms(now)
    );
    Ok(())
}
