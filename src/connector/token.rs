//! A pasted partner token, read and checked without ever echoing it, and the vendor key's keyed
//! fingerprint (recorded with a rejection so that a vendor-key fix can be told from an MSP's new
//! key — the key itself is never stored).

use std::io::Read;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::error::TokenProblem;
use super::ConnectorError;

/// Longest accepted token.
const MAX_TOKEN_BYTES: usize = 4096;

/// Reads a pasted token from a file or standard input (`-`).
pub fn read_token(path: &Path) -> Result<SecretString, ConnectorError> {
    let mut raw = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_TOKEN_BYTES as u64 + 1)
            .read_to_end(&mut raw)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_BYTES as u64 + 1).read_to_end(&mut raw))
    };
    result.map_err(|source| {
        ConnectorError::BadToken(TokenProblem::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let text =
        String::from_utf8(raw).map_err(|_| ConnectorError::BadToken(TokenProblem::NotText))?;
    validate_token(&text)
}

/// Strips a UTF-8 byte-order mark and surrounding white space (CRLF included), then rejects empty
/// tokens and ones containing white space or control characters. Error messages never contain the
/// token.
pub fn validate_token(raw: &str) -> Result<SecretString, ConnectorError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(ConnectorError::BadToken(TokenProblem::TooLong {
            max: MAX_TOKEN_BYTES,
        }));
    }
    let t = raw.trim_start_matches('\u{feff}').trim();
    if t.is_empty() {
        return Err(ConnectorError::BadToken(TokenProblem::Empty));
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
    {
        return Err(ConnectorError::BadToken(TokenProblem::NotOneWord));
    }
    Ok(SecretString::from(t.to_string()))
}

/// A keyed fingerprint of the vendor key (HMAC-SHA256 under a fixed label, first 16 hex digits):
/// equal for equal keys, useless for recovering the key.
pub fn key_fingerprint(vendor_key: &SecretString) -> String {
    const LABEL: &[u8] = b"gradient-connector vendor-key fingerprint v1";
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(LABEL) else {
        return String::new();
    };
    mac.update(vendor_key.expose_secret().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked_without_echo() {
        assert_eq!(
            validate_token("  abc123\n").unwrap().expose_secret(),
            "abc123"
        );
        for bad in ["", "   \n", "ab c", "ab\tc", "a\u{7}b"] {
            let e = validate_token(bad).unwrap_err().to_string();
            if bad.trim().len() > 1 {
                assert!(!e.contains(bad.trim()), "{e}");
            }
        }
        assert!(validate_token(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn each_refusal_is_its_own_problem_and_says_what_to_do() {
        let problem = |raw: &str| match validate_token(raw) {
            Err(ConnectorError::BadToken(p)) => p,
            other => panic!("{other:?}"),
        };
        assert!(matches!(problem(" \r\n"), TokenProblem::Empty));
        assert!(matches!(problem("ab cd"), TokenProblem::NotOneWord));
        assert!(matches!(
            problem(&"x".repeat(5000)),
            TokenProblem::TooLong {
                max: MAX_TOKEN_BYTES
            }
        ));
        let e = read_token(Path::new("/nonexistent/token")).unwrap_err();
        assert!(
            matches!(
                &e,
                ConnectorError::BadToken(TokenProblem::Unreadable { .. })
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("the token file /nonexistent/token cannot be read: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_bom_and_crlf_are_stripped() {
        let t = validate_token("\u{feff}partner-key-1\r\n").unwrap();
        assert_eq!(t.expose_secret(), "partner-key-1");
        assert!(validate_token("ab\u{feff}cd").is_err());
    }

    #[test]
    fn the_fingerprint_is_stable_and_is_not_the_key() {
        let a = key_fingerprint(&SecretString::from("vendor-key-1"));
        assert_eq!(a, key_fingerprint(&SecretString::from("vendor-key-1")));
        assert_ne!(a, key_fingerprint(&SecretString::from("vendor-key-2")));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("vendor"));
    }
}
