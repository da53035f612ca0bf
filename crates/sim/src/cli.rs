//! The `gradient-sim` binary: its arguments and its start.

use super::*;

/// `gradient-sim`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "gradient-sim",
    version,
    about = "A stand-in for Gradient's vendor API on 127.0.0.1, for demos, tests and benchmarks",
    long_about = "A stand-in for Gradient's vendor API on 127.0.0.1, for demos, tests and benchmarks.\n\n\
Prints the bound port alone on the first line of stdout, then serves until SIGTERM or Ctrl-C.\n\
Admin API (JSON, no auth): POST /_sim/msp {id,name,key}; POST /_sim/msp/{id}/rotate {key};\n\
POST /_sim/msp/{id}/disconnect; POST /_sim/msp/{id}/reconnect {key}; PUT /_sim/msp/{id}/mapping\n\
(\"All\" or {\"Explicit\":{\"accounts\":[..],\"service_ids\":[..]}}); POST /_sim/fault\n\
{method,path_prefix,status,count,retry_after_secs}; POST /_sim/hostile {method,path,path_prefix,count,\n\
behaviour} with behaviour one of {\"body\":{status,body}}, {\"lands_then\":{status,body}},\n\
\"lands_then_silent\", \"silent\", {\"huge\":{status,bytes}}; POST /_sim/throttle {ratio,retry_after_secs};\n\
POST /_sim/latency {ms, spread_ms}; POST /_sim/rate-limit {per_second}; GET /_sim/state (every request\n\
with its body). An admin call naming an unknown MSP answers 404."
)]
struct SimCli {
    /// Port on 127.0.0.1 (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// File holding the vendor API key to accept [default key: sim-vendor-key].
    #[arg(long, value_name = "PATH")]
    vendor_key_file: Option<std::path::PathBuf>,
    /// Requests per second per partner token before 429 (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    rate_limit: u32,
    /// An MSP: ID:NAME:KEYFILE (repeatable).
    #[arg(long, value_name = "ID:NAME:KEYFILE")]
    msp: Vec<String>,
}

/// A key file the stand-in could not read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}; pass a readable file with the key on one line", .path.display())]
pub(crate) struct KeyFileError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

pub(crate) fn read_key(path: &std::path::Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| KeyFileError {
            path: path.to_path_buf(),
            source,
        })
}

/// The `gradient-sim` binary.
/// (Long on purpose: argument checks in order, each with its own exit.)
pub fn main() -> ExitCode {
    use clap::Parser;
    let cli = SimCli::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut opts = SimOptions {
        port: cli.port,
        rate_limit_per_token: cli.rate_limit,
        ..SimOptions::default()
    };
    if let Some(p) = &cli.vendor_key_file {
        match read_key(p) {
            Ok(k) => opts.vendor_key = k,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut msps = Vec::new();
    for m in &cli.msp {
        let parts: Vec<&str> = m.splitn(3, ':').collect();
        let [id, name, file] = parts[..] else {
            eprintln!("error: --msp takes ID:NAME:KEYFILE, found {m:?}");
            return ExitCode::from(2);
        };
        match read_key(std::path::Path::new(file)) {
            Ok(k) => msps.push((id.to_string(), name.to_string(), k)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives right after the port is printed must stop us
        // cleanly, not kill us with the default action.
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
        let mut int =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
        let sim = match Sim::start(opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot bind 127.0.0.1:{}: {e}", cli.port);
                return ExitCode::from(1);
            }
        };
        for (id, name, key) in &msps {
            sim.add_msp(id, name, key);
        }
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", sim.addr().port());
            let _ = out.flush();
        }
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
