//! Reading the log back, from any LSN, through closed segments and the
//! open one.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{Result, WalError};
use crate::format::{self, ControlKind, Frame, Hash, Lsn, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::scan::Cursor;
use crate::wal::{Progress, Record, Shared};

/// An iterator over acknowledged records, in LSN order, from a given LSN
/// (see [`crate::Wal::read_from`]). Every record's CRC and hash-chain link
/// is checked as it is read.
///
/// It ends (returns `None`) at the last acknowledged record; since the log
/// grows, calling `next` again later yields records acknowledged since.
#[derive(Debug)]
pub struct WalReader {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    next: Lsn,
    segment: Option<SegmentReader>,
}

#[derive(Debug)]
struct SegmentReader {
    number: u64,
    path: PathBuf,
    cursor: Cursor,
    offset: u64,
    lsn: Lsn,
    head: Hash,
}

impl WalReader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> WalReader {
        let progress = shared.progress.subscribe();
        WalReader {
            shared,
            progress,
            next: from,
            segment: None,
        }
    }

    /// The LSN of the next record this reader returns.
    pub fn position(&self) -> Lsn {
        self.next
    }

    fn open_segment(&self, number: u64) -> Result<SegmentReader> {
        let name = format::segment_name(number);
        let path = self.shared.storage.dir().join(&name);
        let file = self
            .shared
            .storage
            .open(&name)
            .map_err(|e| WalError::io("open", &path, e))?;
        let mut cursor = Cursor::new(file);
        let head = cursor
            .bytes(0, SEGMENT_HEADER_LEN)
            .map_err(|e| WalError::io("read", &path, e))?;
        let header = SegmentHeader::decode(head).map_err(|e| WalError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: e.to_string(),
        })?;
        Ok(SegmentReader {
            number,
            path,
            cursor,
            offset: SEGMENT_HEADER_LEN as u64,
            lsn: header.first_lsn,
            head: header.prev_hash,
        })
    }

    /// The segment that holds `lsn`.
    fn segment_for(&self, lsn: Lsn) -> Result<u64> {
        let segments = self.shared.segments_snapshot();
        let found = segments
            .iter()
            .rev()
            .find(|s| s.first_lsn <= lsn)
            .map(|s| s.number);
        found.ok_or_else(|| WalError::LsnOutOfRange {
            lsn,
            first: segments.first().map_or(Lsn::FIRST, |s| s.first_lsn),
            next: self.progress.borrow().written,
        })
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if self.next >= self.progress.borrow_and_update().acked {
                return Ok(None);
            }
            if self.segment.is_none() {
                let number = self.segment_for(self.next)?;
                self.segment = Some(self.open_segment(number)?);
            }
            let Some(seg) = self.segment.as_mut() else {
                continue;
            };
            let mut parsed = seg
                .cursor
                .frame(seg.offset)
                .map_err(|e| WalError::io("read", &seg.path, e))?;
            if parsed.is_err() {
                // The buffer may hold bytes read while the writer was still
                // writing them: read again before calling it damage.
                seg.cursor.invalidate();
                parsed = seg
                    .cursor
                    .frame(seg.offset)
                    .map_err(|e| WalError::io("read", &seg.path, e))?;
            }
            let corrupt = |reason: String| WalError::Corrupt {
                path: seg.path.clone(),
                offset: seg.offset,
                reason,
            };
            match parsed {
                Err(e) => return Err(corrupt(e.to_string())),
                Ok((Frame::Record(r), len)) => {
                    if r.lsn != seg.lsn {
                        return Err(corrupt(format!(
                            "expected the record with LSN {}, found LSN {}",
                            seg.lsn, r.lsn
                        )));
                    }
                    if r.prev_hash != seg.head {
                        return Err(corrupt(format!(
                            "hash chain broken at LSN {}: its previous-record hash does not match",
                            r.lsn
                        )));
                    }
                    seg.head = r.hash();
                    seg.offset += len as u64;
                    seg.lsn = seg.lsn.next();
                    if r.lsn < self.next {
                        continue;
                    }
                    let record = Record {
                        lsn: r.lsn,
                        kind: r.kind,
                        body: Bytes::copy_from_slice(r.body),
                    };
                    self.next = self.next.next();
                    return Ok(Some(record));
                }
                Ok((Frame::Control(c), _)) => {
                    if c.kind == ControlKind::Seal && c.number == seg.number + 1 {
                        let next = self.open_segment(c.number)?;
                        self.segment = Some(next);
                    } else {
                        return Err(corrupt(format!(
                            "unexpected {:?} frame before LSN {}",
                            c.kind, self.next
                        )));
                    }
                }
            }
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        self.step().transpose()
    }
}
