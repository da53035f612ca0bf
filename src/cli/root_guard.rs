//! Root cannot break the service: a command run as root (uid 0) against a store that another user
//! owns refuses before it opens anything, and names the command to run instead
//! (`runuser -u OWNER -- gradient-connector …`). Otherwise root would leave files behind that the
//! owner cannot use (the run lock, a new store), and the service user's next run would fail.
//!
//! The store's owner is the owner of the store file, or, before the store exists, of the directory
//! it will be created in. Root working on its own store (a root-owned file or directory) is not
//! refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A root command refused because another user owns the store.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to run as root: the store {path} belongs to {owner}, and files root creates beside it \
     (the run lock, the store itself) would lock {owner} out; run the command as that user instead: \
     runuser -u {owner} -- {command}"
)]
pub struct ForeignStore {
    /// The store file (or the directory it will be created in).
    pub path: PathBuf,
    /// Its owner's user name (or `#UID` when the user has no name).
    pub owner: String,
    /// The command line to run as the owner.
    pub command: String,
}

/// Refuses when this process runs as root and `store` (or, while missing, its directory) belongs
/// to another user. `args` is this process's command line (for the message).
pub fn check(store: &Path, args: &[String]) -> Result<(), ForeignStore> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Some((path, uid)) = store_owner(store) else {
        return Ok(());
    };
    if uid == 0 {
        return Ok(());
    }
    Err(ForeignStore {
        path,
        owner: user_name(uid).unwrap_or_else(|| format!("#{uid}")),
        command: command_line(args),
    })
}

/// The store file and its owner, or the nearest existing directory it would be created in.
fn store_owner(store: &Path) -> Option<(PathBuf, u32)> {
    let mut candidate = Some(store);
    while let Some(p) = candidate {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        if let Ok(meta) = std::fs::metadata(p) {
            return Some((p.to_path_buf(), meta.uid()));
        }
        candidate = p.parent();
    }
    None
}

/// The user name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// `gradient-connector ARGS…`, each argument quoted for a POSIX shell where it needs it.
fn command_line(args: &[String]) -> String {
    let mut words = vec!["gradient-connector".to_string()];
    words.extend(args.iter().skip(1).map(|a| shell_quote(a)));
    words.join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_missing_store_is_its_directorys() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let (path, uid) = store_owner(&dir.path().join("sub/missing.db")).unwrap();
        assert_eq!((path.as_path(), uid), (dir.path(), me));
    }

    #[test]
    fn the_suggested_command_line_survives_a_shell() {
        let args = [
            "/usr/bin/gradient-connector",
            "--config",
            "/etc/g c.toml",
            "import",
            "it's.jsonl",
        ]
        .map(String::from);
        assert_eq!(
            command_line(&args),
            r"gradient-connector --config '/etc/g c.toml' import 'it'\''s.jsonl'"
        );
    }
}
