//! The `postgres` pull source against a real PostgreSQL server (Debian's, started by
//! `.ci/services`: `GRADIENT_CONNECTOR_TEST_PG` names its socket). Under CI a missing server fails
//! these tests; elsewhere they are skipped with a message. Each test makes its own database.
//!
//! Covered: the README's worked example (a typical schema turned into inventory records by one
//! `json_build_object` statement) as a snapshot, a records query, TLS asked for by the URL and
//! refused by the server, a statement timeout, a query error and a connection dropped mid-stream
//! (nothing applied), the URL's password never shown; `--ignored`: a million rows streamed in
//! bounded memory.

use std::io::{Read, Write};

use crate::common::*;
use gradient_connector_kit::Source;
use serde_json::Value;

/// The server's connection string, or None (skipped) outside CI.
fn server() -> Option<String> {
    match std::env::var("GRADIENT_CONNECTOR_TEST_PG") {
        Ok(c) if !c.is_empty() => Some(c),
        _ if std::env::var_os("CI").is_some() => {
            panic!("GRADIENT_CONNECTOR_TEST_PG is not set: .ci/run starts PostgreSQL with .ci/services")
        }
        _ => {
            eprintln!("skipped: no PostgreSQL (run `eval \"$(.ci/services)\"` first)");
            None
        }
    }
}

/// Runs `sql` (several statements) on the database of `conn`.
fn exec(conn: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{conn}: {e}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
    });
}

/// A fresh database on the server: its connection string.
fn fresh_db(server: &str) -> String {
    let name = format!("gc_test_{}", fastrand_u32());
    exec(server, &format!("CREATE DATABASE {name}"));
    server.replace("dbname=postgres", &format!("dbname={name}"))
}

/// The README's worked example: a vendor's typical schema.
const SCHEMA: &str = "
CREATE TABLE msps (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customers (id text PRIMARY KEY, msp_id text NOT NULL REFERENCES msps, name text NOT NULL,
                        edr_enabled boolean NOT NULL, mail_enabled boolean NOT NULL);
CREATE TABLE users (id text PRIMARY KEY, customer_id text NOT NULL REFERENCES customers, protected boolean NOT NULL);
CREATE TABLE devices (id text PRIMARY KEY, customer_id text NOT NULL REFERENCES customers, protected boolean NOT NULL);
INSERT INTO msps VALUES ('msp-a', 'Acme IT');
INSERT INTO customers VALUES ('c-1', 'msp-a', 'Contoso <Ltd>', true, true), ('c-2', 'msp-a', 'Fabrikam', true, false);
INSERT INTO users SELECT 'u-' || n, CASE WHEN n <= 3 THEN 'c-1' ELSE 'c-2' END, true FROM generate_series(1, 5) n;
INSERT INTO devices SELECT 'd-' || n, 'c-1', n <> 2 FROM generate_series(1, 4) n;
";

/// The one statement of the README's example (also in `docs/inventory.sql`).
const QUERY: &str = include_str!("../../docs/inventory.sql");

/// An environment whose one source is `postgres` on `conn` with `query`, in `mode`.
fn env_for(conn: &str, query: &str, mode: &str, timeout: Option<u64>) -> SimEnv {
    let dir = tempfile::tempdir().unwrap().keep();
    let url = dir.join("db-url");
    let sql = dir.join("inventory.sql");
    std::fs::write(&url, format!("{conn} password=SeCrEt-Pg-9x\n")).unwrap();
    std::fs::write(&sql, query).unwrap();
    let mut source = Source::postgres("product-db", &url, &sql, mode);
    if let Some(t) = timeout {
        source = source.timeout_secs(t);
    }
    let e = SimEnv::with_config(|c| c.source(source));
    e.sim.add_msp("msp-a", "Acme IT", "key-a");
    e
}

fn pull(e: &SimEnv) -> (i32, Value, String) {
    let out = e.run(&["source", "pull", "--json"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let listed = e.run(&["source", "list", "--json"]);
    let v: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    (code(&out), v[0].clone(), text)
}

#[test]
fn the_readme_example_pulls_a_typical_schema_as_a_snapshot_and_feeds_the_run() {
    let Some(server) = server() else { return };
    let conn = fresh_db(&server);
    exec(&conn, SCHEMA);
    let e = env_for(&conn, QUERY, "snapshot", None);
    let (code_, source, text) = pull(&e);
    assert_eq!(code_, 0, "{text}");
    assert_eq!(source["outcome"], "ok", "{source}");
    assert!(
        !text.contains("SeCrEt-Pg-9x"),
        "the URL's password was shown: {text}"
    );
    e.add_token("msp-a", "key-a", 0);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let snap = e.sim.snapshot();
    let org = snap.org("msp-a").unwrap();
    let edr = snap.service_id("Endpoint Security").unwrap().to_string();
    let mail = snap.service_id("Email Security").unwrap().to_string();
    assert_eq!(org.count("c-1", &edr), Some(3.0), "d-2 is not protected");
    assert_eq!(org.count("c-1", &mail), Some(3.0));
    assert_eq!(org.count("c-2", &mail), None, "mail is disabled for c-2");
    assert_eq!(org.account("c-1").unwrap().name, "Contoso <Ltd>");
    // The vendor removes a user: the next run pulls the snapshot and pushes the change.
    exec(&conn, "DELETE FROM users WHERE id = 'u-1'");
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        e.sim.snapshot().org("msp-a").unwrap().count("c-1", &mail),
        Some(2.0)
    );
}

#[test]
fn a_records_query_applies_and_errors_or_a_dropped_connection_apply_nothing() {
    let Some(server) = server() else { return };
    let conn = fresh_db(&server);
    // Records as text, in order.
    let records = "SELECT r AS record FROM (VALUES (1, '{\"type\":\"channel\",\"id\":\"msp-a\",\"name\":\"Acme\"}'),
                   (2, '{\"type\":\"workspace\",\"id\":\"w-1\",\"channel\":\"msp-a\",\"name\":\"W\"}')) v(k, r) ORDER BY k";
    let e = env_for(&conn, records, "records", None);
    let (c, source, text) = pull(&e);
    assert_eq!(c, 0, "{text}");
    assert_eq!(source["records"], 2, "{source}");
    assert_eq!(e.store().channel_ids().unwrap(), ["msp-a"]);

    let many = |tail: &str| {
        format!(
            "SELECT CASE WHEN n = 5000 THEN {tail} ELSE json_build_object('type','channel','id','c-'||n,'name','C')::text END AS record
             FROM generate_series(1, 10000) n"
        )
    };
    let cases = [
        (
            "SELECT (1/0)::text AS record".to_string(),
            "division by zero",
        ),
        // An error after thousands of rows were streamed.
        (many("(1/(n-5000))::text"), "division by zero"),
        // The server drops the connection mid-stream.
        (
            many("(SELECT NULL::text FROM pg_terminate_backend(pg_backend_pid()))"),
            "PostgreSQL",
        ),
        ("SELECT 1 AS other".to_string(), "column `record`"),
    ];
    for (query, why) in cases {
        let e = env_for(&conn, &query, "records", None);
        let (c, source, text) = pull(&e);
        assert_eq!(c, 75, "{query}: {text}");
        assert_eq!(source["outcome"], "failed");
        let message = source["message"].as_str().unwrap();
        assert!(message.contains(why), "{query}: {message}");
        assert!(
            e.store().channel_ids().unwrap().is_empty(),
            "{query}: something was applied"
        );
    }
}

#[test]
fn a_statement_over_timeout_secs_is_cancelled_by_the_server() {
    let Some(server) = server() else { return };
    let conn = fresh_db(&server);
    let query = "SELECT json_build_object('type','channel','id','c','name','C')::text AS record FROM pg_sleep(30)";
    let e = env_for(&conn, query, "records", Some(1));
    let started = std::time::Instant::now();
    let (c, source, text) = pull(&e);
    assert_eq!(c, 75, "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let message = source["message"].as_str().unwrap();
    assert!(message.contains("statement timeout"), "{message}");
}

#[test]
fn a_url_that_asks_for_tls_is_refused_by_a_server_without_it() {
    // A server that answers PostgreSQL's SSLRequest with `N` (no TLS), on 127.0.0.1.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        s.read_exact(&mut request).unwrap();
        s.write_all(b"N").unwrap();
        request
    });
    let e = env_for(
        &format!("host=127.0.0.1 port={port} user=gc dbname=x sslmode=require"),
        "SELECT 1 AS record",
        "records",
        Some(5),
    );
    let (c, source, text) = pull(&e);
    assert_eq!(c, 75, "{text}");
    // The SSLRequest code: 80877103.
    assert_eq!(asked.join().unwrap(), [0, 0, 0, 8, 4, 210, 22, 47]);
    let message = source["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("tls"), "{message}");
    assert!(!text.contains("SeCrEt-Pg-9x"), "{text}");
}

#[test]
#[ignore = "long: a million rows (cargo test --test it -- --ignored)"]
fn a_million_rows_stream_in_bounded_memory() {
    let Some(server) = server() else { return };
    let conn = fresh_db(&server);
    exec(
        &conn,
        "CREATE TABLE inv AS
           SELECT 0 AS k, json_build_object('type','channel','id','msp-a','name','A') AS record
           UNION ALL SELECT 1, json_build_object('type','workspace','id','w-'||w,'channel','msp-a','name','W'||w) FROM generate_series(1, 1000) w
           UNION ALL SELECT 2, json_build_object('type','device','workspace','w-'||(n % 1000 + 1),'id','d-'||n,'protected',true) FROM generate_series(1, 998999) n;",
    );
    let e = env_for(
        &conn,
        "SELECT record FROM inv ORDER BY k",
        "records",
        Some(600),
    );
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(BIN)
        .args(["--config", e.env.config.to_str().unwrap(), "source", "pull"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "1,000,000 rows pulled in {secs:.1} s ({:.0} rows/s), peak RSS {} MB",
        1_000_000.0 / secs,
        peak_kb / 1024
    );
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} kB");
}
