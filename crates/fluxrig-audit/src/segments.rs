//! The segments of a WAL directory, read from their headers without opening
//! the WAL (the Rack may hold it): which are closed, their LSN ranges and
//! the chain heads between them.
//!
//! The header layout is `docs/design/wal.md` § "Segment header"; only the
//! fields the archive needs are decoded here, each header checked against
//! its CRC.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use fluxrig_wal::{Hash, Lsn, SEGMENT_HEADER_LEN};

use crate::error::AuditError;

const MAGIC: [u8; 8] = *b"FLXRWAL\0";

/// One segment file, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number (the file name's).
    pub number: u64,
    /// The file.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// The chain head before its first record (the previous segment's last
    /// record's hash).
    pub prev_head: Hash,
    /// For a closed segment (one followed by another): its last LSN and the
    /// chain head after it (from the next segment's header). `None` while
    /// it is the last, open one.
    pub closed: Option<Closed>,
}

/// The end of a closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// The first LSN of the next segment; this segment holds
    /// `first_lsn .. next_lsn`.
    pub next_lsn: Lsn,
    /// The hash of this segment's last record.
    pub head: Hash,
}

/// Lists the segments of `wal_dir`, oldest first. Files that are not
/// segments (the lock, a `.wal.tmp` being created) are ignored; segment
/// numbers must be consecutive and every header sound.
pub fn list(wal_dir: &Path) -> Result<Vec<Segment>, AuditError> {
    let entries = std::fs::read_dir(wal_dir).map_err(|e| AuditError::io("read", wal_dir, e))?;
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("read", wal_dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = stem.parse::<u64>()
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut out: Vec<Segment> = Vec::with_capacity(numbers.len());
    for n in numbers {
        let path = wal_dir.join(format!("{n:020}.wal"));
        let (first_lsn, prev_head) = read_header(&path, n)?;
        if let Some(prev) = out.last_mut() {
            if prev.number + 1 != n {
                return Err(AuditError::Wal(fluxrig_wal::WalError::MissingSegment {
                    path: wal_dir.join(format!("{:020}.wal", prev.number + 1)),
                    reason: "segment numbers must be consecutive".into(),
                }));
            }
            if first_lsn < prev.first_lsn {
                return Err(corrupt(&path, 24, "first LSN goes backwards"));
            }
            prev.closed = Some(Closed {
                next_lsn: first_lsn,
                head: prev_head,
            });
        }
        out.push(Segment {
            number: n,
            path,
            first_lsn,
            prev_head,
            closed: None,
        });
    }
    Ok(out)
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> AuditError {
    AuditError::Wal(fluxrig_wal::WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    })
}

fn read_header(path: &Path, number: u64) -> Result<(Lsn, Hash), AuditError> {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    let mut f = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    f.read_exact(&mut b)
        .map_err(|_| corrupt(path, 0, "segment header is truncated"))?;
    if b[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a fluxrig WAL segment (bad magic)"));
    }
    let crc = u32::from_le_bytes([b[76], b[77], b[78], b[79]]);
    if crc32c::crc32c(&b[..76]) != crc {
        return Err(corrupt(path, 0, "segment header CRC mismatch"));
    }
    let u64_at = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    if u64_at(16) != number {
        return Err(corrupt(
            path,
            16,
            "segment number does not match the file name",
        ));
    }
    let mut head = [0u8; 32];
    head.copy_from_slice(&b[40..72]);
    Ok((Lsn(u64_at(24)), head))
}

pub(crate) use fluxrig_msg::hex;
