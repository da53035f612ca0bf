//! Key files: the one reader of every secret file (vendor key, API token, webhook secrets, store
//! key) and the one place a systemd credential is looked up.
//!
//! A key file must be a regular file (a FIFO, a device such as `/dev/zero` or a directory is
//! refused at once, never read: it is opened non-blocking and checked on the open descriptor) of
//! at most [`KEY_FILE_MAX_BYTES`]. Errors name the file and what to do, never the content.
//!
//! The store key is one line: standard base64 of exactly 32 random bytes
//! ([`parse_store_key`]); [`write_new_store_key`] creates one (mode 0600, never overwriting).
//! `Config`'s store-key loading ([`Config::load_store_key`], [`Config::check_store_key`]) and the
//! key-file check of an otherwise invalid configuration ([`Config::key_file_problems`]) live here.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use config::{Environment, File, FileFormat, Value};
use secrecy::{SecretBox, SecretString};

use super::{
    loose_permissions, Config, ConfigError, Fallback, Problem, WebhookSecret, ENV_PREFIX, KEYS,
    VENDOR_KEY_CREDENTIAL, WEBHOOK,
};

/// Longest key file read, in bytes.
pub const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;
/// Name of the systemd credential holding the store key.
pub const STORE_KEY_CREDENTIAL: &str = "store-key";

/// The store key the package makes, used when `store.key_file` is unset and the file exists.
pub const DEFAULT_STORE_KEY: &str = "/etc/gradient-connector/store-key";
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

/// Why a key file could not be read or written. Each message says what is wrong with the file
/// and what to do; the I/O error underneath is the `source()`. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened.
    #[error("cannot read {}: {source}; create it (mode 0600) or point the key at it", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file could not be read (or its metadata).
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("{} is not a regular file (a FIFO, device or directory is never read); point the key at a regular file holding the secret", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Larger than the cap.
    #[error("{} is larger than {max} bytes: it must hold the secret alone", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// Not UTF-8 text.
    #[error("{} is not UTF-8 text", .path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The system gave no random bytes for a new key.
    #[error("no random bytes from the system: {0}")]
    NoRandom(#[source] getrandom::Error),
    /// A new key's file exists already.
    #[error("{} already exists; a key is never overwritten (a store sealed with it would lose its tokens): choose a new path", .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A new key's file could not be created or written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Reads a key file of at most `max` bytes as text (a leading UTF-8 byte-order mark removed).
/// Only a regular file is read. The error says what is wrong with the file and what to do.
pub fn read_key_file(path: &Path, max: u64) -> Result<SecretString, KeyFileError> {
    let at = || path.to_path_buf();
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO without a writer would block; a non-blocking open returns at once.
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|source| KeyFileError::Open { path: at(), source })?;
    let meta = file
        .metadata()
        .map_err(|source| KeyFileError::Read { path: at(), source })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular { path: at() });
    }
    if meta.len() > max {
        return Err(KeyFileError::TooLarge { path: at(), max });
    }
    let mut raw = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut raw)
        .map_err(|source| KeyFileError::Read { path: at(), source })?;
    if raw.len() as u64 > max {
        return Err(KeyFileError::TooLarge { path: at(), max });
    }
    let text = String::from_utf8(raw).map_err(|_| KeyFileError::NotText { path: at() })?;
    Ok(SecretString::from(
        text.trim_start_matches('\u{feff}').to_string(),
    ))
}

/// Why a store key's text is refused. Its text never contains the key's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreKeyError {
    /// Nothing in the file.
    #[error("is empty; {STORE_KEY_REMEDY}")]
    Empty,
    /// Not base64.
    #[error("is not one line of standard base64; {STORE_KEY_REMEDY}")]
    NotBase64,
    /// Base64 of another length.
    #[error(
        "must be the base64 of exactly {STORE_KEY_BYTES} bytes, found {found}; {STORE_KEY_REMEDY}"
    )]
    Length {
        /// How many bytes it decodes to.
        found: usize,
    },
}

/// How a store key is made.
const STORE_KEY_REMEDY: &str = "create a key with `gradient-connector store new-key PATH` (or `head -c 32 /dev/urandom | base64`)";

/// Parses the store key's text: one line, standard base64 of exactly 32 bytes. The error never
/// contains the text.
pub fn parse_store_key(text: &str) -> Result<SecretBox<[u8; STORE_KEY_BYTES]>, StoreKeyError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(StoreKeyError::Empty);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|_| StoreKeyError::NotBase64)?;
    let key: [u8; STORE_KEY_BYTES] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreKeyError::Length { found: bytes.len() })?;
    Ok(SecretBox::new(Box::new(key)))
}

/// Writes a fresh store key (32 bytes from the operating system's random source, standard
/// base64, one line) to a new file `path` of mode 0600. An existing file is never overwritten.
pub fn write_new_store_key(path: &Path) -> Result<(), KeyFileError> {
    let mut key = [0u8; STORE_KEY_BYTES];
    getrandom::fill(&mut key).map_err(KeyFileError::NoRandom)?;
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
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyFileError::Exists {
                path: path.to_path_buf(),
            },
            _ => KeyFileError::Write {
                path: path.to_path_buf(),
                source,
            },
        })?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

impl Config {
    /// Where the store key is read from: the systemd credential `store-key` when present, else
    /// `store.key_file`; unset, [`DEFAULT_STORE_KEY`] when that file exists, else the key beside
    /// the store ([`Config::store_key_beside`]).
    pub fn store_key_path(&self) -> PathBuf {
        let configured = match &self.store.key_file {
            Some(p) => p.clone(),
            None if Path::new(DEFAULT_STORE_KEY).exists() => PathBuf::from(DEFAULT_STORE_KEY),
            None => self.store_key_beside(),
        };
        credential_or(STORE_KEY_CREDENTIAL, &configured)
    }

    /// The key used when nothing names one: `STORE.key` beside the store file.
    pub fn store_key_beside(&self) -> PathBuf {
        let mut p = self.store.path.clone().into_os_string();
        p.push(".key");
        PathBuf::from(p)
    }

    /// Whether the key in use is the one kept beside the store (nothing configured it).
    fn key_is_beside_store(&self) -> bool {
        self.store_key_path() == self.store_key_beside()
    }

    /// Loads the store key (one line of standard base64 of 32 bytes). When no key is configured
    /// and none exists, the key beside the store is created (mode 0600) first. Errors name
    /// `store.key_file` and the file, never the content, and say how to create a key.
    pub fn load_store_key(&self) -> Result<secrecy::SecretBox<[u8; STORE_KEY_BYTES]>, ConfigError> {
        use secrecy::ExposeSecret;
        let path = self.store_key_path();
        let problem = |message: String| {
            ConfigError::StoreKey(Problem {
                key: "store.key_file".into(),
                message,
            })
        };
        if self.key_is_beside_store() && !path.exists() {
            write_new_store_key(&path).map_err(|m| {
                problem(format!(
                    "{m}; set store.key_file to a key made with `gradient-connector store new-key PATH`"
                ))
            })?;
            tracing::info!(key = %path.display(), "store.key_file is not set: created a store key beside the store");
        }
        let text = read_key_file(&path, KEY_FILE_MAX_BYTES).map_err(|m| {
            problem(format!(
                "{m}; partner tokens are sealed at rest with the store key: create it with `gradient-connector store new-key {}`",
                path.display()
            ))
        })?;
        parse_store_key(text.expose_secret())
            .map_err(|m| problem(format!("the store key file {} {m}", path.display())))
    }

    /// Checks that the store key loads and warns when its file is readable by group or others.
    pub fn check_store_key(&self) -> (Vec<Problem>, Vec<Problem>) {
        if self.key_is_beside_store() {
            // Nothing configured: never created by a check; a warning says where the key lives.
            let path = self.store_key_path();
            let beside = Problem {
                key: "store.key_file".into(),
                message: format!(
                    "not set: partner tokens are sealed with the key {} beside the store{} — a copy of the store's directory carries it along; set store.key_file to a key kept elsewhere (the package's /etc/gradient-connector/store-key)",
                    path.display(),
                    if path.exists() { "" } else { " (created at first use)" }
                ),
            };
            if !path.exists() {
                return (vec![], vec![beside]);
            }
            let (problems, mut warnings) = self.check_store_key_file();
            warnings.push(beside);
            return (problems, warnings);
        }
        self.check_store_key_file()
    }

    /// Checks that the store key file in use loads; warns when it is readable by group or others.
    fn check_store_key_file(&self) -> (Vec<Problem>, Vec<Problem>) {
        match self.load_store_key() {
            Ok(_) => (
                vec![],
                loose_permissions(&self.store_key_path(), "store.key_file")
                    .into_iter()
                    .collect(),
            ),
            Err(ConfigError::StoreKey(p)) => (vec![p], vec![]),
            Err(other) => (
                vec![Problem {
                    key: "store.key_file".into(),
                    message: other.to_string(),
                }],
                vec![],
            ),
        }
    }

    /// Every key-file problem of the file at `path` read the way [`Config::load`] reads it, for a
    /// configuration that is otherwise invalid (so that `check-config` lists them in the same
    /// report): the vendor key, the store key and each webhook secret whose path is a string (a
    /// wrong type is already a problem of its own; an absent key means its default). Reads only
    /// regular files.
    pub fn key_file_problems(path: &Path) -> Vec<Problem> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let source = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .ignore_empty(true)
            .source(Some(env.into_iter().collect()));
        let Ok(built) = config::Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .add_source(source)
            .build()
        else {
            return Vec::new();
        };
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }
        };
        let text_of = |key: &str| -> Option<String> {
            match built.get::<Value>(key) {
                Ok(v) => v.into_string().ok(),
                Err(_) => KEYS
                    .iter()
                    .find(|k| format!("{}.{}", k.section, k.name) == key)
                    .and_then(|k| match k.default {
                        Fallback::Value(d) => Some(d.to_string()),
                        _ => None,
                    }),
            }
        };
        let mut problems = Vec::new();
        let mut check = |key: String, file: PathBuf, parse: &dyn Fn(&str) -> Result<(), String>| {
            use secrecy::ExposeSecret;
            let found = read_key_file(&file, KEY_FILE_MAX_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    parse(t.expose_secret()).map_err(|m| format!("{}: {m}", file.display()))
                });
            if let Err(message) = found {
                problems.push(Problem { key, message });
            }
        };
        if let Some(p) = text_of("gradient.vendor_api_key_file") {
            let file = credential_or(VENDOR_KEY_CREDENTIAL, &resolve(p));
            check("gradient.vendor_api_key_file".into(), file, &|t| {
                if t.trim().is_empty() {
                    Err("is empty; paste the vendor API key Gradient issued".into())
                } else {
                    Ok(())
                }
            });
        }
        if let Some(p) = text_of("store.key_file") {
            let file = credential_or(STORE_KEY_CREDENTIAL, &resolve(p));
            check("store.key_file".into(), file, &|t| {
                parse_store_key(t).map(|_| ()).map_err(|e| e.to_string())
            });
        }
        if let Ok(hooks) = built.get::<Vec<Value>>(WEBHOOK) {
            for (i, h) in hooks.into_iter().enumerate() {
                let file = h
                    .into_table()
                    .ok()
                    .and_then(|t| t.get("secret_file").cloned())
                    .and_then(|v| v.into_string().ok());
                if let Some(f) = file {
                    check(format!("{WEBHOOK}[{i}].secret_file"), resolve(f), &|t| {
                        WebhookSecret::parse(t)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    });
                }
            }
        }
        problems
    }
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
        for not_regular in [fifo.as_path(), Path::new("/dev/zero"), d.path()] {
            let e = read_key_file(not_regular, KEY_FILE_MAX_BYTES).unwrap_err();
            assert!(matches!(e, KeyFileError::NotRegular { .. }), "{e:?}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let e = read_key_file(&d.path().join("missing"), KEY_FILE_MAX_BYTES).unwrap_err();
        let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'a'; 70_000]).unwrap();
        let e = read_key_file(&big, KEY_FILE_MAX_BYTES).unwrap_err();
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
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
        assert!(matches!(e, KeyFileError::Exists { .. }), "{e:?}");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        let e = parse_store_key("c2hvcnQ=").unwrap_err();
        assert_eq!(e, StoreKeyError::Length { found: 5 });
        assert!(e.to_string().contains("exactly 32 bytes, found 5"), "{e}");
        assert!(parse_store_key("not base64!").is_err());
    }
}
