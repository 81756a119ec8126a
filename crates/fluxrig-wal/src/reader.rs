//! Reading the log back, from any LSN, through closed segments and the
//! open one: through a live [`crate::Wal`] handle, or straight from a
//! directory without opening (or locking) it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{Result, WalError};
use crate::format::{
    self, ControlKind, FileName, Frame, Hash, Lsn, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::scan::Cursor;
use crate::storage::{FsStorage, Storage};
use crate::wal::{Progress, Record, Shared};

/// An iterator over records, in LSN order, from a given LSN. Every record's
/// CRC and hash-chain link is checked as it is read.
///
/// - From a live WAL ([`crate::Wal::read_from`]) it ends (returns `None`) at
///   the last acknowledged record.
/// - From a directory ([`WalReader::open`]) it ends where the complete
///   records end: a record being written (or a torn tail) in the last
///   segment ends it quietly; damage anywhere else is an error.
///
/// Either way the log may grow: calling `next` again later yields the
/// records added since.
#[derive(Debug)]
pub struct WalReader {
    source: Source,
    next: Lsn,
    segment: Option<SegmentReader>,
}

#[derive(Debug)]
enum Source {
    Live {
        shared: Arc<Shared>,
        progress: watch::Receiver<Progress>,
    },
    Dir {
        storage: Arc<dyn Storage>,
        /// Segment numbers and first LSNs found when the reader was made.
        segments: Vec<(u64, Lsn)>,
    },
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
            source: Source::Live { shared, progress },
            next: from,
            segment: None,
        }
    }

    /// Reads the WAL in `dir` from `from` on, without opening it: no lock
    /// is taken and nothing is written, so it works beside a running Rack
    /// (`fluxrig audit`). Files that are not segments are ignored.
    pub fn open(dir: &Path, from: Lsn) -> Result<WalReader> {
        if !dir.is_dir() {
            return Err(WalError::io(
                "open",
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let storage = FsStorage::new(dir).map_err(|e| WalError::io("open", dir, e))?;
        WalReader::open_storage(Arc::new(storage), from)
    }

    /// [`WalReader::open`] over any storage.
    pub fn open_storage(storage: Arc<dyn Storage>, from: Lsn) -> Result<WalReader> {
        let dir = storage.dir().to_path_buf();
        let names = storage.list().map_err(|e| WalError::io("list", &dir, e))?;
        let mut numbers: Vec<u64> = names
            .iter()
            .filter_map(|n| match format::parse_file_name(n) {
                Some(FileName::Segment(n)) => Some(n),
                _ => None,
            })
            .collect();
        numbers.sort_unstable();
        let mut segments = Vec::with_capacity(numbers.len());
        for n in numbers {
            let header = read_header(&*storage, n)?.1;
            segments.push((n, header.first_lsn));
        }
        let first = segments.first().map_or(Lsn::FIRST, |s| s.1);
        if from < first {
            return Err(WalError::LsnOutOfRange {
                lsn: from,
                first,
                next: first,
            });
        }
        Ok(WalReader {
            source: Source::Dir { storage, segments },
            next: from,
            segment: None,
        })
    }

    /// The LSN of the next record this reader returns.
    pub fn position(&self) -> Lsn {
        self.next
    }

    fn storage(&self) -> &dyn Storage {
        match &self.source {
            Source::Live { shared, .. } => &*shared.storage,
            Source::Dir { storage, .. } => &**storage,
        }
    }

    fn open_segment(&self, number: u64) -> Result<SegmentReader> {
        let (cursor, header) = read_header(self.storage(), number)?;
        Ok(SegmentReader {
            number,
            path: self.storage().dir().join(format::segment_name(number)),
            cursor,
            offset: SEGMENT_HEADER_LEN as u64,
            lsn: header.first_lsn,
            head: header.prev_hash,
        })
    }

    /// The segment that holds `lsn`.
    fn segment_for(&self, lsn: Lsn) -> Result<u64> {
        let segments: Vec<(u64, Lsn)> = match &self.source {
            Source::Live { shared, .. } => shared
                .segments_snapshot()
                .iter()
                .map(|s| (s.number, s.first_lsn))
                .collect(),
            Source::Dir { segments, .. } => segments.clone(),
        };
        let found = segments.iter().rev().find(|s| s.1 <= lsn).map(|s| s.0);
        found.ok_or_else(|| WalError::LsnOutOfRange {
            lsn,
            first: segments.first().map_or(Lsn::FIRST, |s| s.1),
            next: lsn,
        })
    }

    /// Whether a segment after `number` exists (then `number` is not the
    /// last one, and a bad frame in it is damage, not a tail).
    fn has_successor(&self, number: u64) -> bool {
        self.storage()
            .open(&format::segment_name(number + 1))
            .is_ok()
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if let Source::Live { progress, .. } = &mut self.source
                && self.next >= progress.borrow_and_update().acked
            {
                return Ok(None);
            }
            if self.segment.is_none() {
                let number = self.segment_for(self.next)?;
                self.segment = Some(self.open_segment(number)?);
            }
            let live = matches!(self.source, Source::Live { .. });
            let Some(seg) = self.segment.as_mut() else {
                continue;
            };
            let mut parsed = seg
                .cursor
                .frame(seg.offset)
                .map_err(|e| WalError::io("read", &seg.path, e))?;
            if parsed.is_err() {
                // The buffer may hold bytes read while the writer was still
                // writing them: read again before judging.
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
                Err(e) => {
                    let number = seg.number;
                    let err = corrupt(e.to_string());
                    // Reading a directory, the end of the last segment is
                    // the end of the log for now (a record being written,
                    // or a torn tail the next open will cut).
                    if !live && !self.has_successor(number) {
                        return Ok(None);
                    }
                    return Err(err);
                }
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
                        let (number, head, lsn) = (c.number, seg.head, seg.lsn);
                        let next = self.open_segment(number)?;
                        if next.lsn != lsn || next.head != head {
                            return Err(WalError::Corrupt {
                                path: next.path,
                                offset: 0,
                                reason: "segment does not continue the previous one's chain".into(),
                            });
                        }
                        self.segment = Some(next);
                    } else if c.kind == ControlKind::Close && !live {
                        // A cleanly closed log ends here (until reopened).
                        return Ok(None);
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

/// Opens segment `number` and decodes its header.
fn read_header(storage: &dyn Storage, number: u64) -> Result<(Cursor, SegmentHeader)> {
    let name = format::segment_name(number);
    let path = storage.dir().join(&name);
    let file = storage
        .open(&name)
        .map_err(|e| WalError::io("open", &path, e))?;
    let mut cursor = Cursor::new(file);
    let bytes = cursor
        .bytes(0, SEGMENT_HEADER_LEN)
        .map_err(|e| WalError::io("read", &path, e))?;
    let header = SegmentHeader::decode(bytes).map_err(|e| WalError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: e.to_string(),
    })?;
    Ok((cursor, header))
}

impl Iterator for WalReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        self.step().transpose()
    }
}
