//! The Rack's write-ahead log: the system of record for every message that
//! enters or leaves a Rack.
//!
//! - **Segments** in one directory, rotated by size; records framed with
//!   length, CRC32C, a kind byte and an opaque body, each carrying the
//!   SHA-256 of the previous record (a hash chain across segments).
//! - **Group commit**: one writer thread writes whatever is queued as one
//!   batch and syncs once; under [`SyncPolicy::Always`] (the default) an
//!   append resolves only when its record is synced.
//! - **Recovery** at open: a torn tail is cut off and reported; damage
//!   anywhere else refuses to open, naming the segment file and offset.
//! - **Poisoning**: after any write or sync failure the log acknowledges
//!   nothing more until reopened.
//!
//! The byte layout and the crash-safety argument are in
//! `docs/design/wal.md`. All I/O goes through [`Storage`];
//! [`testing::FaultStorage`] crashes, fails and corrupts on command.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fluxrig_wal::WalError> {
//! use fluxrig_wal::{Lsn, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (wal, report) = Wal::open(dir.path(), WalOptions::default())?;
//! assert!(report.created);
//! let lsn = wal.append(1, &b"ingress"[..]).await?; // durable when it returns
//! let pending = wal.submit(2, &b"egress"[..]).await?; // queued, LSN known
//! assert_eq!(pending.lsn(), lsn.next());
//! pending.await?; // now durable
//! let bodies: Vec<_> = wal
//!     .read_from(Lsn::FIRST)?
//!     .map(|r| r.map(|r| r.body))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(bodies, [&b"ingress"[..], &b"egress"[..]]);
//! wal.close().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod format;
mod options;
mod reader;
mod scan;
mod storage;
pub mod testing;
mod wal;

pub use error::{Result, WalError};
pub use format::{
    CONTROL_FRAME_LEN, FORMAT_MAX_BODY, GENESIS_HASH, Hash, Lsn, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
pub use options::{SyncPolicy, WalOptions};
pub use reader::WalReader;
pub use scan::{VerifyReport, verify, verify_storage};
pub use storage::{FsStorage, Storage, StorageFile, StorageLock};
pub use wal::{
    Pending, Record, RecoveryReport, Retention, SegmentInfo, TornTail, Wal, WalMeter, WalStats,
};
