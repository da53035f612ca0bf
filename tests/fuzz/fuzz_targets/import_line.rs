//! Fuzzes the import line parser: any bytes, never a panic; a rejection always has a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(reason) = gradient_connector::store::import::parse_line(text, 0) {
            assert!(!reason.is_empty());
        }
    }
});
