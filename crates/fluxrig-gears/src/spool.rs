//! A sink's pending buffer on disk: messages waiting for a destination that
//! is down, in order, bounded in bytes.
//!
//! One file, `<data>/pending/<gear>.spool`: records `[u32 LE length][CBOR
//! fluxMsg envelope]` appended at the end and read from a cursor. When the
//! reader catches up the file is emptied, so it never holds more than the
//! bound plus one message. The spool is an overflow buffer, not a system of
//! record: every message in it is also in the Rack's write-ahead log,
//! uncompleted, so after a restart the spool starts empty and the Rack's
//! replay delivers those messages again, in log order.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fluxrig_msg::FluxMsg;

/// The pending buffer of one sink.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    file: File,
    /// Where the next record is appended (the file's length).
    write_at: u64,
    /// Where the next record is read.
    read_at: u64,
    /// Messages in the spool.
    len: usize,
    max_bytes: u64,
}

impl Spool {
    /// Creates (or empties) the spool file.
    pub(crate) fn create(path: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            write_at: 0,
            read_at: 0,
            len: 0,
            max_bytes,
        })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Messages waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes waiting in the file (records not yet taken).
    pub(crate) fn bytes(&self) -> u64 {
        self.write_at.saturating_sub(self.read_at)
    }

    /// No room for another message: the sink stops taking input
    /// (back-pressure) until the destination drains it.
    pub(crate) fn is_full(&self) -> bool {
        self.len > 0 && self.write_at >= self.max_bytes
    }

    /// Appends a message.
    pub(crate) fn push(&mut self, msg: &FluxMsg) -> std::io::Result<()> {
        let body = msg.to_cbor();
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("message larger than 4 GiB"))?;
        let mut rec = Vec::with_capacity(4 + body.len());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&body);
        self.file.seek(SeekFrom::Start(self.write_at))?;
        self.file.write_all(&rec)?;
        self.write_at += rec.len() as u64;
        self.len += 1;
        Ok(())
    }

    /// Takes the oldest message; `None` when empty.
    pub(crate) fn pop(&mut self) -> std::io::Result<Option<FluxMsg>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.file.seek(SeekFrom::Start(self.read_at))?;
        let mut head = [0u8; 4];
        self.file.read_exact(&mut head)?;
        let len = u32::from_le_bytes(head) as usize;
        let mut body = vec![0u8; len];
        self.file.read_exact(&mut body)?;
        let msg = FluxMsg::from_cbor(&body).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("record at offset {}: {e}", self.read_at),
            )
        })?;
        self.read_at += 4 + len as u64;
        self.len -= 1;
        if self.len == 0 {
            // Caught up: start the file again.
            self.file.set_len(0)?;
            self.write_at = 0;
            self.read_at = 0;
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::{FluxId, Value};

    #[test]
    fn keeps_order_bounds_and_empties_the_file_when_drained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending/s.spool");
        let mut s = Spool::create(&path, 200).unwrap();
        let msg = |i| FluxMsg::new(FluxId::from_raw(i), Value::from("payload"));
        let mut pushed = 0;
        while !s.is_full() {
            pushed += 1;
            s.push(&msg(pushed)).unwrap();
        }
        assert!(pushed > 1);
        assert_eq!(s.len(), usize::try_from(pushed).unwrap());
        assert_eq!(s.pop().unwrap().unwrap().id, FluxId::from_raw(1));
        s.push(&msg(pushed + 1)).unwrap();
        for i in 2..=pushed + 1 {
            assert_eq!(s.pop().unwrap().unwrap().id, FluxId::from_raw(i));
        }
        assert!(s.pop().unwrap().is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // A new spool on the same file starts empty.
        s.push(&msg(9)).unwrap();
        let mut again = Spool::create(&path, 200).unwrap();
        assert!(again.pop().unwrap().is_none());
    }
}
