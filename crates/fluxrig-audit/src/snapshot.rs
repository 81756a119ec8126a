//! A consistent view of a data directory for readers: the archive's files
//! as the manifest lists them, plus the WAL records after them (the tail
//! not yet compacted), decoded into the same rows. Every record is in
//! exactly one of the two.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use fluxrig_wal::{Lsn, WalError, WalReader};

use crate::error::{AuditError, Result};
use crate::manifest::{self, Manifest};
use crate::parquet_io::BATCH_ROWS;
use crate::schema::{EventBatch, push_record};
use crate::segments;

/// The WAL directory inside a data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// The archive directory inside a data directory.
pub fn archive_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("archive")
}

/// What a reader sees of a data directory at one moment.
#[derive(Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The archive's manifest (`None` before the first compaction).
    pub manifest: Option<Manifest>,
    /// The archive's files, in LSN order.
    pub files: Vec<PathBuf>,
    /// Rows of the WAL records after the archive.
    pub tail: Vec<RecordBatch>,
    /// Records read from the WAL tail (rows or not).
    pub tail_records: u64,
    /// The Rack's name, from the manifest.
    pub rack: Option<String>,
}

impl Snapshot {
    /// Rows in the archive files (from the manifest).
    pub fn archived_rows(&self) -> u64 {
        self.manifest.as_ref().map_or(0, Manifest::rows)
    }

    /// Rows in the tail.
    pub fn tail_rows(&self) -> u64 {
        self.tail.iter().map(|b| b.num_rows() as u64).sum()
    }
}

/// Takes a snapshot of `data_dir` (`wal/` and `archive/`). Safe beside a
/// running Rack and compactor: if the compactor archives (and the Rack
/// removes) segments while the tail is read, the snapshot is taken again.
pub fn snapshot(data_dir: &Path) -> Result<Snapshot> {
    let wal = wal_dir(data_dir);
    let archive = archive_dir(data_dir);
    if !data_dir.is_dir() {
        return Err(AuditError::Invalid(format!(
            "data directory {} does not exist",
            data_dir.display()
        )));
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        match try_snapshot(&wal, &archive) {
            Err(
                AuditError::Wal(WalError::LsnOutOfRange { .. } | WalError::Io { .. })
                | AuditError::Io { .. },
            ) if attempts < 5 => {
                // Segments went away under us: archived and removed since
                // the manifest was read. Read it again.
            }
            other => return other,
        }
    }
}

fn try_snapshot(wal: &Path, archive: &Path) -> Result<Snapshot> {
    let manifest = Manifest::load(archive)?;
    let files = manifest
        .as_ref()
        .map(|m| manifest::file_paths(archive, m))
        .unwrap_or_default();
    let rack = manifest.as_ref().and_then(|m| m.rack.clone());
    let mut snap = Snapshot {
        files,
        tail: Vec::new(),
        tail_records: 0,
        rack,
        manifest,
    };
    if !wal.is_dir() {
        return Ok(snap);
    }
    let segs = segments::list(wal)?;
    let Some(first) = segs.first() else {
        return Ok(snap);
    };
    let from = snap
        .manifest
        .as_ref()
        .and_then(Manifest::last_lsn)
        .map_or(first.first_lsn.0, |l| l + 1);
    if from < first.first_lsn.0 {
        return Err(AuditError::Gap {
            archived_next: from,
            wal_first: first.first_lsn.0,
        });
    }
    let records = WalReader::open(wal, Lsn(from))?.collect::<Result<Vec<_>, _>>()?;
    // Listed again after reading: the Rack may have rotated meanwhile, and
    // segments are only ever added at the end (or removed at the start).
    let segs = if records
        .last()
        .is_some_and(|r| r.lsn >= segs[segs.len() - 1].first_lsn)
    {
        segments::list(wal)?
    } else {
        segs
    };
    let mut batch = EventBatch::new();
    for rec in records {
        let segment = segs
            .iter()
            .rev()
            .find(|s| s.first_lsn <= rec.lsn)
            .map_or(0, |s| s.number);
        push_record(
            &mut batch,
            snap.rack.as_deref(),
            segment,
            rec.lsn.0,
            rec.kind,
            &rec.body,
        );
        snap.tail_records += 1;
        if batch.len() >= BATCH_ROWS {
            snap.tail.push(batch.finish());
        }
    }
    if !batch.is_empty() {
        snap.tail.push(batch.finish());
    }
    Ok(snap)
}
