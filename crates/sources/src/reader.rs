//! The import's side of a pull: the producer's [`Piece`]s as one byte stream. The stream ends
//! only at [`Piece::Done`]; a [`Piece::Failed`], or a producer gone without a word, is a read error,
//! so the import fails and applies nothing.

use std::io::{self, Read};

use tokio::sync::mpsc::Receiver;

/// What a producer sends.
#[derive(Debug)]
pub enum Piece {
    /// Bytes of JSON Lines (whole lines or not).
    Data(Vec<u8>),
    /// Everything was sent and the source says it succeeded: the import may commit.
    Done,
    /// The source failed: the import must apply nothing.
    Failed(String),
}

/// Reads pieces in order (blocking: it runs on the store's writer thread, never on the runtime).
pub(crate) struct PieceReader {
    pieces: Receiver<Piece>,
    current: Vec<u8>,
    offset: usize,
    done: bool,
}

impl PieceReader {
    pub(crate) fn new(pieces: Receiver<Piece>) -> Self {
        PieceReader {
            pieces,
            current: Vec::new(),
            offset: 0,
            done: false,
        }
    }
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.offset < self.current.len() {
                let n = buf.len().min(self.current.len() - self.offset);
                buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
                self.offset += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.pieces.blocking_recv() {
                Some(Piece::Data(bytes)) => {
                    self.current = bytes;
                    self.offset = 0;
                }
                Some(Piece::Done) => self.done = true,
                Some(Piece::Failed(why)) => return Err(io::Error::other(why)),
                None => return Err(io::Error::other("the source stopped without finishing")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_ends_only_at_done_and_a_failure_is_an_error() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.try_send(Piece::Data(b"ab".to_vec())).unwrap();
        tx.try_send(Piece::Data(b"c\n".to_vec())).unwrap();
        tx.try_send(Piece::Done).unwrap();
        let mut text = String::new();
        PieceReader::new(rx).read_to_string(&mut text).unwrap();
        assert_eq!(text, "abc\n");

        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.try_send(Piece::Data(b"x\n".to_vec())).unwrap();
        tx.try_send(Piece::Failed("exit status 3".into())).unwrap();
        let err = PieceReader::new(rx)
            .read_to_string(&mut String::new())
            .unwrap_err();
        assert!(err.to_string().contains("exit status 3"));

        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.try_send(Piece::Data(b"x\n".to_vec())).unwrap();
        drop(tx);
        assert!(PieceReader::new(rx)
            .read_to_string(&mut String::new())
            .is_err());
    }
}
