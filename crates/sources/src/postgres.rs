//! The `postgres` source: one SQL statement on the vendor's own PostgreSQL, whose rows each carry
//! one inventory record in the column `record` (json, jsonb or text). It runs in a read-only
//! transaction with `statement_timeout` set to the pull's limit, and its rows are streamed
//! (`query_raw`): memory does not grow with the result. TLS (rustls, the system's roots) when the
//! URL asks for it (`sslmode=require`; `prefer` tries it). The URL is a secret: it is never
//! logged, and no error carries it.

use std::time::Duration;

use futures::{pin_mut, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc::Sender;
use tokio_postgres::types::Type;

use super::{Piece, PullError};

/// Rows sent to the import in one piece.
const ROWS_PER_PIECE: usize = 256;

/// The TLS connector: rustls with the system's root certificates.
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// A PostgreSQL error as text that holds no part of the URL (tokio-postgres' messages name the
/// server's words and the failing step, never the connection string).
fn failure(e: &tokio_postgres::Error) -> PullError {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    };
    PullError::Postgres(text)
}

/// Connects, runs `query` read-only and sends each row's `record` as a line.
pub(crate) async fn produce(
    url: &SecretString,
    query: &str,
    timeout: Duration,
    pieces: &Sender<Piece>,
) -> Result<(), PullError> {
    let config: tokio_postgres::Config = url.expose_secret().parse().map_err(|_| {
        PullError::Postgres(
            "the URL in url_file is not a libpq connection string (postgresql://user@host/db?sslmode=require, or host=… dbname=…)".into(),
        )
    })?;
    let (client, connection) = config.connect(tls()).await.map_err(|e| failure(&e))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {}", failure(&e));
        }
    });
    let result = stream_rows(&client, query, timeout, pieces).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn stream_rows(
    client: &tokio_postgres::Client,
    query: &str,
    timeout: Duration,
    pieces: &Sender<Piece>,
) -> Result<(), PullError> {
    let ms = timeout.as_millis().max(1);
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}"
        ))
        .await
        .map_err(|e| failure(&e))?;
    let rows = client
        .query_raw(query, std::iter::empty::<&str>())
        .await
        .map_err(|e| failure(&e))?;
    pin_mut!(rows);
    let mut piece = Vec::with_capacity(64 * 1024);
    let mut in_piece = 0usize;
    while let Some(row) = rows.try_next().await.map_err(|e| failure(&e))? {
        let Some(column) = row.columns().iter().position(|c| c.name() == "record") else {
            return Err(PullError::Column("no column named `record`".into()));
        };
        let ty = row.columns()[column].type_().clone();
        let text = if ty == Type::JSON || ty == Type::JSONB {
            let v: Option<serde_json::Value> = row
                .try_get(column)
                .map_err(|e| PullError::Column(e.to_string()))?;
            v.map(|v| v.to_string())
        } else if ty == Type::TEXT || ty == Type::VARCHAR {
            row.try_get::<_, Option<String>>(column)
                .map_err(|e| PullError::Column(e.to_string()))?
        } else {
            return Err(PullError::Column(format!("`record` is of type {ty}")));
        };
        // A NULL record is an empty line: skipped, as blank lines are.
        if let Some(text) = text {
            piece.extend_from_slice(text.as_bytes());
        }
        piece.push(b'\n');
        in_piece += 1;
        if in_piece == ROWS_PER_PIECE {
            if pieces
                .send(Piece::Data(std::mem::take(&mut piece)))
                .await
                .is_err()
            {
                return Ok(());
            }
            in_piece = 0;
        }
    }
    if !piece.is_empty() && pieces.send(Piece::Data(piece)).await.is_err() {
        return Ok(());
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| failure(&e))?;
    Ok(())
}
