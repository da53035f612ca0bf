//! `source list` and `source pull`: the configured pull sources, their last pulls, and a pull now
//! (each source in one transaction of its own, as before every run).

use std::sync::Arc;

use clap::Subcommand;

use super::commands::{print_json, Done};
use super::exit::CommandError;
use crate::config::Config;
use crate::domain::escape;

/// `source` subcommands.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Each configured source: kind, mode, its last pull (when, outcome, records, message), its
    /// last success, and whether the inventory is stale.
    List {
        /// JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Pull every source (or NAME) now, each in one transaction; exit 75 when one failed.
    Pull {
        /// Only this source.
        name: Option<String>,
        /// JSON array of the pulled sources.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `source` subcommand.
pub async fn execute(cfg: Arc<Config>, command: SourceCommand) -> Done {
    let store = crate::sync::store_handle(&cfg);
    let (json, pulled) = match command {
        SourceCommand::List { json } => (json, None),
        SourceCommand::Pull { name, json } => {
            if cfg.sources.is_empty() {
                return Err(CommandError::Usage(
                    "no [[source]] is configured: add one (README \"Pull sources\")".into(),
                ));
            }
            let pulled = crate::sources::pull_all(&store, &cfg, name.as_deref())
                .await
                .map_err(|e| match e {
                    crate::sources::SourcesError::Store(e) => CommandError::Store(e),
                    other => CommandError::Usage(other.to_string()),
                })?;
            (json, Some(pulled))
        }
    };
    let pulls = store.read(|s| s.source_pulls()).await?;
    let mut views = crate::sources::views(&cfg, &pulls, crate::time::now_ms());
    if let Some(pulled) = &pulled {
        views.retain(|v| pulled.iter().any(|p| p.name == v.name));
    }
    if json {
        print_json(&views)?;
    } else if views.is_empty() {
        println!("no [[source]] is configured");
    } else {
        let mut rows = vec![[
            "SOURCE",
            "KIND",
            "MODE",
            "LAST PULL",
            "OUTCOME",
            "RECORDS",
            "LAST SUCCESS",
            "",
        ]
        .map(String::from)
        .to_vec()];
        for v in &views {
            rows.push(vec![
                escape(&v.name),
                v.kind.clone(),
                v.mode.clone(),
                v.at.clone().unwrap_or_else(|| "never".into()),
                v.outcome
                    .map(|o| format!("{o:?}").to_lowercase())
                    .unwrap_or_else(|| "-".into()),
                v.records.to_string(),
                v.last_success_at.clone().unwrap_or_else(|| "never".into()),
                if v.stale {
                    "STALE".into()
                } else {
                    String::new()
                },
            ]);
        }
        print!("{}", crate::status::columns(&rows));
        for v in views.iter().filter(|v| v.message.is_some()) {
            println!(
                "{}: {}",
                escape(&v.name),
                escape(v.message.as_deref().unwrap_or(""))
            );
        }
    }
    let failed: Vec<&str> = pulled
        .iter()
        .flatten()
        .filter(|p| p.outcome == crate::store::sources::PullOutcome::Failed)
        .map(|p| p.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CommandError::RunIncomplete {
            message: format!(
                "the pull of {} failed; nothing of it was applied (the reason is above); the next run tries again",
                failed.join(", ")
            ),
            transient: true,
        })
    }
}
