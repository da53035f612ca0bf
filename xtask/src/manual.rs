//! The manual pages (clap_mangen) and shell completions (clap_complete, for bash, zsh and fish),
//! generated from the product's own clap definition (`gradient_connector::cli::Cli`), so that what
//! the package installs always matches the command line it ships. `packaging/build-deb` runs
//! `cargo xtask package-assets DIR` for each build it packages.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

use gradient_connector::cli::Cli;

/// The binary's name, as installed and as completed.
const BIN: &str = "gradient-connector";

/// What could not be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the package assets into {path}: {source}; check that the directory is writable"
)]
pub struct ManualError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Writes `DIR/man/*.1` (the main page and one per subcommand) and `DIR/completions/`
/// (`gradient-connector.bash`, `_gradient-connector`, `gradient-connector.fish`). Returns the files
/// written.
pub fn write_package_assets(dir: &Path) -> Result<Vec<PathBuf>, ManualError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManualError { path, source }
    };
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        if d.exists() {
            // Fresh for each build: nothing of an older command line survives.
            std::fs::remove_dir_all(d).map_err(err(d))?;
        }
        std::fs::create_dir_all(d).map_err(err(d))?;
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    clap_mangen::generate_to(cmd.clone(), &man).map_err(err(&man))?;
    // The main page again, with the sections a daemon's operator looks for.
    let main_page = man.join(format!("{BIN}.1"));
    let mut page = Vec::new();
    render_main_page(cmd.clone(), &mut page).map_err(err(&main_page))?;
    std::fs::write(&main_page, page).map_err(err(&main_page))?;
    for shell in [Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, BIN, &completions)
            .map_err(err(&completions))?;
    }
    let bash = completions.join(format!("{BIN}.bash"));
    std::fs::write(&bash, bash_completion()).map_err(err(&bash))?;
    let mut written = Vec::new();
    for d in [&man, &completions] {
        for entry in std::fs::read_dir(d).map_err(err(d))? {
            written.push(entry.map_err(err(d))?.path());
        }
    }
    written.sort();
    Ok(written)
}

/// The bash completion. clap_complete names the script's states from the program's name and
/// splits that name at its hyphen in some places and not others (clap-rs/clap#6421: nothing
/// completes after the first word of `gradient-connector`). The script is generated for a name
/// without a hyphen, then bound to the real one.
fn bash_completion() -> String {
    const PLAIN: &str = "gradient_connector";
    let plain = PLAIN;
    // A command line never built under the hyphenated name (building names every subcommand).
    let mut cmd = Cli::command()
        .disable_help_subcommand(true)
        .name(PLAIN)
        .bin_name(PLAIN);
    let mut out = Vec::new();
    clap_complete::generate(Shell::Bash, &mut cmd, PLAIN, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines()
        .map(|line| {
            let bound = line.trim_start().starts_with("complete -F");
            match line.strip_suffix(&format!(" {plain}")) {
                Some(head) if bound => format!("{head} {BIN}\n"),
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// gradient-connector(1): clap's sections, then exit status, files, environment and see also.
fn render_main_page(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd).manual("gradient-connector manual");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "done; every pair pushed, or skipped for a documented reason (unmapped, module disabled)"),
        ("1", "failed for a reason the message explains (also: run as root against a store another user owns)"),
        ("2", "bad command-line usage"),
        ("65", "bad import data: nothing was applied"),
        ("75", "some pairs failed transiently, or a connector's token was rejected; retried at the next run"),
        ("78", "bad configuration: check-config lists every problem"),
    ] {
        roff.control("TP", []).text([bold(code)]).text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (file, what) in [
        ("/etc/gradient-connector/gradient-connector.toml", "the configuration (group gradient-connector, mode 0640)"),
        ("/etc/gradient-connector/vendor-api-key", "the vendor API key Gradient issued (owner gradient-connector, mode 0600); the systemd credential vendor-api-key"),
        ("/etc/gradient-connector/store-key", "the store key, created when the package is installed; the systemd credential store-key"),
        ("/var/lib/gradient-connector/store.db", "the store (SQLite, WAL): inventory, tokens, runs and the ledger; owned by the gradient-connector user"),
        ("/run/gradient-connector/api.sock", "the control API of the running daemon"),
        ("/usr/lib/systemd/system/gradient-connector.service", "the systemd unit (installed disabled)"),
        ("/usr/share/doc/gradient-connector/README.md", "the full documentation: configuration keys, import format, operations runbook"),
    ] {
        roff.control("TP", []).text([bold(file)]).text([roman(what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", [])
        .text([bold("GRADIENT_CONNECTOR_CONFIG")])
        .text([roman("the configuration file when --config is not given")]);
    roff.control("TP", [])
        .text([bold("GRADIENT_CONNECTOR__SECTION__KEY")])
        .text([roman(
            "overrides one configuration key, e.g. GRADIENT_CONNECTOR__SCHEDULE__TIMEZONE",
        )]);
    roff.control("SH", ["NOTES"]);
    roff.text([roman(
        "Run commands as the service user, so that the store stays readable for the daemon: \
         runuser -u gradient-connector -- gradient-connector COMMAND. Run as root against a store \
         that another user owns, a command refuses (exit 1) and names that command.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1), runuser(1), /usr/share/doc/gradient-connector/README.md",
    )]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_every_visible_command_and_nothing_hidden() {
        let dir = tempfile::tempdir().unwrap();
        // A leftover of an older build is removed.
        std::fs::create_dir_all(dir.path().join("man")).unwrap();
        std::fs::write(dir.path().join("man/gradient-connector-gone.1"), "old").unwrap();
        let files = write_package_assets(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "gradient-connector.1",
            "gradient-connector-sync.1",
            "gradient-connector-check-config.1",
            "gradient-connector-connector-add.1",
            "gradient-connector.bash",
            "_gradient-connector",
            "gradient-connector.fish",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("gone") || n.contains("package-assets")),
            "{names:?}"
        );
        let main = std::fs::read_to_string(dir.path().join("man/gradient-connector.1"))
            .unwrap()
            .replace("\\-", "-");
        for section in [
            "EXIT STATUS",
            "FILES",
            "runuser -u gradient-connector",
            "check-config",
        ] {
            assert!(
                main.contains(section),
                "{section} missing from the main page"
            );
        }
        let bash = std::fs::read_to_string(dir.path().join("completions/gradient-connector.bash"))
            .unwrap();
        assert!(bash.contains("check-config") && !bash.contains("package-assets"));
    }

    /// What bash completes after `words` (the last one being completed), with the script loaded
    /// by a real bash the way bash-completion loads it, through `complete -p`.
    fn bash_completes(script: &std::path::Path, words: &[&str]) -> String {
        let program = r#"source "$1"; shift
fn=$(complete -p gradient-connector | sed -E 's/.*-F ([^ ]+).*/\1/')
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
echo "${COMPREPLY[*]}""#;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .arg("bash")
            .arg(script)
            .args(words)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn bash_completes_subcommands_and_their_options_in_a_real_bash() {
        let dir = tempfile::tempdir().unwrap();
        write_package_assets(dir.path()).unwrap();
        let script = dir.path().join("completions/gradient-connector.bash");
        let top = bash_completes(&script, &["gradient-connector", ""]);
        assert!(top.contains("connector") && top.contains("sync"), "{top}");
        // After the first word (clap-rs/clap#6421 completed nothing here).
        for program in ["gradient-connector", "/usr/bin/gradient-connector"] {
            let sub = bash_completes(&script, &[program, "connector", ""]);
            for word in ["add", "verify", "disconnect", "remove", "list"] {
                assert!(
                    sub.split(' ').any(|w| w == word),
                    "{program}: {word} in {sub:?}"
                );
            }
        }
        let flags = bash_completes(&script, &["gradient-connector", "import", "--"]);
        assert!(
            flags.contains("--snapshot") && flags.contains("--allow-shrink"),
            "{flags}"
        );
        let store = bash_completes(&script, &["gradient-connector", "store", "r"]);
        assert_eq!(store, "rotate-key repair-future");
    }
}
