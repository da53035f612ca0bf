//! Key files: the one reader of every secret file (vendor key, API token, webhook secrets, store
//! key) and the one place a systemd credential is looked up.
//!
//! A key file must be a regular file (a FIFO, a device such as `/dev/zero` or a directory is
//! refused at once, never read: it is opened non-blocking and checked on the open descriptor) of
//! at most [`KEY_FILE_MAX_BYTES`]. Errors name the file and what to do, never the content.
//!
//! The store key is one line: standard base64 of exactly 32 random bytes
//! ([`parse_store_key`]); [`write_new_store_key`] creates one (mode 0600, never overwriting).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use secrecy::{SecretBox, SecretString};

/// Longest key file read, in bytes.
pub const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;
/// Name of the systemd credential holding the store key.
pub const STORE_KEY_CREDENTIAL: &str = "store-key";
/// Bytes of the store key.
pub const STORE_KEY_BYTES: usize = 32;

/// The file a secret is read from: the systemd credential `credential` in
/// `$CREDENTIALS_DIRECTORY` when present, else `configured`.
pub fn credential_or(credential: &str, configured: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let cred = Path::new(&dir).join(credential);
        if cred.exists() {
            return cred;
        }
    }
    configured.to_path_buf()
}

/// Reads a key file of at most `max` bytes as text (a leading UTF-8 byte-order mark removed).
/// Only a regular file is read. The error says what is wrong with the file and what to do.
pub fn read_key_file(path: &Path, max: u64) -> Result<SecretString, String> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO without a writer would block; a non-blocking open returns at once.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            format!("cannot read {shown}: {e}; create it (mode 0600) or point the key at it")
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a regular file (a FIFO, device or directory is never read); point the key at a regular file holding the secret"
        ));
    }
    if meta.len() > max {
        return Err(format!(
            "{shown} is larger than {max} bytes: it must hold the secret alone"
        ));
    }
    let mut raw = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if raw.len() as u64 > max {
        return Err(format!(
            "{shown} is larger than {max} bytes: it must hold the secret alone"
        ));
    }
    let text = String::from_utf8(raw).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    Ok(SecretString::from(
        text.trim_start_matches('\u{feff}').to_string(),
    ))
}

/// Parses the store key's text: one line, standard base64 of exactly 32 bytes. The error never
/// contains the text.
pub fn parse_store_key(text: &str) -> Result<SecretBox<[u8; STORE_KEY_BYTES]>, String> {
    let t = text.trim();
    let remedy = "create a key with `gradient-connector store new-key PATH` (or `head -c 32 /dev/urandom | base64`)";
    if t.is_empty() {
        return Err(format!("is empty; {remedy}"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|_| format!("is not one line of standard base64; {remedy}"))?;
    let key: [u8; STORE_KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "must be the base64 of exactly {STORE_KEY_BYTES} bytes, found {}; {remedy}",
            bytes.len()
        )
    })?;
    Ok(SecretBox::new(Box::new(key)))
}

/// Writes a fresh store key (32 bytes from the operating system's random source, standard
/// base64, one line) to a new file `path` of mode 0600. An existing file is never overwritten.
pub fn write_new_store_key(path: &Path) -> Result<(), String> {
    let mut key = [0u8; STORE_KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| format!("no random bytes from the system: {e}"))?;
    let line = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    key.fill(0);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} already exists; a key is never overwritten (a store sealed with it would lose its tokens): choose a new path",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn only_regular_small_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_key_file(&fifo, KEY_FILE_MAX_BYTES).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_key_file(Path::new("/dev/zero"), KEY_FILE_MAX_BYTES).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_key_file(d.path(), KEY_FILE_MAX_BYTES).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'a'; 70_000]).unwrap();
        let e = read_key_file(&big, KEY_FILE_MAX_BYTES).unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        let ok = d.path().join("ok");
        std::fs::write(&ok, "\u{feff}secret\n").unwrap();
        assert_eq!(
            read_key_file(&ok, KEY_FILE_MAX_BYTES)
                .unwrap()
                .expose_secret(),
            "secret\n"
        );
    }

    #[test]
    fn a_new_store_key_parses_and_is_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store-key");
        write_new_store_key(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 45, "44 base64 characters and a newline");
        parse_store_key(&text).unwrap();
        let e = write_new_store_key(&p).unwrap_err();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        let e = parse_store_key("c2hvcnQ=").unwrap_err();
        assert!(e.contains("exactly 32 bytes, found 5"), "{e}");
        assert!(parse_store_key("not base64!").is_err());
    }
}
