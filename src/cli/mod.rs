//! The command line: argument parsing (clap), dispatch to the modules that do the work ([`commands`]),
//! output formatting, and the exit codes of the contract ([`exit`]: the only place a result becomes
//! an exit code).

mod commands;
mod exit;
mod progress;
mod root_guard;
mod source;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use exit::{CommandError, Exit};

/// Reports a Gradient vendor's billable usage per MSP customer to Gradient MSP.
#[derive(Debug, Parser)]
#[command(name = "gradient-connector", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: $GRADIENT_CONNECTOR_CONFIG, else /etc/gradient-connector/gradient-connector.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// No progress display on the terminal (it is never shown when stderr is not a terminal or
    /// log.format is json).
    #[arg(long, short, global = true)]
    pub quiet: bool,
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
        /// The file is a snapshot: the whole current state of every channel it names (as of its
        /// first line `{"type":"snapshot","at":"…"}`, default now). What such a channel holds and
        /// the file does not list is unprotected, disabled or removed; other channels are untouched.
        #[arg(long)]
        snapshot: bool,
        /// Accept a snapshot that drops more than `inventory.max_snapshot_shrink_percent` of a
        /// channel's units or workspaces (refused otherwise: exit 65).
        #[arg(long, requires = "snapshot")]
        allow_shrink: bool,
    },
    /// Pull sources (`[[source]]`): list them with their last pulls, or pull now.
    Source {
        /// What to do with sources.
        #[command(subcommand)]
        command: source::SourceCommand,
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
        /// Only pushes whose count differs from the pair's previous push (a pair's first push
        /// counts as a change: PREVIOUS is "-").
        #[arg(long)]
        changes: bool,
        /// What changed in the last run: its changes (as --changes), whatever its outcome.
        #[arg(long, conflicts_with_all = ["run", "changes"])]
        since_last_run: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// JSON array.
        #[arg(long)]
        json: bool,
    },
    /// The store: its key (new-key, rotate-key), backup, integrity check, repair of future-dated
    /// history.
    Store {
        /// What to do with the store.
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// A self-contained tour against an in-process Gradient stand-in on 127.0.0.1. It writes its
    /// own configuration (see --keep) and reads no configuration file.
    Demo {
        /// Keep the demo's store and config in DIR instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Shadows the global --config so that `demo --help` does not offer it (it is refused).
        #[arg(long, hide = true, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// `connector` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Verify channel ID's pasted Gradient partner token, and only then store it (or replace the
    /// old one); set the integration `pending`; ensure the services and create missing accounts.
    /// Replacing a token heals a rejected one; on any failure nothing changes.
    Add {
        /// The channel (MSP) id.
        id: String,
        /// File holding the token; `-` reads standard input (a UTF-8 BOM and CRLF are stripped).
        #[arg(long, value_name = "PATH")]
        token_file: PathBuf,
        /// Accept a token of another Gradient organization than this connector had before.
        #[arg(long)]
        new_organization: bool,
        /// Mail this address at the MSP about the connector (`[email]`); repeat for more. Replaces
        /// the connector's contacts, before the paste so the *connected* mail reaches them.
        #[arg(long = "notify", value_name = "EMAIL", value_parser = contact_address)]
        notify: Vec<String>,
    },
    /// Re-check stored tokens with Gradient now (after a vendor-key fix, rejected connectors come
    /// back without a new paste). Exit 75 when any is not connected.
    Verify {
        /// The channel (MSP) id.
        id: Option<String>,
        /// Every connector with a token.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Tell Gradient the integration is `inactive` and forget the token; history stays.
    Disconnect {
        /// The channel (MSP) id.
        id: String,
    },
    /// Remove a disconnected connector from every list; its history (the ledger) stays. A later
    /// `connector add` under the same id starts a new connector.
    Remove {
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

/// `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a fresh store key (32 random bytes, base64, one line) to a new file of mode 0600;
    /// an existing file is never overwritten.
    NewKey {
        /// Where to write it, e.g. /etc/gradient-connector/store-key.
        path: PathBuf,
    },
    /// Re-seal every partner token with the key in NEW_KEY_FILE, in one transaction; then move it
    /// over store.key_file and reload the daemon.
    RotateKey {
        /// The new key (from `store new-key`).
        new_key_file: PathBuf,
    },
    /// Copy the store to PATH with SQLite's online backup (consistent while the daemon runs;
    /// mode 0600; tokens stay sealed). PATH must not exist.
    Backup {
        /// The new backup file.
        path: PathBuf,
    },
    /// Run SQLite's integrity check (exit 0 sound, 1 with the problems).
    Check,
    /// Re-date inventory records dated in the future (accepted by older versions) to now.
    RepairFuture,
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

/// Runs one parsed command line and returns its exit code: the one place a result becomes a code.
pub fn run(cli: Cli) -> Exit {
    match commands::execute(cli) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit()
        }
    }
}

/// `--notify`: a plain e-mail address.
fn contact_address(text: &str) -> Result<String, crate::connector::ConnectorError> {
    crate::connector::check_contacts(vec![text.to_string()]).map(|_| text.to_string())
}
