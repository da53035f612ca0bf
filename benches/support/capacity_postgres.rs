//! The capacity benchmark's PostgreSQL figure: a `postgres` pull source of 1,000,000 rows (one
//! channel, 1,000 workspaces, 998,999 devices, each a `json` record) pulled by `source pull` into
//! a fresh store — rows per second and the process's peak RSS. Runs when
//! `GRADIENT_CONNECTOR_TEST_PG` names a server (`eval "$(.ci/services)"`).

use super::*;

/// Runs `sql` on the database of `conn`.
fn exec(rt: &tokio::runtime::Runtime, conn: &str, sql: &str) {
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = driver.await;
    });
}

/// The figures, or None without a server.
pub(crate) fn measure_postgres(dir: &Path, rt: &tokio::runtime::Runtime) -> Option<Value> {
    let server = std::env::var("GRADIENT_CONNECTOR_TEST_PG").ok()?;
    let db = format!("gc_bench_{}", now_ms());
    exec(rt, &server, &format!("CREATE DATABASE {db}"));
    let conn = server.replace("dbname=postgres", &format!("dbname={db}"));
    exec(
        rt,
        &conn,
        "CREATE TABLE inv AS
           SELECT 0 AS k, json_build_object('type','channel','id','pg-msp','name','PG MSP') AS record
           UNION ALL SELECT 1, json_build_object('type','workspace','id','pw-'||w,'channel','pg-msp','name','W'||w) FROM generate_series(1, 1000) w
           UNION ALL SELECT 2, json_build_object('type','device','workspace','pw-'||(n % 1000 + 1),'id','pd-'||n,'protected',true) FROM generate_series(1, 998999) n;",
    );
    std::fs::write(dir.join("pg-url"), format!("{conn}\n")).unwrap();
    std::fs::write(dir.join("pg.sql"), "SELECT record FROM inv ORDER BY k").unwrap();
    let store = fresh(&dir.join("pg.db"));
    let cfg = write_config(dir, "http://127.0.0.1:9", &store, 90, 8);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl_file = {:?}\nquery_file = {:?}\nmode = \"records\"\ntimeout_secs = 600\n",
        dir.join("pg-url"),
        dir.join("pg.sql")
    ));
    std::fs::write(&cfg, text).unwrap();
    let (secs, peak, out) =
        run_measured(Command::new(BIN).args(["--config", cfg.to_str().unwrap(), "source", "pull"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = 1_000_000.0;
    println!(
        "postgres: 1,000,000 rows pulled in {secs:.2} s = {:.0} rows/s, peak RSS {peak} kB",
        rows / secs
    );
    exec(rt, &server, &format!("DROP DATABASE {db}"));
    Some(json!({"rows": 1_000_000, "secs": secs, "rows_per_sec": rows / secs, "peak_rss_kb": peak}))
}
