//! The command line: argument parsing (clap), dispatch to the modules that do the work, output
//! formatting, and the exit codes of the contract.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::config::{loose_permissions, Config, ConfigError, Problem};
use crate::domain::Trigger;
use crate::store::import::ImportError;
use crate::store::ledger::HistoryFilter;
use crate::store::StoreError;
use crate::sync::{RunControl, RunReport, RunRequest, SyncContext, SyncError};

/// Exit codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; every pair pushed or skipped for a documented reason.
    Ok = 0,
    /// Failed for a reason the message explains.
    Failed = 1,
    /// Bad command-line usage.
    Usage = 2,
    /// Bad import data: nothing was applied.
    DataErr = 65,
    /// Some pairs failed transiently, or a token was rejected; retried next run.
    TempFail = 75,
    /// Bad configuration.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Reports a Gradient vendor's billable usage per MSP customer to Gradient MSP.
#[derive(Debug, Parser)]
#[command(name = "gradient-connector", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: $GRADIENT_CONNECTOR_CONFIG, else /etc/gradient-connector/gradient-connector.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify): scheduled syncs, SIGUSR1 = sync now,
    /// SIGHUP = reload, SIGTERM = stop.
    Run,
    /// Sync all (or one) connectors now, then exit (0 ok, 75 some pairs failed or a token was
    /// rejected, 1 failed).
    Sync {
        /// Compute and print the planned counts; send nothing to Gradient and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this connector (channel id).
        #[arg(long, value_name = "ID")]
        connector: Option<String>,
        /// Count this calendar month (YYYY-MM, monthly semantics) instead of the configured cadence.
        #[arg(long, value_name = "YYYY-MM")]
        period: Option<String>,
        /// Print the plan (dry run) or the run summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration (and that the store can be opened); print every problem (exit 78).
    CheckConfig,
    /// Apply inventory records (JSON Lines) from FILE or stdin in one transaction (exit 65 on bad
    /// data: nothing applied).
    Import {
        /// The file; `-` or absent reads standard input.
        file: Option<PathBuf>,
    },
    /// Manage connectors (one per MSP channel): add or replace a token, disconnect, list.
    Connector {
        /// What to do with connectors.
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// Connectors, last run, last-known counts, unmapped and failing pairs, next scheduled run.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The ledger of pushes, newest first.
    History {
        /// Only this connector.
        #[arg(long, value_name = "ID")]
        connector: Option<String>,
        /// Only this run.
        #[arg(long, value_name = "RUN")]
        run: Option<i64>,
        /// Only pairs whose count changed since their previous push.
        #[arg(long)]
        changes: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// JSON array.
        #[arg(long)]
        json: bool,
    },
    /// A self-contained tour against an in-process Gradient stand-in on 127.0.0.1.
    Demo {
        /// Keep the demo's store and config in DIR instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

/// `connector` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Store (or replace) channel ID's pasted Gradient partner token, verify it, set the integration
    /// `pending`. Replacing a token heals a rejected one.
    Add {
        /// The channel (MSP) id.
        id: String,
        /// File holding the token; `-` reads standard input.
        #[arg(long, value_name = "PATH")]
        token_file: PathBuf,
    },
    /// Tell Gradient the integration is `inactive` and forget the token; history stays.
    Disconnect {
        /// The channel (MSP) id.
        id: String,
    },
    /// Connectors and their state.
    List {
        /// JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `gradient-connector` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    run(cli).into()
}

/// Runs one parsed command line and returns its exit code.
pub fn run(cli: Cli) -> Exit {
    let config_path = Config::resolve_path(cli.config.as_deref());
    match cli.command {
        Command::CheckConfig => check_config(&config_path),
        Command::Import { file } => with_config(&config_path, |cfg| import(cfg, file.as_deref())),
        Command::Demo { keep } => crate::demo::run(keep.as_deref()),
        other => with_config(&config_path, |cfg| dispatch(cfg, other)),
    }
}

/// The async runtime of a command, or the exit code when it cannot start.
pub fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        })
}

fn dispatch(cfg: Config, command: Command) -> Exit {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let cfg = Arc::new(cfg);
    runtime.block_on(async move {
        match command {
            Command::Run => crate::daemon::run(cfg).await,
            Command::Sync {
                dry_run,
                connector,
                period,
                json,
            } => sync(cfg, dry_run, connector, period, json).await,
            Command::Connector { command } => connector(cfg, command).await,
            Command::Status { json } => status(&cfg, json),
            Command::History {
                connector,
                run,
                changes,
                limit,
                json,
            } => history(
                &cfg,
                HistoryFilter {
                    connector,
                    run,
                    changes,
                    limit,
                },
                json,
            ),
            Command::CheckConfig | Command::Import { .. } | Command::Demo { .. } => Exit::Usage,
        }
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> Exit {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: cannot encode JSON: {e}");
            Exit::Failed
        }
    }
}

fn open_store(cfg: &Config) -> Result<crate::store::Store, Exit> {
    crate::store::Store::open(&cfg.store.path, cfg.store.busy_timeout).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Failed
    })
}

fn sync_error(e: SyncError) -> Exit {
    eprintln!("error: {e}");
    match e {
        SyncError::Config(_) => Exit::Config,
        SyncError::Store(StoreError::Busy | StoreError::RunInProgress) => Exit::TempFail,
        _ => Exit::Failed,
    }
}

async fn sync(
    cfg: Arc<Config>,
    dry_run: bool,
    connector: Option<String>,
    period: Option<String>,
    json: bool,
) -> Exit {
    let month = match period.as_deref().map(str::parse::<crate::time::Month>) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("error: --period: {e}");
            return Exit::Usage;
        }
    };
    let req = RunRequest {
        trigger: Trigger::Cli,
        connector,
        month,
        slot_at: None,
    };
    if dry_run {
        return match crate::sync::dry_run(&cfg, &req).await {
            Ok(plan) if json => print_json(&plan),
            Ok(plan) => {
                print!("{}", crate::status::render_dry_run(&plan));
                Exit::Ok
            }
            Err(e) => sync_error(e),
        };
    }
    let ctx = match SyncContext::new(cfg) {
        Ok(c) => c,
        Err(e) => return sync_error(e),
    };
    let control = RunControl::default();
    let watcher = crate::daemon::stop_on_signals(control.clone());
    let result = crate::sync::run(&ctx, req, &control).await;
    watcher.abort();
    match result {
        Ok(report) => {
            if json {
                print_json(&report);
            } else {
                print!("{}", render_report(&report));
            }
            report.exit()
        }
        Err(e) => sync_error(e),
    }
}

/// A run report for the terminal.
pub fn render_report(r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{}", r.summary());
    for c in &r.connectors {
        let _ = writeln!(
            o,
            "  connector {}: {} (accounts created {}, renamed {})",
            c.id, c.tally, c.accounts_created, c.accounts_renamed
        );
        if let Some(n) = &c.note {
            let _ = writeln!(o, "    {n}");
        }
        for (a, m) in &c.unmapped {
            let _ = writeln!(
                o,
                "    unmapped: {a} / {m} (the MSP has not mapped it in Gradient yet)"
            );
        }
        for (a, m, why) in &c.failed {
            let _ = writeln!(o, "    failed: {a} / {m}: {why}");
        }
    }
    o
}

async fn connector(cfg: Arc<Config>, command: ConnectorCommand) -> Exit {
    match command {
        ConnectorCommand::List { json } => {
            let store = match open_store(&cfg) {
                Ok(s) => s,
                Err(e) => return e,
            };
            match store.connectors() {
                Ok(rows) if json => print_json(&rows),
                Ok(rows) => {
                    print!("{}", crate::status::render_connectors(&rows));
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Exit::Failed
                }
            }
        }
        ConnectorCommand::Add { id, token_file } => {
            let token = match crate::connector::read_token(&token_file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Exit::Failed;
                }
            };
            let ctx = match SyncContext::new(cfg) {
                Ok(c) => c,
                Err(e) => return sync_error(e),
            };
            match crate::connector::add(&ctx, &id, token).await {
                Ok(r) => {
                    println!(
                        "connector {} connected: Gradient shows the integration {}; accounts created {}, renamed {}",
                        r.id, r.gradient_status, r.accounts_created, r.accounts_renamed
                    );
                    if !r.channel_known {
                        println!("note: the inventory has no channel {:?} yet; import it so that its workspaces are synced", r.id);
                    }
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit()
                }
            }
        }
        ConnectorCommand::Disconnect { id } => {
            let ctx = match SyncContext::new(cfg) {
                Ok(c) => c,
                Err(e) => return sync_error(e),
            };
            match crate::connector::disconnect(&ctx, &id).await {
                Ok(told) => {
                    println!(
                        "connector {id} disconnected: token forgotten, history kept{}",
                        if told {
                            "; Gradient shows the integration inactive"
                        } else {
                            "; Gradient could not be told (see the log)"
                        }
                    );
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit()
                }
            }
        }
    }
}

fn status(cfg: &Config, json: bool) -> Exit {
    let store = match open_store(cfg) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match crate::status::status(&store, cfg) {
        Ok(s) if json => print_json(&s),
        Ok(s) => {
            print!("{}", crate::status::render_status(&s));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}

fn history(cfg: &Config, filter: HistoryFilter, json: bool) -> Exit {
    let store = match open_store(cfg) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match crate::status::history(&store, &filter) {
        Ok(rows) if json => print_json(&rows),
        Ok(rows) => {
            print!("{}", crate::status::render_history(&rows));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}

/// Loads the configuration (exit 78 with every problem when it is bad), sets up logging, then runs `f`.
fn with_config(path: &Path, f: impl FnOnce(Config) -> Exit) -> Exit {
    match Config::load(path) {
        Ok(cfg) => {
            crate::daemon::init_logging(&cfg.log);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            f(cfg)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Config
        }
    }
}

fn check_config(path: &Path) -> Exit {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(ConfigError::Invalid { path, problems }) => {
            eprintln!(
                "configuration {} has {} problem(s):",
                path.display(),
                problems.len()
            );
            for p in problems {
                eprintln!("  - {p}");
            }
            return Exit::Config;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let (mut problems, mut warnings) = cfg.check_vendor_key();
    warnings.extend(cfg.warnings.iter().cloned());
    match check_store(&cfg.store.path) {
        Ok(Some(w)) => warnings.push(w),
        Ok(None) => {}
        Err(p) => problems.push(p),
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !problems.is_empty() {
        eprintln!(
            "configuration {} has {} problem(s):",
            cfg.source.display(),
            problems.len()
        );
        for p in &problems {
            eprintln!("  - {p}");
        }
        return Exit::Config;
    }
    let next = crate::schedule::Schedule::new(&cfg.schedule.cron, cfg.schedule.timezone)
        .ok()
        .and_then(|s| s.next_after(crate::time::now_ms()).ok())
        .map(crate::time::format_ms)
        .unwrap_or_else(|| "unknown".into());
    println!("configuration OK: {}", cfg.source.display());
    println!(
        "  gradient: {} ({} req/s, {} in flight, timeout {}s, {} attempts)",
        cfg.gradient.client.base_url,
        cfg.gradient.client.requests_per_second,
        cfg.gradient.client.max_in_flight,
        cfg.gradient.client.request_timeout.as_secs(),
        cfg.gradient.client.max_attempts
    );
    println!("  vendor key: {}", cfg.vendor_key_path().display());
    println!("  store: {}", cfg.store.path.display());
    println!(
        "  schedule: {} at \"{}\" {} (catch-up {}); next run {}",
        cfg.schedule.cadence.as_str(),
        cfg.schedule.cron,
        cfg.schedule.timezone,
        if cfg.schedule.catch_up { "on" } else { "off" },
        next
    );
    let names: Vec<String> = cfg
        .services
        .iter()
        .map(|s| format!("{} ({}, {})", s.name, s.module, s.unit.as_str()))
        .collect();
    println!("  services: {}", names.join("; "));
    Exit::Ok
}

/// Checks that the store opens (an existing file) or can be created (a missing one, without
/// creating it); warns when an existing store is readable by others.
fn check_store(path: &Path) -> Result<Option<Problem>, Problem> {
    let problem = |message: String| Problem {
        key: "store.path".into(),
        message,
    };
    if path.exists() {
        crate::store::Store::open(path, std::time::Duration::from_secs(5))
            .map_err(|e| problem(e.to_string()))?;
        return Ok(loose_permissions(path, "store.path"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(problem(format!(
            "the directory {} does not exist; create it (systemd's StateDirectory= does)",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".gradient-connector-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(None)
        }
        Err(e) => Err(problem(format!(
            "cannot create the store in {}: {e}",
            dir.display()
        ))),
    }
}

fn import(cfg: Config, file: Option<&Path>) -> Exit {
    let mut store = match crate::store::Store::open(&cfg.store.path, cfg.store.busy_timeout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failed;
        }
    };
    let stdin = || {
        Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::io::stdin(),
        ))
    };
    let reader: Box<dyn BufRead + Send> = match file {
        None => stdin(),
        Some(p) if p.as_os_str() == "-" => stdin(),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(256 * 1024, f)),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", p.display());
                return Exit::Failed;
            }
        },
    };
    match crate::store::import::import(&mut store, reader, crate::time::now_ms()) {
        Ok(summary) => {
            println!("{summary}");
            Exit::Ok
        }
        Err(e @ ImportError::BadLines { .. }) => {
            eprintln!("error: {e}");
            Exit::DataErr
        }
        Err(ImportError::Store(e @ StoreError::Busy)) => {
            eprintln!("error: {e}");
            Exit::TempFail
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}
