//! The demo (work in progress).
use std::path::Path;

use crate::cli::Exit;

/// Runs the demo.
pub fn run(_keep: Option<&Path>) -> Exit {
    eprintln!("error: the demo is not yet available in this build");
    Exit::Failed
}
