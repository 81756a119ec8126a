//! The archive's errors. They name files and offsets, never message content.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong with the archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// An I/O operation failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Reading or checking the WAL failed (the error names segment and offset).
    #[error(transparent)]
    Wal(#[from] fluxrig_wal::WalError),
    /// Writing or reading a Parquet file failed.
    #[error("parquet file {path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        reason: String,
    },
    /// The manifest cannot be read or does not agree with the files or the WAL.
    #[error("{path}: {reason}")]
    Manifest {
        /// The manifest, or the archive file it is about.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An archive file's bytes are not what the manifest recorded.
    #[error("archive file {path} is damaged at byte {offset}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The offset of the first bad block (or where the size differs).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another compactor holds the archive.
    #[error("archive {dir} is being compacted by another process (its LOCK file is held)")]
    Locked {
        /// The archive directory.
        dir: PathBuf,
    },
    /// The WAL lost records that were never archived.
    #[error(
        "the WAL starts at LSN {wal_first} but the archive ends before LSN {archived_next}: \
         records were removed before they were archived"
    )]
    Gap {
        /// The first LSN the archive still needs.
        archived_next: u64,
        /// The first LSN in the WAL.
        wal_first: u64,
    },
    /// Invalid input: a bad residency policy, a bad time range, an export
    /// directory that is not empty.
    #[error("{0}")]
    Invalid(String),
    /// SQL that DuckDB refused (parse, bind or run time); the text is
    /// DuckDB's message.
    #[error("{0}")]
    Sql(String),
    /// The embedded database failed for another reason.
    #[error("duckdb: {0}")]
    Database(String),
}

impl AuditError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> AuditError {
        AuditError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, e: impl std::fmt::Display) -> AuditError {
        AuditError::Parquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn manifest(path: &Path, reason: impl Into<String>) -> AuditError {
        AuditError::Manifest {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Whether this is the caller's mistake (bad SQL, bad arguments): exit
    /// code 2 in the CLI.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, AuditError::Invalid(_) | AuditError::Sql(_))
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
