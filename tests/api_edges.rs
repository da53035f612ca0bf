//! The control API against clients that do not behave, through the real binary: a flood of idle
//! connections under systemd's default descriptor limit, and inventory posts that are large or
//! arrive together. (The per-connection timeouts are `api::connections`' unit tests, under paused
//! time.)

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const API_TOKEN: &str = "api-token-for-the-edges-tests-0123456789";

/// A stand-in with two connected MSPs and the daemon's API on TCP 127.0.0.1.
fn tcp_env() -> (SimEnv, u16) {
    let port = free_port();
    let e = SimEnv::with_config(|c| {
        c.set("api", "listen", format!("127.0.0.1:{port}"))
            .set("api", "token_file", "api-token")
    });
    let f = e.env.write("api-token", &format!("{API_TOKEN}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    e.import(&two_msps(10, 2).to_jsonl());
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    (e, port)
}

/// The daemon under systemd's default limit of 1,024 open files (`prlimit`), as a service without
/// `LimitNOFILE=` would run.
fn daemon_with_1024_files(e: &SimEnv) -> (std::process::Child, std::path::PathBuf) {
    let log = e.env.path("daemon-nofile.log");
    let child = Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg("--")
        .arg(BIN)
        .arg("--config")
        .arg(&e.env.config)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux) runs the daemon");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("daemon ready", || read().contains("daemon ready"), read);
    (child, log)
}

/// One request on a new connection; (status, body), or None when no answer came within `limit`.
fn request(port: u16, raw: &str, limit: Duration) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {API_TOKEN}\r\nconnection: close\r\n\r\n")
}

#[test]
fn two_thousand_idle_connections_leave_healthz_answering_and_a_run_unaffected() {
    let (e, port) = tcp_env();
    let (mut daemon, log) = daemon_with_1024_files(&e);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // 2,000 connections that send nothing (more than the daemon's 1,024 descriptors). A daemon
    // that stops accepting lets the backlog fill, and connecting then hangs: give up at once.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let idle: Vec<TcpStream> = (0..2000)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
        .collect();
    eprintln!("{} idle connections open", idle.len());
    let t = Instant::now();
    let healthz = request(port, &get("/healthz"), Duration::from_secs(5));
    let took = t.elapsed();
    assert_eq!(
        healthz.as_ref().map(|(s, _)| *s),
        Some(200),
        "/healthz did not answer within 5 s: {healthz:?}\n{}",
        read_log()
    );
    eprintln!("/healthz answered in {took:?} with 2,000 idle connections");
    // A run, meanwhile, is unaffected: it takes its run lock and pushes every pair.
    let ok = Command::new("kill")
        .args(["-s", "USR1", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(
        "the run to finish ok",
        || runs(&e).last().and_then(|r| r.4.clone()).as_deref() == Some("ok"),
        read_log,
    );
    assert!(
        !read_log().contains("Too many open files"),
        "{}",
        read_log()
    );
    let runs_answer = request(port, &get("/v1/runs?limit=1"), Duration::from_secs(5));
    assert_eq!(runs_answer.map(|(s, _)| s), Some(200));
    drop(idle);
    let _ = Command::new("kill")
        .args(["-s", "TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", read_log());
}
