//! Fuzzes the configuration loader: any text, never a panic; every problem names a key.
#![no_main]

use libfuzzer_sys::fuzz_target;

use gradient_connector::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/fuzz/gradient-connector.toml");
        match Config::from_toml(text, path, Default::default()) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(problems.iter().all(|p| !p.key.is_empty()));
            }
            _ => {}
        }
    }
});
