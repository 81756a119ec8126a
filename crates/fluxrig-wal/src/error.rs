//! The WAL's errors.
//!
//! Errors name the directory, segment file and byte offset involved; they
//! never carry record bodies (which may hold message data).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::Lsn;

/// Everything that can go wrong with a WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Another process (or another `Wal` in this one) has the directory open.
    #[error("WAL directory {dir} is in use by another process (its LOCK file is held)")]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// An I/O operation failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// What was being done (`write`, `fdatasync`, `open`…).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Bytes that should be a valid part of the log are not.
    #[error("corrupt WAL segment {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Offset of the first bad byte range (a frame or header start).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment the log needs is not in the directory.
    #[error("WAL segment {path} is missing: {reason}")]
    MissingSegment {
        /// The file that should exist.
        path: PathBuf,
        /// How its absence was detected.
        reason: String,
    },
    /// A file in the WAL directory is not one the WAL wrote.
    #[error("{path} is not a fluxrig WAL file ({reason}); refusing to touch the directory")]
    ForeignFile {
        /// The file.
        path: PathBuf,
        /// Why it is not ours.
        reason: String,
    },
    /// A record body is larger than the configured limit.
    #[error("record body of {size} bytes exceeds the WAL's limit of {limit} bytes")]
    RecordTooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit ([`crate::WalOptions::max_record_size`]).
        limit: u32,
    },
    /// A group of records is larger than the whole append queue.
    #[error("group of {size} bytes exceeds the append queue's capacity of {limit} bytes")]
    GroupTooLarge {
        /// The group's size in framed bytes.
        size: usize,
        /// The configured queue capacity.
        limit: usize,
    },
    /// An earlier write or sync failed: the WAL acknowledges nothing more
    /// until it is reopened (and recovered).
    #[error(
        "WAL is poisoned by an earlier I/O failure and refuses appends until reopened: {cause}"
    )]
    Poisoned {
        /// The failure that poisoned it.
        cause: Arc<str>,
    },
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// The requested LSN is not (or no longer) in the log.
    #[error("LSN {lsn} is not in the log (it holds LSNs {first} to {next} exclusive)")]
    LsnOutOfRange {
        /// The requested LSN.
        lsn: Lsn,
        /// The first LSN still on disk.
        first: Lsn,
        /// The LSN the next record will get.
        next: Lsn,
    },
    /// The options do not make sense.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this error means the log on disk is damaged (as opposed to a
    /// failing disk, a busy directory or a caller mistake).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            WalError::Corrupt { .. }
                | WalError::MissingSegment { .. }
                | WalError::ForeignFile { .. }
        )
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
