//! The project's own tasks, in Rust (rust-analyzer's xtask pattern): `cargo xtask package-assets
//! DIR` writes the man pages and shell completions the Debian package installs, from the product's
//! clap definition. `packaging/build-deb` calls it; nothing of this is in the shipped binary.

mod manual;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask package-assets DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [task, dir] if task == "package-assets" => {
            match manual::write_package_assets(std::path::Path::new(dir)) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
