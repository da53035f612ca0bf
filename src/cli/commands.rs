//! The commands: each loads what it needs, calls the module that does the work and prints the
//! result. Each returns `Result<(), CommandError>`; the exit code is chosen in [`super::exit`].

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::exit::CommandError;
use super::{Cli, Command, ConnectorCommand};
use crate::config::{loose_permissions, Config, ConfigError, Problem};
use crate::domain::{ConnectorId, Trigger};
use crate::store::ledger::HistoryFilter;
use crate::sync::{RunControl, RunRequest, SyncContext};

pub(super) type Done = Result<(), CommandError>;

mod check;
use check::*;

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> Done {
    let config_path = Config::resolve_path(cli.config.as_deref());
    let quiet = cli.quiet;
    match cli.command {
        Command::CheckConfig => check_config(&config_path),
        Command::Import {
            file,
            snapshot,
            allow_shrink,
        } => {
            let cfg = load(&config_path)?;
            let snapshot = snapshot.then_some(crate::store::import::SnapshotRules {
                max_shrink_percent: cfg.inventory.max_snapshot_shrink_percent,
                allow_shrink,
            });
            import(cfg, file.as_deref(), snapshot, quiet)
        }
        // The demo makes its own configuration: a --config (before or after `demo`) would be
        // silently ignored, so it is refused.
        Command::Demo { keep, config } => {
            if cli.config.is_some() || config.is_some() {
                return Err(CommandError::Usage(
                    "demo reads no configuration file: it writes its own (keep it with --keep DIR); drop --config".into(),
                ));
            }
            Ok(crate::demo::run(keep.as_deref())?)
        }
        Command::Store { command } => super::store::execute(&config_path, command),
        // Plain store reads: no async runtime, so no SQLite call on an async worker.
        Command::Status { json } => status(&load(&config_path)?, json),
        Command::History {
            connector,
            run,
            changes,
            since_last_run,
            limit,
            json,
        } => history(
            &load(&config_path)?,
            HistoryFilter {
                connector,
                run,
                changes,
                limit,
            },
            since_last_run,
            json,
        ),
        Command::Connector {
            command: ConnectorCommand::List { json },
        } => connector_list(&load(&config_path)?, json),
        other => dispatch(load(&config_path)?, other, quiet),
    }
}

/// Loads the configuration and sets up logging; as root, refuses a store another user owns.
pub(super) fn load(path: &Path) -> Result<Config, CommandError> {
    let cfg = Config::load(path)?;
    refuse_foreign_store(&cfg)?;
    crate::daemon::init_logging_to(&cfg.log, super::progress::LogWriter);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

fn dispatch(cfg: Config, command: Command, quiet: bool) -> Done {
    let runtime = crate::daemon::runtime().map_err(CommandError::Runtime)?;
    let cfg = Arc::new(cfg);
    let result = runtime.block_on(async move {
        match command {
            Command::Run => Ok(crate::daemon::run(cfg).await?),
            Command::Sync {
                dry_run,
                connector,
                period,
                json,
            } => sync(cfg, dry_run, connector, period, json, quiet).await,
            Command::Connector { command } => connector(cfg, command).await,
            Command::Source { command } => super::source::execute(cfg, command).await,
            _ => Err(CommandError::Usage(
                "this command is not dispatched here".into(),
            )),
        }
    });
    // Store work stuck in SQLite's busy wait must not keep the process alive.
    runtime.shutdown_timeout(crate::daemon::RUNTIME_SHUTDOWN);
    result
}

/// Root must not touch a store another user owns (see [`super::root_guard`]).
fn refuse_foreign_store(cfg: &Config) -> Done {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Ok(super::root_guard::check(&cfg.store.path, &args)?)
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> Done {
    let s = serde_json::to_string_pretty(v).map_err(CommandError::Output)?;
    println!("{s}");
    Ok(())
}

fn open_store(cfg: &Config) -> Result<crate::store::Store, CommandError> {
    Ok(crate::store::Store::open(
        &cfg.store.path,
        cfg.store.busy_timeout,
    )?)
}

async fn sync(
    cfg: Arc<Config>,
    dry_run: bool,
    connector: Option<String>,
    period: Option<String>,
    json: bool,
    quiet: bool,
) -> Done {
    let month = match period.as_deref().map(str::parse::<crate::time::Month>) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => return Err(CommandError::Usage(format!("--period: {e}"))),
    };
    if let Some(m) = month {
        // Only a month that has ended has a figure (in the schedule's time zone).
        let current = crate::time::Month::containing(crate::time::now_ms(), cfg.schedule.timezone);
        if (m.year, m.month) >= (current.year, current.month) {
            return Err(CommandError::Usage(format!(
                "--period {m} has not ended yet; the latest month that can be counted is {}",
                current.previous()
            )));
        }
    }
    let req = RunRequest {
        trigger: Trigger::Cli,
        connector: connector.map(ConnectorId::from),
        month,
        slot_at: None,
    };
    if dry_run {
        let plan = crate::sync::dry_run(&cfg, &req).await?;
        if json {
            return print_json(&plan);
        }
        print!("{}", crate::status::render_dry_run(&plan));
        return Ok(());
    }
    // Pairs recorded so far, on a terminal (the run itself logs only its start and summary): read
    // from the store, so it shows a run in the daemon as well as one in this process.
    let progress = || {
        super::progress::wanted(&cfg, quiet).then(|| {
            super::progress::SyncProgress::start(cfg.store.path.clone(), cfg.store.busy_timeout)
        })
    };
    if req.month.is_none() {
        if let Some(socket) = daemon_socket(&cfg).await {
            return sync_via_daemon(&socket, req.connector, json, progress()).await;
        }
    }
    let progress = progress();
    let ctx = SyncContext::new(cfg)?;
    run_and_report(&ctx, req, json, progress).await
}

/// The running daemon's control socket, when one answers (then the daemon does the work, so the
/// CLI never fights its run lock).
async fn daemon_socket(cfg: &Config) -> Option<PathBuf> {
    match &cfg.api.listen {
        crate::config::ApiListen::Unix(p) if crate::api::client::daemon_answers(p).await => {
            Some(p.clone())
        }
        _ => None,
    }
}

/// A failed call through the daemon, as a command error with the daemon's message.
fn via_daemon_error(status: u16, v: &serde_json::Value) -> CommandError {
    let message = crate::api::client::error_message(v);
    CommandError::RunIncomplete {
        message: format!("the daemon answered {status}: {message}"),
        transient: status == 502 || status == 503,
    }
}

fn client_error(e: crate::api::client::ClientError) -> CommandError {
    CommandError::RunIncomplete {
        message: e.to_string(),
        transient: true,
    }
}

/// `sync` through the running daemon: queued like SIGUSR1, answered when that run has finished —
/// however long it takes (the answer has no time limit) — then reported as a local run is.
async fn sync_via_daemon(
    socket: &Path,
    connector: Option<ConnectorId>,
    json: bool,
    progress: Option<super::progress::SyncProgress>,
) -> Done {
    tracing::info!(socket = %socket.display(), "a daemon is running: the sync goes through it");
    let mut body = serde_json::json!({"wait": true});
    if let Some(c) = &connector {
        body["connector"] = serde_json::Value::String(c.to_string());
    }
    let answered =
        crate::api::client::call(socket, reqwest::Method::POST, "/v1/sync", Some(&body)).await;
    drop(progress);
    let (status, v) = answered.map_err(client_error)?;
    if status == 404 {
        let id = connector.unwrap_or_default();
        return Err(crate::sync::SyncError::UnknownConnector(id).into());
    }
    if status != 200 {
        return Err(via_daemon_error(status, &v));
    }
    let report: crate::sync::RunReport =
        serde_json::from_value(v["report"].clone()).map_err(CommandError::DaemonReport)?;
    report_outcome(&report, json)
}

/// Runs one sync (SIGTERM/SIGINT honoured) and prints its report; a progress display is cleared
/// before the report.
async fn run_and_report(
    ctx: &SyncContext,
    req: RunRequest,
    json: bool,
    progress: Option<super::progress::SyncProgress>,
) -> Done {
    let control = RunControl::default();
    let watcher = crate::daemon::stop_on_signals(control.clone());
    let result = crate::sync::run(ctx, req, &control).await;
    watcher.abort();
    drop(progress);
    if result.is_ok() {
        crate::daemon::prune_after_run(ctx).await;
    }
    report_outcome(&result?, json)
}

/// Prints a run's report; a run that did not push everything is a command error (75 or 1).
fn report_outcome(report: &crate::sync::RunReport, json: bool) -> Done {
    if json {
        print_json(report)?;
    } else {
        print!("{}", crate::status::render_report(report));
    }
    if report.outcome == crate::domain::RunOutcome::Ok {
        return Ok(());
    }
    Err(CommandError::RunIncomplete {
        message: report.message.clone().unwrap_or_else(|| incomplete(report)),
        transient: report.is_transient(),
    })
}

/// What an incomplete run leaves to do: failed pairs are retried at the next run; a rejected
/// token is never used again until the MSP's new token is pasted.
fn incomplete(report: &crate::sync::RunReport) -> String {
    let mut text = format!(
        "run {} ended {}: {}",
        report.run_id,
        report.outcome.as_str(),
        report.tally
    );
    if report.tally.failed > 0 {
        text.push_str("; failed pairs are retried at the next run");
    }
    let rejected: Vec<&str> = report
        .connectors
        .iter()
        .filter(|c| c.state == Some(crate::domain::ConnectorState::TokenRejected))
        .map(|c| c.id.as_str())
        .collect();
    if !rejected.is_empty() {
        text.push_str(&format!(
            "; Gradient rejected the token of {}: it is not used again until the MSP's new token is pasted (`gradient-connector connector add ID --token-file PATH`)",
            rejected.join(", ")
        ));
    }
    text
}

async fn connector(cfg: Arc<Config>, command: ConnectorCommand) -> Done {
    match command {
        ConnectorCommand::List { json } => connector_list(&cfg, json),
        ConnectorCommand::Remove { id } => {
            let store = crate::sync::store_handle(&cfg);
            crate::connector::forget(&store, &ConnectorId::from(id.as_str())).await?;
            println!("connector {id} removed (its history stays)");
            Ok(())
        }
        ConnectorCommand::Add {
            id,
            token_file,
            new_organization,
            notify,
        } => {
            if notify.is_empty() {
                return connector_add(cfg, id, &token_file, new_organization).await;
            }
            // Contacts first, so the *connected* mail reaches them; a paste that fails puts the
            // previous ones back (none, for a new connector).
            let before = crate::sync::store_handle(&cfg)
                .read({
                    let id = id.clone();
                    move |s| s.contacts(&id)
                })
                .await?;
            if cfg.email.is_none() {
                eprintln!("warning: the contacts are stored, but nothing is mailed until the configuration has an [email] section (then only what happens after it)");
            }
            connector_contacts(&cfg, &id, notify).await?;
            let added = connector_add(cfg.clone(), id.clone(), &token_file, new_organization).await;
            if added.is_err() {
                if let Err(e) = connector_contacts(&cfg, &id, before).await {
                    tracing::warn!(connector = %id, error = %e, "the paste failed and the previous contacts could not be put back; set them with PUT /v1/connectors/{{id}}/contacts");
                }
            }
            added
        }
        ConnectorCommand::Verify { id, all } => connector_verify(cfg, id, all).await,
        ConnectorCommand::Disconnect { id } => connector_disconnect(cfg, id).await,
    }
}

/// `connector add --notify`: the contacts, through a running daemon when one answers, else here.
async fn connector_contacts(cfg: &Arc<Config>, id: &str, emails: Vec<String>) -> Done {
    if let Some(socket) = daemon_socket(cfg).await {
        let uri = format!("/v1/connectors/{}/contacts", path_segment(id));
        let body = serde_json::json!({ "emails": emails });
        let (status, v) =
            crate::api::client::call(&socket, reqwest::Method::PUT, &uri, Some(&body))
                .await
                .map_err(client_error)?;
        if status != 200 {
            return Err(paste_error(status, &v));
        }
        return Ok(());
    }
    let store = crate::sync::store_handle(cfg);
    crate::connector::set_contacts(&store, &ConnectorId::from(id), emails).await?;
    Ok(())
}

/// `connector add`: through a running daemon when one answers, else here.
async fn connector_add(
    cfg: Arc<Config>,
    id: String,
    token_file: &Path,
    new_organization: bool,
) -> Done {
    let token = crate::connector::read_token(token_file)?;
    if let Some(socket) = daemon_socket(&cfg).await {
        let body = serde_json::json!({
            "token": secrecy::ExposeSecret::expose_secret(&token),
            "new_organization": new_organization,
        });
        let uri = format!("/v1/connectors/{}/token", path_segment(&id));
        let (status, v) =
            crate::api::client::call(&socket, reqwest::Method::PUT, &uri, Some(&body))
                .await
                .map_err(client_error)?;
        if status != 200 {
            return Err(paste_error(status, &v));
        }
        println!(
            "connector {} connected to Gradient organization {}: the integration is {} (through the running daemon)",
            crate::status::escape(&id),
            crate::status::escape(v["organization_name"].as_str().unwrap_or("(unnamed)")),
            crate::status::escape(v["gradient_status"].as_str().unwrap_or("unknown")),
        );
        return Ok(());
    }
    let ctx = SyncContext::new(cfg)?;
    let options = crate::connector::PasteOptions { new_organization };
    let r = ctx.lifecycle().add(&id.into(), token, options).await?;
    println!(
        "connector {} connected to Gradient organization {}: the integration is {}; services ready {}, accounts created {}, renamed {}",
        r.id,
        r.organization_name.as_deref().map(crate::status::escape).unwrap_or_else(|| "(unnamed)".into()),
        r.gradient_status,
        r.services_ready,
        r.accounts_created,
        r.accounts_renamed
    );
    if !r.channel_known {
        println!("note: the inventory has no channel {:?} yet; import it so that its workspaces are synced", r.id.as_str());
    }
    if ctx.config.schedule.sync_on_connect {
        // schedule.sync_on_connect: the connector's first sync now, not at the next slot.
        let req = RunRequest {
            trigger: Trigger::Cli,
            connector: Some(r.id.clone()),
            month: None,
            slot_at: None,
        };
        return run_and_report(&ctx, req, false, None).await;
    }
    Ok(())
}

/// `connector verify [ID|--all]`.
async fn connector_verify(cfg: Arc<Config>, id: Option<String>, all: bool) -> Done {
    if id.is_none() && !all {
        return Err(CommandError::Usage(
            "connector verify: name a connector ID or pass --all".into(),
        ));
    }
    let ctx = SyncContext::new(cfg)?;
    let only = id.map(ConnectorId::from);
    let results = ctx.lifecycle().verify_stored(only.as_ref()).await?;
    for v in &results {
        println!("connector {}: {} — {}", v.id, v.state, v.note);
    }
    if results
        .iter()
        .any(|v| v.state != crate::domain::ConnectorState::Connected)
    {
        return Err(CommandError::RunIncomplete {
            message: "some connectors are not connected (see above)".into(),
            transient: true,
        });
    }
    Ok(())
}

/// `connector disconnect`: through a running daemon when one answers, else here.
async fn connector_disconnect(cfg: Arc<Config>, id: String) -> Done {
    if let Some(socket) = daemon_socket(&cfg).await {
        let uri = format!("/v1/connectors/{}", path_segment(&id));
        let (status, v) = crate::api::client::call(&socket, reqwest::Method::DELETE, &uri, None)
            .await
            .map_err(client_error)?;
        if status == 404 {
            return Err(crate::connector::ConnectorError::Unknown(id).into());
        }
        if status != 200 {
            return Err(via_daemon_error(status, &v));
        }
        println!(
            "connector {} disconnected through the running daemon: token forgotten, history kept",
            crate::status::escape(&id)
        );
        return Ok(());
    }
    let ctx = SyncContext::new(cfg)?;
    let told = ctx.lifecycle().disconnect(&id.clone().into()).await?;
    println!(
        "connector {id} disconnected: token forgotten, history kept{}",
        if told {
            "; Gradient shows the integration inactive"
        } else {
            "; Gradient could not be told (see the log)"
        }
    );
    Ok(())
}

fn connector_list(cfg: &Config, json: bool) -> Done {
    let rows = open_store(cfg)?.connectors()?;
    if json {
        return print_json(&rows);
    }
    print!("{}", crate::status::render_connectors(&rows));
    Ok(())
}

fn status(cfg: &Config, json: bool) -> Done {
    let store = open_store(cfg)?;
    let s = crate::status::status(&store, cfg)?;
    if json {
        return print_json(&s);
    }
    print!("{}", crate::status::render_status(&s));
    Ok(())
}

fn history(cfg: &Config, filter: HistoryFilter, since_last_run: bool, json: bool) -> Done {
    let store = open_store(cfg)?;
    if let Some(id) = &filter.connector {
        if !store.connector_known(id)? {
            return Err(crate::connector::ConnectorError::Unknown(id.clone()).into());
        }
    }
    let rows = if since_last_run {
        match crate::status::history_since_last_run(&store, &filter)? {
            Some((run, rows)) => {
                if !json {
                    println!("changes in the last run (#{run}):");
                }
                rows
            }
            None => {
                if !json {
                    println!("no run yet");
                }
                Vec::new()
            }
        }
    } else {
        crate::status::history(&store, &filter)?
    };
    if json {
        return print_json(&rows);
    }
    print!(
        "{}",
        crate::status::render_history(&rows, &cfg.quantity_names())
    );
    Ok(())
}

fn import(
    cfg: Config,
    file: Option<&Path>,
    snapshot: Option<crate::store::import::SnapshotRules>,
    quiet: bool,
) -> Done {
    let mut store = open_store(&cfg)?;
    let stdin = || {
        Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::io::stdin(),
        ))
    };
    let mut size = None;
    let reader: Box<dyn BufRead + Send> = match file {
        None => stdin(),
        Some(p) if p.as_os_str() == "-" => stdin(),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => {
                size = f.metadata().ok().map(|m| m.len());
                Box::new(std::io::BufReader::with_capacity(256 * 1024, f))
            }
            Err(e) => {
                return Err(crate::store::import::ImportError::Read(format!(
                    "cannot open {}: {e}",
                    p.display()
                ))
                .into())
            }
        },
    };
    // On a terminal, the bytes read so far (of the file's size when known).
    let (reader, bar): (Box<dyn BufRead + Send>, _) = if super::progress::wanted(&cfg, quiet) {
        let shown = super::progress::ImportProgress::new(reader, size);
        let bar = shown.bar();
        (Box::new(shown), Some(bar))
    } else {
        (reader, None)
    };
    let now = crate::time::now_ms();
    let imported = match snapshot {
        Some(rules) => crate::store::import::import_snapshot(&mut store, reader, now, rules),
        None => crate::store::import::import(&mut store, reader, now),
    };
    if let Some(bar) = bar {
        super::progress::clear(&bar);
    }
    let mut summary = imported?;
    summary.unreported = store.unreported_modules(&cfg.service_modules())?;
    println!("{summary}");
    Ok(())
}

/// A connector id as one URL path segment (percent-encoded).
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A paste refused by the daemon: the same exit codes as a local paste (502 → 75, else 1).
fn paste_error(status: u16, v: &serde_json::Value) -> CommandError {
    let message = crate::api::client::error_message(v);
    let code = crate::api::client::error_code(v);
    CommandError::RunIncomplete {
        message: format!("{message} ({code})"),
        transient: status == 502 || status == 503,
    }
}
