//! The configured pull sources (`[[source]]`) at work: each is pulled before every run and on
//! demand (`source pull`, `POST /v1/sources/pull`), each pull in one transaction of its own
//! through the import's code (`gradient-connector-sources`), its outcome kept in the store
//! (`source list`, `GET /v1/sources`). A failed pull is logged with its reason and the run goes on
//! with the inventory as last pulled — unless no successful pull of a source is younger than
//! `inventory.max_age_hours`: then the inventory is **stale** ([`stale`], pure), the run pushes
//! nothing, and the console is told once per stale spell (`inventory.stale`).

use std::time::Duration;

use serde::Serialize;

use crate::config::{keyfile, Config, SourceConfig, SourceFrom};
use crate::domain::{escape, EventKind};
use crate::store::import::SnapshotRules;
use crate::store::sources::{PullOutcome, SourcePull};
use crate::store::{StoreError, StoreHandle};
use crate::time::{format_ms, Millis};
use gradient_connector_sources::{pull, PullMode, SourceKind, SourceSpec};

/// Largest URL file read.
const URL_MAX_BYTES: u64 = 4096;
/// Largest query file read.
const QUERY_MAX_BYTES: u64 = 1024 * 1024;

/// Why sources could not be pulled at all.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// No `[[source]]` has this name.
    #[error("there is no source {0:?}; `source list` names the configured ones")]
    Unknown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A source's setup could not be read (its URL or query file).
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("the URL: {0}")]
    Url(#[source] keyfile::KeyFileError),
    #[error("cannot read the query file {}: {source}", .path.display())]
    Query {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the query file {} is larger than 1 MiB or empty", .0.display())]
    QuerySize(std::path::PathBuf),
}

/// A source ready to pull: its URL and query read now (a rotated secret is picked up).
fn spec(source: &SourceConfig, config: &Config) -> Result<SourceSpec, SetupError> {
    let kind = match &source.from {
        SourceFrom::Command { argv } => SourceKind::Command { argv: argv.clone() },
        SourceFrom::Postgres {
            url_file,
            query_file,
        } => {
            let path = keyfile::credential_or(&source.url_credential(), url_file);
            let url = keyfile::read_key_file(&path, URL_MAX_BYTES).map_err(SetupError::Url)?;
            let query =
                std::fs::read_to_string(query_file).map_err(|source| SetupError::Query {
                    path: query_file.clone(),
                    source,
                })?;
            if query.trim().is_empty() || query.len() as u64 > QUERY_MAX_BYTES {
                return Err(SetupError::QuerySize(query_file.clone()));
            }
            SourceKind::Postgres { url, query }
        }
    };
    Ok(SourceSpec {
        name: source.name.clone(),
        kind,
        mode: if source.snapshot {
            PullMode::Snapshot(SnapshotRules {
                max_shrink_percent: config.inventory.max_snapshot_shrink_percent,
                allow_shrink: false,
            })
        } else {
            PullMode::Records
        },
        timeout: source.timeout,
    })
}

/// Pulls every configured source (or the one named `only`), one after the other, and records
/// each outcome; a failure is logged and recorded, never an error of the whole.
pub async fn pull_all(
    store: &StoreHandle,
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<SourcePull>, SourcesError> {
    if let Some(name) = only {
        if !config.sources.iter().any(|s| s.name == name) {
            return Err(SourcesError::Unknown(name.to_string()));
        }
    }
    Ok(pull_matching(store, config, only).await?)
}

/// Pulls every configured source (a run's first step): only the store can fail the whole.
pub async fn pull_every(
    store: &StoreHandle,
    config: &Config,
) -> Result<Vec<SourcePull>, StoreError> {
    pull_matching(store, config, None).await
}

/// The sources named `only` (all when None), each pulled and recorded.
async fn pull_matching(
    store: &StoreHandle,
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<SourcePull>, StoreError> {
    let mut names = Vec::new();
    for source in config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
    {
        let started = std::time::Instant::now();
        let result = match spec(source, config) {
            Ok(spec) => pull(store, &spec).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let at = crate::time::now_ms();
        let (outcome, records, message) = match &result {
            Ok(summary) => {
                let applied: usize = summary.applied.values().sum();
                let message = format!(
                    "{} record(s): {applied} applied, {} unchanged{}",
                    summary.lines,
                    summary.unchanged,
                    summary
                        .snapshot
                        .map(|i| format!(
                            "; snapshot: {} unprotected, {} disabled, {} removed",
                            i.unprotected, i.disabled, i.removed
                        ))
                        .unwrap_or_default()
                );
                (PullOutcome::Ok, summary.lines as u64, message)
            }
            Err(why) => (PullOutcome::Failed, 0, why.clone()),
        };
        let took = started.elapsed().as_millis() as u64;
        match outcome {
            PullOutcome::Ok => {
                tracing::info!(source = %escape(&source.name), took_ms = took, "source pulled: {}", escape(&message))
            }
            PullOutcome::Failed => tracing::warn!(
                source = %escape(&source.name),
                took_ms = took,
                "source pull failed, the run goes on with the inventory as last pulled: {}",
                escape(&message)
            ),
        }
        metrics::counter!("gradient_connector_source_pulls_total", "source" => source.name.clone(), "outcome" => if outcome == PullOutcome::Ok { "ok" } else { "failed" })
            .increment(1);
        let name = source.name.clone();
        store
            .write(move |s| s.record_pull(&name, at, outcome, records, Some(&message)))
            .await?;
        names.push(source.name.clone());
    }
    let pulls = store.read(|s| s.source_pulls()).await?;
    set_age_gauges(config, &pulls, crate::time::now_ms());
    Ok(pulls
        .into_iter()
        .filter(|p| names.contains(&p.name))
        .collect())
}

/// A source whose inventory is too old to push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StaleSource {
    /// The source.
    pub name: String,
    /// Its last successful pull (None: never).
    pub last_success_at: Option<String>,
    /// How old that is, in seconds (None: never pulled).
    pub age_seconds: Option<u64>,
}

/// The configured sources without a successful pull younger than `inventory.max_age_hours` at
/// `now` (none when the rule is off or no source is configured).
pub fn stale(config: &Config, pulls: &[SourcePull], now: Millis) -> Vec<StaleSource> {
    let max_age_hours = config.inventory.max_age_hours;
    if max_age_hours == 0 {
        return Vec::new();
    }
    let limit = i64::from(max_age_hours) * 3_600_000;
    config
        .sources
        .iter()
        .filter_map(|s| {
            let last = pulls
                .iter()
                .find(|p| p.name == s.name)
                .and_then(|p| p.last_success_at);
            let fresh = last.is_some_and(|at| now - at <= limit);
            (!fresh).then(|| StaleSource {
                name: s.name.clone(),
                last_success_at: last.map(format_ms),
                age_seconds: last.map(|at| u64::try_from((now - at) / 1000).unwrap_or(0)),
            })
        })
        .collect()
}

/// The stale sources at `now`, judged from `pulls` (every configured source's last pull, as
/// [`pull_every`] returns them); when there are some, tells the console (`inventory.stale`) about
/// the ones it was not told of in this stale spell. Returns the run's message (`stale inventory:
/// …`), or None when the inventory is fresh.
pub async fn judge_fresh(
    store: &StoreHandle,
    config: &Config,
    pulls: &[SourcePull],
    now: Millis,
) -> Result<Option<String>, StoreError> {
    set_age_gauges(config, pulls, now);
    let stale = stale(config, pulls, now);
    if stale.is_empty() {
        return Ok(None);
    }
    let message = format!(
        "stale inventory: no successful pull within inventory.max_age_hours ({} h) of {}; nothing was pushed — fix the source (see `source list`) or pull it (`source pull`)",
        config.inventory.max_age_hours,
        stale
            .iter()
            .map(|s| match &s.last_success_at {
                Some(at) => format!("{:?} (last at {at})", s.name),
                None => format!("{:?} (never)", s.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let targets = config.targets(EventKind::InventoryStale);
    let max_age_hours = config.inventory.max_age_hours;
    store
        .write(move |s| {
            s.atomically(|s| {
                let names: Vec<String> = stale.iter().map(|x| x.name.clone()).collect();
                let newly = s.tell_stale(&names, now)?;
                if !newly.is_empty() {
                    let data = serde_json::json!({
                        "sources": stale.iter().filter(|x| newly.contains(&x.name)).collect::<Vec<_>>(),
                        "max_age_hours": max_age_hours,
                    });
                    s.enqueue_event(EventKind::InventoryStale, &data, &targets, now)?;
                }
                Ok(())
            })
        })
        .await?;
    Ok(Some(message))
}

/// One configured source as `source list` and `GET /v1/sources` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    /// Its name.
    pub name: String,
    /// `postgres` or `command`.
    pub kind: String,
    /// `snapshot` or `records`.
    pub mode: String,
    /// When its last pull ended (None: never pulled).
    pub at: Option<String>,
    /// `ok` or `failed` (None: never pulled).
    pub outcome: Option<PullOutcome>,
    /// Records its last pull read.
    pub records: u64,
    /// Its last pull's summary, or why it failed.
    pub message: Option<String>,
    /// Its last successful pull.
    pub last_success_at: Option<String>,
    /// No successful pull within `inventory.max_age_hours`: runs push nothing.
    pub stale: bool,
}

/// Every configured source with its last pull, at `now`.
pub fn views(config: &Config, pulls: &[SourcePull], now: Millis) -> Vec<SourceView> {
    let stale = stale(config, pulls, now);
    config
        .sources
        .iter()
        .map(|s| {
            let p = pulls.iter().find(|p| p.name == s.name);
            SourceView {
                name: s.name.clone(),
                kind: match s.from {
                    SourceFrom::Postgres { .. } => "postgres".into(),
                    SourceFrom::Command { .. } => "command".into(),
                },
                mode: if s.snapshot { "snapshot" } else { "records" }.into(),
                at: p.map(|p| format_ms(p.at)),
                outcome: p.map(|p| p.outcome),
                records: p.map_or(0, |p| p.records),
                message: p.and_then(|p| p.message.clone()),
                last_success_at: p.and_then(|p| p.last_success_at).map(format_ms),
                stale: stale.iter().any(|x| x.name == s.name),
            }
        })
        .collect()
}

/// `gradient_connector_inventory_age_seconds{source}`: the age of each source's last successful
/// pull (a source never pulled shows the age of the Unix epoch, which any alert catches).
pub fn set_age_gauges(config: &Config, pulls: &[SourcePull], now: Millis) {
    for s in &config.sources {
        let last = pulls
            .iter()
            .find(|p| p.name == s.name)
            .and_then(|p| p.last_success_at)
            .unwrap_or(0);
        metrics::gauge!("gradient_connector_inventory_age_seconds", "source" => s.name.clone())
            .set(Duration::from_millis(u64::try_from(now - last).unwrap_or(0)).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(name: &str, last: Option<Millis>) -> SourcePull {
        SourcePull {
            name: name.into(),
            at: 0,
            outcome: PullOutcome::Ok,
            records: 0,
            message: None,
            last_success_at: last,
        }
    }

    #[test]
    fn a_source_is_stale_without_a_successful_pull_within_max_age() {
        let text = "[gradient]\nbase_url = \"http://127.0.0.1:9\"\n\
            [inventory]\nmax_age_hours = 26\n\
            [[service]]\nmodule = \"edr\"\nname = \"EDR\"\nunit = \"devices\"\ncategory = \"security\"\nsubcategory = \"endpoint detection and response (EDR)\"\n\
            [[source]]\nname = \"db\"\nkind = \"postgres\"\nurl_file = \"db-url\"\nquery_file = \"q.sql\"\nmode = \"snapshot\"\n\
            [[source]]\nname = \"cmd\"\nkind = \"command\"\ncommand = [\"/bin/true\"]\n";
        let mut config = Config::from_toml(
            text,
            std::path::Path::new("/etc/x/c.toml"),
            Default::default(),
        )
        .unwrap();
        assert_eq!(config.sources.len(), 2);
        assert!(config.sources[0].snapshot && !config.sources[1].snapshot);
        assert_eq!(
            config.sources[0].from,
            SourceFrom::Postgres {
                url_file: "/etc/x/db-url".into(),
                query_file: "/etc/x/q.sql".into()
            }
        );
        assert_eq!(config.sources[1].timeout, Duration::from_secs(300));
        let hour = 3_600_000;
        let now = 100 * hour;
        // Both fresh: exactly 26 h is still fresh.
        let pulls = [
            pull("db", Some(now - 26 * hour)),
            pull("cmd", Some(now - hour)),
        ];
        assert!(stale(&config, &pulls, now).is_empty());
        // One a millisecond over, one never pulled.
        let pulls = [pull("db", Some(now - 26 * hour - 1))];
        let s = stale(&config, &pulls, now);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].name, "db");
        assert_eq!(s[0].age_seconds, Some(26 * 3600));
        assert_eq!(
            (s[1].name.as_str(), s[1].last_success_at.as_deref()),
            ("cmd", None)
        );
        // The rule off, or no sources: never stale.
        config.inventory.max_age_hours = 0;
        assert!(stale(&config, &pulls, now).is_empty());
    }
}
