//! The audit archive: the Rack's WAL, compacted into Parquet that any engine
//! reads, with a manifest that ties every file to the WAL's hash chain.
//!
//! - [`records`]: the Rack's WAL record kinds and bodies (one definition for
//!   the Rack that writes them and the archive that reads them).
//! - [`compact_now`] and the background [`Compactor`]: closed segments →
//!   zstd Parquet files, one row per message event ([`schema`]), listed in
//!   the [`Manifest`] (SHA-256, rows, LSN range, chain heads), replaced
//!   atomically. The compactor only reads the WAL, so it never blocks ingest.
//! - [`verify()`]: the WAL's CRCs and chain, and the manifest against the
//!   files and the WAL.
//! - [`snapshot()`]: archive files plus the WAL tail not yet compacted,
//!   every record exactly once — what [`query()`] (feature `duckdb`) and
//!   [`export()`] read.
//! - [`Residency`]: which fields never leave the Rack.
//!
//! A data directory holds `wal/` (the Rack's WAL) and `archive/` (this
//! crate's `manifest.json`, `messages-<first LSN>-<last LSN>.parquet` files
//! and its `LOCK`). `docs/audit.md` documents every column and the manifest.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fluxrig_audit::{CompactOptions, compact_now, records, snapshot};
//! use fluxrig_msg::{FluxId, FluxMsg, Value};
//! use fluxrig_wal::{Wal, WalOptions};
//!
//! let data = tempfile::tempdir()?;
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! let (wal, _) = Wal::open(data.path().join("wal"), WalOptions::default().segment_size(81))?;
//! for i in 1..=3 {
//!     let msg = FluxMsg::new(FluxId::from_raw(i), Value::from("hello"));
//!     rt.block_on(wal.append(records::INGRESS, records::encode_ingress("in", "out", &msg)))?;
//! }
//! // A segment closes at each append here (no room for a second record): two are closed.
//! let report = compact_now(&data.path().join("wal"), &data.path().join("archive"), &CompactOptions::default())?;
//! assert_eq!(report.rows, 2);
//! let snap = snapshot::snapshot(data.path())?;
//! assert_eq!((snap.archived_rows(), snap.tail_rows()), (2, 1));
//! rt.block_on(wal.close())?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod compact;
mod error;
mod export;
pub mod manifest;
mod parquet_io;
#[cfg(feature = "duckdb")]
mod query;
pub mod records;
mod residency;
pub mod schema;
pub mod segments;
pub mod snapshot;
mod verify;

pub use compact::{
    CompactOptions, CompactReport, Compactor, CompactorStatus, LOCK_NAME, Progress, ProgressHook,
    compact_now, file_name,
};
pub use error::{AuditError, Result};
pub use export::{EXPORT_FILE, ExportOptions, ExportProgress, ExportReport, export};
pub use manifest::{FileEntry, Manifest, ManifestKind};
#[cfg(feature = "duckdb")]
pub use query::{QueryOutput, query};
pub use residency::Residency;
pub use snapshot::{Snapshot, archive_dir, snapshot, wal_dir};
pub use verify::{VerifyReport, verify};
