//! The on-disk format: segment headers, record frames and control frames.
//!
//! `docs/design/wal.md` is the reference for every byte here; this module is
//! its only implementation. All integers are little-endian.

use std::fmt;

use sha2::{Digest, Sha256};

/// A log sequence number: the position of a record in the log.
///
/// LSNs start at 1, grow by one per record, and never repeat: not across
/// segments, not across restarts, not after old segments are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The LSN after this one.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A SHA-256 digest: a record's hash, or the chain head.
pub type Hash = [u8; 32];

/// The chain head before the very first record of a log.
pub const GENESIS_HASH: Hash = [0; 32];

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"FLXRWAL\0";
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 80;
/// Bytes of a record frame before its body.
pub const RECORD_HEADER_LEN: usize = 57;
/// Bytes of a control frame (seal or clean-close marker).
pub const CONTROL_FRAME_LEN: usize = 56;
/// The largest record body the format can hold (1 GiB). The configured
/// limit ([`crate::WalOptions::max_record_size`]) is usually much lower.
pub const FORMAT_MAX_BODY: u32 = 1 << 30;
/// Length-field value of a seal frame (the segment is closed; the next one exists).
pub(crate) const SEAL_MARKER: u32 = 0xFFFF_FFFF;
/// Length-field value of a clean-close frame (every LSN below `next_lsn` is synced).
pub(crate) const CLOSE_MARKER: u32 = 0xFFFF_FFFE;

/// The name of segment `number` in the WAL directory.
pub(crate) fn segment_name(number: u64) -> String {
    format!("{number:020}.wal")
}

/// The name a segment has while it is being created.
pub(crate) fn temp_segment_name(number: u64) -> String {
    format!("{number:020}.wal.tmp")
}

/// The lock file's name.
pub(crate) const LOCK_NAME: &str = "LOCK";

/// What a file name in the WAL directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileName {
    Segment(u64),
    TempSegment(u64),
    Lock,
}

pub(crate) fn parse_file_name(name: &str) -> Option<FileName> {
    if name == LOCK_NAME {
        return Some(FileName::Lock);
    }
    let digits = |s: &str| -> Option<u64> {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(stem) = name.strip_suffix(".wal.tmp") {
        return digits(stem).map(FileName::TempSegment);
    }
    if let Some(stem) = name.strip_suffix(".wal") {
        return digits(stem).map(FileName::Segment);
    }
    None
}

/// The fixed header at the start of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) number: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) created_unix_ns: u64,
    /// The chain head when this segment starts: the hash of the previous
    /// segment's last record (or the log's anchor).
    pub(crate) prev_hash: Hash,
}

/// Why a segment header is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer bytes than a header.
    Truncated,
    /// Not our magic: not a fluxrig WAL segment at all.
    Foreign,
    /// A format version this build does not read.
    Version(u16),
    /// The header's CRC does not match.
    Crc,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated => {
                write!(
                    f,
                    "segment header cut short (under {SEGMENT_HEADER_LEN} bytes)"
                )
            }
            HeaderError::Foreign => f.write_str("no fluxrig WAL magic at the start of the file"),
            HeaderError::Version(v) => write!(f, "unsupported segment format version {v}"),
            HeaderError::Crc => f.write_str("segment header checksum mismatch"),
        }
    }
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)] // 80 fits
        b[10..12].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        b[40..72].copy_from_slice(&self.prev_hash);
        let crc = crc32c::crc32c(&b[..76]);
        b[76..80].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < 8 || b[..8] != SEGMENT_MAGIC {
            // A short file that starts like ours is truncated; anything else
            // is somebody else's file.
            let n = b.len().min(8);
            return Err(if b[..n] == SEGMENT_MAGIC[..n] {
                HeaderError::Truncated
            } else {
                HeaderError::Foreign
            });
        }
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        let crc = u32_at(b, 76);
        if crc32c::crc32c(&b[..76]) != crc {
            return Err(HeaderError::Crc);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        Ok(SegmentHeader {
            number: u64_at(b, 16),
            first_lsn: Lsn(u64_at(b, 24)),
            created_unix_ns: u64_at(b, 32),
            prev_hash: hash_at(b, 40),
        })
    }
}

/// A record frame, borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordFrame<'a> {
    pub(crate) kind: u8,
    pub(crate) lsn: Lsn,
    /// Every LSN below this one was synced before this frame was written.
    pub(crate) durable_lsn: Lsn,
    pub(crate) prev_hash: Hash,
    pub(crate) body: &'a [u8],
    /// The whole frame (what the chain hashes).
    pub(crate) bytes: &'a [u8],
}

impl RecordFrame<'_> {
    /// The SHA-256 of the whole frame: the next record's `prev_hash`.
    pub(crate) fn hash(&self) -> Hash {
        Sha256::digest(self.bytes).into()
    }
}

/// Which control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlKind {
    /// The segment is closed and segment `number` follows it.
    Seal,
    /// The WAL was closed cleanly here (`number` is this segment).
    Close,
}

/// A control frame: not a record, not part of the hash chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlFrame {
    pub(crate) kind: ControlKind,
    pub(crate) number: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) chain_head: Hash,
}

impl ControlFrame {
    pub(crate) fn encode(&self) -> [u8; CONTROL_FRAME_LEN] {
        let mut b = [0u8; CONTROL_FRAME_LEN];
        let marker = match self.kind {
            ControlKind::Seal => SEAL_MARKER,
            ControlKind::Close => CLOSE_MARKER,
        };
        b[0..4].copy_from_slice(&marker.to_le_bytes());
        b[8..16].copy_from_slice(&self.number.to_le_bytes());
        b[16..24].copy_from_slice(&self.next_lsn.0.to_le_bytes());
        b[24..56].copy_from_slice(&self.chain_head);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// A frame parsed from a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frame<'a> {
    Record(RecordFrame<'a>),
    Control(ControlFrame),
}

/// Why the bytes at an offset are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The buffer ends inside the frame (`needed` bytes would complete it).
    Incomplete { needed: usize },
    /// The length field is neither a body length nor a marker.
    BadLength(u32),
    /// The CRC does not match.
    BadCrc,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Incomplete { needed } => {
                write!(f, "frame cut short ({needed} bytes needed)")
            }
            FrameError::BadLength(n) => write!(f, "impossible frame length {n}"),
            FrameError::BadCrc => f.write_str("frame checksum mismatch"),
        }
    }
}

/// The number of bytes the frame starting at `b` declares, when the length
/// field is readable and sane.
pub(crate) fn declared_frame_len(b: &[u8]) -> Result<usize, FrameError> {
    if b.len() < 4 {
        return Err(FrameError::Incomplete { needed: 4 });
    }
    match u32_at(b, 0) {
        SEAL_MARKER | CLOSE_MARKER => Ok(CONTROL_FRAME_LEN),
        n if n <= FORMAT_MAX_BODY => Ok(RECORD_HEADER_LEN + n as usize),
        n => Err(FrameError::BadLength(n)),
    }
}

/// Parses the frame at the start of `b`; returns it and its length.
pub(crate) fn parse_frame(b: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let len = declared_frame_len(b)?;
    if b.len() < len {
        return Err(FrameError::Incomplete { needed: len });
    }
    let b = &b[..len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..]);
    if crc != u32_at(b, 4) {
        return Err(FrameError::BadCrc);
    }
    let frame = match u32_at(b, 0) {
        m @ (SEAL_MARKER | CLOSE_MARKER) => Frame::Control(ControlFrame {
            kind: if m == SEAL_MARKER {
                ControlKind::Seal
            } else {
                ControlKind::Close
            },
            number: u64_at(b, 8),
            next_lsn: Lsn(u64_at(b, 16)),
            chain_head: hash_at(b, 24),
        }),
        _ => Frame::Record(RecordFrame {
            kind: b[8],
            lsn: Lsn(u64_at(b, 9)),
            durable_lsn: Lsn(u64_at(b, 17)),
            prev_hash: hash_at(b, 25),
            body: &b[RECORD_HEADER_LEN..],
            bytes: b,
        }),
    };
    Ok((frame, len))
}

/// Appends a record frame to `out` and returns its hash (the new chain head).
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    kind: u8,
    lsn: Lsn,
    durable_lsn: Lsn,
    prev_hash: &Hash,
    body: &[u8],
) -> Hash {
    let start = out.len();
    #[allow(clippy::cast_possible_truncation)] // bodies are limited to FORMAT_MAX_BODY
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&durable_lsn.0.to_le_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(body);
    let frame = &mut out[start..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Sha256::digest(&*frame).into()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn hash_at(b: &[u8], at: usize) -> Hash {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_each_flipped_bit() {
        let h = SegmentHeader {
            number: 7,
            first_lsn: Lsn(1234),
            created_unix_ns: 99,
            prev_hash: [0xab; 32],
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn record_frame_round_trips_and_hashes_the_whole_frame() {
        let mut out = Vec::new();
        let h = encode_record(&mut out, 3, Lsn(10), Lsn(9), &[1; 32], b"hello");
        assert_eq!(out.len(), RECORD_HEADER_LEN + 5);
        let (Frame::Record(r), n) = parse_frame(&out).unwrap() else {
            panic!("not a record")
        };
        assert_eq!(n, out.len());
        assert_eq!(
            (r.kind, r.lsn, r.durable_lsn, r.body),
            (3, Lsn(10), Lsn(9), &b"hello"[..])
        );
        assert_eq!(r.prev_hash, [1; 32]);
        assert_eq!(r.hash(), h);
        assert_eq!(
            parse_frame(&out[..out.len() - 1]).unwrap_err(),
            FrameError::Incomplete { needed: out.len() }
        );
    }

    #[test]
    fn control_frame_round_trips() {
        let c = ControlFrame {
            kind: ControlKind::Seal,
            number: 4,
            next_lsn: Lsn(77),
            chain_head: [9; 32],
        };
        let b = c.encode();
        let (Frame::Control(d), n) = parse_frame(&b).unwrap() else {
            panic!("not a control frame")
        };
        assert_eq!((d, n), (c, CONTROL_FRAME_LEN));
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_name(42), "00000000000000000042.wal");
        assert_eq!(
            parse_file_name(&segment_name(42)),
            Some(FileName::Segment(42))
        );
        assert_eq!(
            parse_file_name(&temp_segment_name(3)),
            Some(FileName::TempSegment(3))
        );
        assert_eq!(parse_file_name("LOCK"), Some(FileName::Lock));
        assert_eq!(parse_file_name("42.wal"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
    }
}
