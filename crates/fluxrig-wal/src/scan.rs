//! Reading segments back: the frame cursor, the segment scanner, and the
//! directory scan shared by recovery (`Wal::open`) and [`verify`].
//!
//! The scan never changes anything; it reports what it found and
//! `Wal::open` decides what to repair (design page, "Recovery").

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Result, WalError};
use crate::format::{
    self, CLOSE_MARKER, ControlFrame, ControlKind, FORMAT_MAX_BODY, FileName, Frame, FrameError,
    Hash, HeaderError, Lsn, RECORD_HEADER_LEN, SEAL_MARKER, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::storage::{FsStorage, Storage, StorageFile, read_full_at};

const CHUNK: usize = 256 << 10;

/// Buffered positional reads over one segment file.
#[derive(Debug)]
pub(crate) struct Cursor {
    file: Box<dyn StorageFile>,
    buf: Vec<u8>,
    buf_start: u64,
    /// The last fill reached the end of the file: the buffer holds every
    /// byte from `buf_start` on (as of that read).
    at_eof: bool,
    /// Bytes to read on the next fill: starts small (most segments opened
    /// for a header or a short tail) and doubles up to `CHUNK`.
    chunk: usize,
}

impl Cursor {
    pub(crate) fn new(file: Box<dyn StorageFile>) -> Cursor {
        Cursor {
            file,
            buf: Vec::new(),
            buf_start: 0,
            at_eof: false,
            chunk: 8 << 10,
        }
    }

    /// The bytes from `offset` on: at least `n` of them unless the file ends
    /// sooner (then all that remain, as of the last read: a file that grows
    /// needs [`Cursor::invalidate`] to show its new bytes).
    pub(crate) fn bytes(&mut self, offset: u64, n: usize) -> io::Result<&[u8]> {
        let end = self.buf_start + self.buf.len() as u64;
        let covered = offset >= self.buf_start
            && (offset + n as u64 <= end || (self.at_eof && offset <= end));
        if !covered {
            let want = n.max(self.chunk);
            self.chunk = (self.chunk * 2).min(CHUNK);
            self.buf.resize(want, 0);
            let got = read_full_at(&*self.file, &mut self.buf, offset)?;
            self.buf.truncate(got);
            self.buf_start = offset;
            self.at_eof = got < want;
        }
        #[allow(clippy::cast_possible_truncation)] // within the buffer, which is in memory
        let at = (offset - self.buf_start) as usize;
        Ok(&self.buf[at.min(self.buf.len())..])
    }

    /// Parses the frame at `offset`.
    pub(crate) fn frame(
        &mut self,
        offset: u64,
    ) -> io::Result<Result<(Frame<'_>, usize), FrameError>> {
        let len = match format::declared_frame_len(self.bytes(offset, RECORD_HEADER_LEN)?) {
            Ok(len) => len,
            Err(e) => return Ok(Err(e)),
        };
        let b = self.bytes(offset, len)?;
        Ok(format::parse_frame(b))
    }

    /// Forgets the buffered bytes (the file may have grown since).
    pub(crate) fn invalidate(&mut self) {
        self.buf.clear();
        self.buf_start = 0;
        self.at_eof = false;
    }

    /// The file's length now.
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        self.file.size()
    }

    pub(crate) fn into_file(self) -> Box<dyn StorageFile> {
        self.file
    }
}

/// How a segment's frames end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The file ends right after the last record.
    Eof,
    /// A seal frame follows the last record and ends the file.
    Sealed,
    /// A clean-close frame follows the last record and ends the file.
    Closed,
    /// The bytes at `offset` are not the frame that should be there.
    Bad {
        offset: u64,
        reason: String,
        /// The frame is unreadable (cut short, impossible length, bad CRC),
        /// which is what an interrupted write leaves. A frame that reads
        /// fine but does not fit the chain is never a torn write.
        unreadable: bool,
    },
}

/// What one segment holds.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    pub(crate) records: u64,
    /// The LSN after the last valid record.
    pub(crate) next_lsn: Lsn,
    /// The hash of the last valid record (or the header's `prev_hash`).
    pub(crate) chain_head: Hash,
    /// Offset just past the last valid record.
    pub(crate) valid_end: u64,
    pub(crate) file_len: u64,
    pub(crate) end: ScanEnd,
}

/// Reads segment `number`, checking its header against `expected` (the
/// previous segment's next LSN and chain head) when given.
pub(crate) fn scan_segment(
    storage: &dyn Storage,
    number: u64,
    expected: Option<(Lsn, Hash)>,
) -> Result<(SegmentScan, Cursor)> {
    let name = format::segment_name(number);
    let path = storage.dir().join(&name);
    let file = storage
        .open(&name)
        .map_err(|e| WalError::io("open", &path, e))?;
    let mut cursor = Cursor::new(file);
    let file_len = cursor
        .file_len()
        .map_err(|e| WalError::io("stat", &path, e))?;
    let head = cursor
        .bytes(0, SEGMENT_HEADER_LEN)
        .map_err(|e| WalError::io("read", &path, e))?;
    let header = SegmentHeader::decode(head).map_err(|e| match e {
        HeaderError::Foreign => WalError::ForeignFile {
            path: path.clone(),
            reason: e.to_string(),
        },
        _ => WalError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: e.to_string(),
        },
    })?;
    let corrupt_header = |reason: String| WalError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason,
    };
    if header.number != number {
        return Err(corrupt_header(format!(
            "header says segment {} but the file name says {number}",
            header.number
        )));
    }
    if let Some((lsn, hash)) = expected {
        if header.first_lsn != lsn {
            return Err(corrupt_header(format!(
                "segment starts at LSN {} but the previous segment ends before LSN {lsn}",
                header.first_lsn
            )));
        }
        if header.prev_hash != hash {
            return Err(corrupt_header(
                "hash chain broken: the header's previous-record hash is not the hash of the previous segment's last record".into(),
            ));
        }
    }
    let mut scan = SegmentScan {
        name,
        path,
        records: 0,
        next_lsn: header.first_lsn,
        chain_head: header.prev_hash,
        valid_end: SEGMENT_HEADER_LEN as u64,
        file_len,
        end: ScanEnd::Eof,
        header,
    };
    let mut offset = SEGMENT_HEADER_LEN as u64;
    loop {
        if offset >= file_len {
            break;
        }
        let parsed = cursor
            .frame(offset)
            .map_err(|e| WalError::io("read", &scan.path, e))?;
        let bad = |reason: String, unreadable: bool| ScanEnd::Bad {
            offset,
            reason,
            unreadable,
        };
        match parsed {
            Err(e) => {
                scan.end = bad(e.to_string(), true);
                break;
            }
            Ok((Frame::Record(r), len)) => {
                if r.lsn != scan.next_lsn {
                    scan.end = bad(
                        format!(
                            "expected the record with LSN {}, found LSN {}",
                            scan.next_lsn, r.lsn
                        ),
                        false,
                    );
                    break;
                }
                if r.prev_hash != scan.chain_head {
                    scan.end = bad(
                        format!(
                            "hash chain broken at LSN {}: its previous-record hash does not match",
                            r.lsn
                        ),
                        false,
                    );
                    break;
                }
                scan.chain_head = r.hash();
                scan.next_lsn = scan.next_lsn.next();
                scan.records += 1;
                offset += len as u64;
                scan.valid_end = offset;
            }
            Ok((Frame::Control(c), len)) => {
                let (want_number, end) = match c.kind {
                    ControlKind::Seal => (number + 1, ScanEnd::Sealed),
                    ControlKind::Close => (number, ScanEnd::Closed),
                };
                if c.number != want_number
                    || c.next_lsn != scan.next_lsn
                    || c.chain_head != scan.chain_head
                {
                    scan.end = bad(
                        format!("{:?} frame does not match the records before it", c.kind)
                            .to_lowercase(),
                        false,
                    );
                    break;
                }
                let after = offset + len as u64;
                scan.end = if after == file_len {
                    end
                } else {
                    ScanEnd::Bad {
                        offset: after,
                        reason: format!("{} bytes after the {:?} frame", file_len - after, c.kind)
                            .to_lowercase(),
                        unreadable: false,
                    }
                };
                break;
            }
        }
    }
    Ok((scan, cursor))
}

/// Looks past an unreadable frame at `bad_offset` in the last segment for
/// any later frame that proves the bad one had been synced: a record whose
/// durable-LSN watermark, or a control frame whose next LSN, is above
/// `bad_lsn`. Returns that frame's offset.
pub(crate) fn synced_beyond(
    cursor: &mut Cursor,
    bad_offset: u64,
    bad_lsn: Lsn,
    file_len: u64,
) -> io::Result<Option<u64>> {
    let mut pos = bad_offset + 1;
    while pos + 4 <= file_len {
        let remaining = file_len - pos;
        let b = cursor.bytes(pos, RECORD_HEADER_LEN)?;
        let marker = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let plausible = if marker == SEAL_MARKER || marker == CLOSE_MARKER {
            true
        } else if b.len() >= RECORD_HEADER_LEN && marker <= FORMAT_MAX_BODY {
            // A later record has a later LSN, and no more of them fit than
            // the bytes that remain: this cheap filter skips almost every
            // offset before the CRC is computed.
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[9..17]);
            let lsn = u64::from_le_bytes(l);
            lsn >= bad_lsn.0 && lsn <= bad_lsn.0 + remaining / RECORD_HEADER_LEN as u64 + 1
        } else {
            false
        };
        if plausible {
            let watermark = match cursor.frame(pos)? {
                Ok((Frame::Record(r), _)) => Some(r.durable_lsn),
                Ok((Frame::Control(c), _)) => Some(c.next_lsn),
                Err(_) => None,
            };
            if watermark.is_some_and(|w| w > bad_lsn) {
                return Ok(Some(pos));
            }
        }
        pos += 1;
    }
    Ok(None)
}

/// The WAL directory as found on disk.
#[derive(Debug)]
pub(crate) struct DirScan {
    /// Every segment, oldest first (empty for a new log).
    pub(crate) segments: Vec<SegmentScan>,
    /// The cursor of the last segment (its file stays open for the writer).
    pub(crate) last_cursor: Option<Cursor>,
    /// A segment left half-created by a crash during rotation.
    pub(crate) temp_segment: Option<String>,
}

/// Lists and checks every segment. Everything that is not a clean log is
/// an error, except what a crash can leave at the end of the last segment:
/// that is left in `ScanEnd` for the caller to judge.
pub(crate) fn scan_dir(storage: &dyn Storage) -> Result<DirScan> {
    let dir = storage.dir().to_path_buf();
    let names = storage.list().map_err(|e| WalError::io("list", &dir, e))?;
    let mut numbers = Vec::new();
    let mut temps = Vec::new();
    for name in names {
        match format::parse_file_name(&name) {
            Some(FileName::Segment(n)) => numbers.push(n),
            Some(FileName::TempSegment(n)) => temps.push((n, name)),
            Some(FileName::Lock) => {}
            None => {
                return Err(WalError::ForeignFile {
                    path: dir.join(name),
                    reason: "unexpected file name in a WAL directory".into(),
                });
            }
        }
    }
    numbers.sort_unstable();
    for w in numbers.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(WalError::MissingSegment {
                path: dir.join(format::segment_name(w[0] + 1)),
                reason: format!("segments {} and {} exist around it", w[0], w[1]),
            });
        }
    }
    let next_number = numbers.last().map_or(0, |n| n + 1);
    let mut temp_segment = None;
    for (n, name) in temps {
        if n != next_number || temp_segment.is_some() {
            return Err(WalError::ForeignFile {
                path: dir.join(name),
                reason: format!("a temporary segment other than the next one ({next_number})"),
            });
        }
        temp_segment = Some(name);
    }
    let mut segments: Vec<SegmentScan> = Vec::with_capacity(numbers.len());
    let mut last_cursor = None;
    for (i, &n) in numbers.iter().enumerate() {
        let expected = segments.last().map(|s| (s.next_lsn, s.chain_head));
        let (scan, cursor) = scan_segment(storage, n, expected)?;
        let is_last = i + 1 == numbers.len();
        if is_last {
            last_cursor = Some(cursor);
        } else {
            check_closed_segment(&scan, storage, numbers[i + 1])?;
        }
        segments.push(scan);
    }
    Ok(DirScan {
        segments,
        last_cursor,
        temp_segment,
    })
}

/// A segment followed by another must hold a clean run of records. Its seal
/// may be missing or cut short only when the crash happened between
/// creating the next segment and sealing this one: the next segment then
/// holds no record yet, and only a seal's worth of bytes can be bad.
fn check_closed_segment(scan: &SegmentScan, storage: &dyn Storage, next: u64) -> Result<()> {
    match &scan.end {
        ScanEnd::Eof | ScanEnd::Sealed | ScanEnd::Closed => Ok(()),
        ScanEnd::Bad {
            offset,
            reason,
            unreadable,
        } => {
            let torn_seal = *unreadable
                && *offset == scan.valid_end
                && scan.file_len - scan.valid_end <= format::CONTROL_FRAME_LEN as u64
                && next_is_empty(storage, next)?;
            if torn_seal {
                Ok(())
            } else {
                Err(WalError::Corrupt {
                    path: scan.path.clone(),
                    offset: *offset,
                    reason: reason.clone(),
                })
            }
        }
    }
}

fn next_is_empty(storage: &dyn Storage, number: u64) -> Result<bool> {
    let name = format::segment_name(number);
    let file = storage
        .open(&name)
        .map_err(|e| WalError::io("open", storage.dir().join(&name), e))?;
    let len = file
        .size()
        .map_err(|e| WalError::io("stat", storage.dir().join(&name), e))?;
    Ok(len <= SEGMENT_HEADER_LEN as u64)
}

/// Whether a segment still needs its seal written (it is followed by
/// another but does not end with a seal frame).
pub(crate) fn needs_seal(scan: &SegmentScan) -> bool {
    scan.end != ScanEnd::Sealed
}

/// The seal frame that closes `scan`.
pub(crate) fn seal_for(scan: &SegmentScan) -> ControlFrame {
    ControlFrame {
        kind: ControlKind::Seal,
        number: scan.header.number + 1,
        next_lsn: scan.next_lsn,
        chain_head: scan.chain_head,
    }
}

/// What [`verify`] found in a sound log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Records checked (CRC and chain).
    pub records: u64,
    /// The first LSN on disk.
    pub first_lsn: Lsn,
    /// The LSN the next record would get.
    pub next_lsn: Lsn,
    /// The hash of the last record: the head of the chain.
    pub chain_head: Hash,
    /// The log ends with a clean-close frame (the WAL was closed, not killed).
    pub clean_close: bool,
}

/// Checks a WAL directory without changing it: every segment header, every
/// record's CRC, LSN and hash-chain link, the seals between segments and the
/// absence of gaps. Returns the first problem as an error naming the
/// segment file and byte offset.
///
/// This is strict: bytes a crash left at the end of the last segment (which
/// `Wal::open` would truncate) are reported too. Run it on a closed WAL, or
/// expect the tail of a running one to be reported while it is being written.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    if !dir.is_dir() {
        return Err(WalError::io(
            "open",
            dir,
            io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let storage = FsStorage::new(dir).map_err(|e| WalError::io("open", dir, e))?;
    verify_storage(&storage)
}

/// [`verify`] over any storage (the fault-injecting one in tests).
pub fn verify_storage(storage: &dyn Storage) -> Result<VerifyReport> {
    let scan = scan_dir(storage)?;
    if let Some(t) = &scan.temp_segment {
        return Err(WalError::Corrupt {
            path: storage.dir().join(t),
            offset: 0,
            reason: "half-created segment left by an interrupted rotation".into(),
        });
    }
    let mut report = VerifyReport {
        segments: scan.segments.len(),
        records: 0,
        first_lsn: Lsn::FIRST,
        next_lsn: Lsn::FIRST,
        chain_head: format::GENESIS_HASH,
        clean_close: false,
    };
    let n = scan.segments.len();
    for (i, s) in scan.segments.iter().enumerate() {
        if i == 0 {
            report.first_lsn = s.header.first_lsn;
        }
        report.records += s.records;
        report.next_lsn = s.next_lsn;
        report.chain_head = s.chain_head;
        let is_last = i + 1 == n;
        match &s.end {
            ScanEnd::Bad { offset, reason, .. } => {
                return Err(WalError::Corrupt {
                    path: s.path.clone(),
                    offset: *offset,
                    reason: reason.clone(),
                });
            }
            ScanEnd::Sealed if is_last => return Err(missing_after(storage, s)),
            ScanEnd::Eof | ScanEnd::Closed if !is_last => {
                return Err(WalError::Corrupt {
                    path: s.path.clone(),
                    offset: s.valid_end,
                    reason: "segment is followed by another but has no seal".into(),
                });
            }
            ScanEnd::Closed => report.clean_close = true,
            _ => {}
        }
    }
    Ok(report)
}

pub(crate) fn missing_after(storage: &dyn Storage, s: &SegmentScan) -> WalError {
    WalError::MissingSegment {
        path: storage
            .dir()
            .join(format::segment_name(s.header.number + 1)),
        reason: format!(
            "segment {} is sealed, so it must have a successor",
            s.header.number
        ),
    }
}
