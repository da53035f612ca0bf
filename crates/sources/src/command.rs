//! The `command` source: a program (argv, no shell) that prints JSON Lines on stdout. Its stdout
//! is streamed to the import as it comes; each stderr line is logged (escaped); it is killed when
//! the pull's time is up (the runtime drops the child with `kill_on_drop`); a non-zero exit applies
//! nothing.

use std::process::Stdio;

use gradient_connector_domain::domain::escape;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc::Sender;

use super::{Piece, PullError};

/// Bytes read from stdout at a time.
const CHUNK: usize = 64 * 1024;

/// Runs `argv` and sends its stdout; the verdict is its exit status.
pub(crate) async fn produce(
    source: &str,
    argv: &[String],
    pieces: &Sender<Piece>,
) -> Result<(), PullError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PullError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stderr = child.stderr.take().map(|e| {
        let source = source.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(e).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(source = %escape(&source), "source stderr: {}", escape(&line));
            }
        })
    });
    let Some(mut stdout) = child.stdout.take() else {
        return Err(PullError::Read {
            program,
            source: std::io::Error::other("no stdout"),
        });
    };
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        let n = (&mut stdout)
            .take(CHUNK as u64)
            .read_to_end(&mut chunk)
            .await
            .map_err(|source| PullError::Read {
                program: program.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if pieces.send(Piece::Data(chunk)).await.is_err() {
            // The import stopped reading (a bad line): its error says why; the child is killed
            // when it is dropped.
            return Ok(());
        }
    }
    let status = child.wait().await.map_err(|source| PullError::Read {
        program: program.clone(),
        source,
    })?;
    if let Some(task) = stderr {
        let _ = task.await;
    }
    if status.success() {
        Ok(())
    } else {
        Err(PullError::Exit { program, status })
    }
}
