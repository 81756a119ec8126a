//! Compaction: closed WAL segments become zstd Parquet files listed in the
//! manifest.
//!
//! The compactor only *reads* the WAL — through its own file handles, with
//! [`WalReader::open`], which takes no lock — so the Rack's appends never
//! wait for it. One compactor at a time holds the archive (`LOCK`, an
//! exclusive `flock`); readers (`query`, `verify`, `export`) need no lock
//! because files appear under their final name only once complete and the
//! manifest is replaced atomically.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use fluxrig_wal::{Lsn, WalReader};

use crate::error::{AuditError, Result};
use crate::manifest::{FileEntry, Manifest, ManifestKind};
use crate::parquet_io::{BATCH_ROWS, ParquetFile, WriteOptions};
use crate::schema::{EventBatch, push_record};
use crate::segments::{self, Segment, hex};

/// The archive's lock file.
pub const LOCK_NAME: &str = "LOCK";

/// Called by the compactor after each batch of records it has read.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How far a compaction run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The last LSN read.
    pub lsn: u64,
    /// Records read in this run.
    pub records: u64,
    /// Rows made in this run.
    pub rows: u64,
}

/// How compaction writes the archive.
#[derive(Clone)]
#[non_exhaustive]
pub struct CompactOptions {
    /// The Rack's name, stored in the `rack` column and the manifest.
    pub rack: Option<String>,
    /// A file is closed at the first segment boundary at or past this many
    /// rows (default 1,000,000): a file always covers whole segments.
    pub max_rows_per_file: u64,
    /// Rows per Parquet row group (default 131,072).
    pub row_group_rows: usize,
    /// zstd level (default 3).
    pub zstd_level: i32,
    /// Called after each batch of 8,192 records (progress bars, tests).
    pub on_progress: Option<ProgressHook>,
}

impl std::fmt::Debug for CompactOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactOptions")
            .field("rack", &self.rack)
            .field("max_rows_per_file", &self.max_rows_per_file)
            .field("row_group_rows", &self.row_group_rows)
            .field("zstd_level", &self.zstd_level)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            rack: None,
            max_rows_per_file: 1_000_000,
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            on_progress: None,
        }
    }
}

impl CompactOptions {
    /// Sets the Rack's name.
    #[must_use]
    pub fn rack(mut self, rack: impl Into<String>) -> Self {
        self.rack = Some(rack.into());
        self
    }

    /// Sets the rows after which a file is closed (at a segment boundary).
    #[must_use]
    pub fn max_rows_per_file(mut self, rows: u64) -> Self {
        self.max_rows_per_file = rows.max(1);
        self
    }

    /// Sets a progress hook.
    #[must_use]
    pub fn on_progress(mut self, hook: ProgressHook) -> Self {
        self.on_progress = Some(hook);
        self
    }

    pub(crate) fn write_options(&self) -> WriteOptions {
        WriteOptions {
            zstd_level: self.zstd_level,
            row_group_rows: self.row_group_rows,
        }
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// The files it added to the manifest.
    pub files: Vec<FileEntry>,
    /// Records read.
    pub records: u64,
    /// Rows written.
    pub rows: u64,
    /// The last LSN in the archive after the run.
    pub archived_through: Option<Lsn>,
    /// The run was stopped before it finished (its unfinished file was
    /// removed; the manifest lists only complete files).
    pub stopped: bool,
}

/// Compacts every closed, not yet archived segment of `wal_dir` into
/// `archive_dir` now, and returns what it did.
pub fn compact_now(
    wal_dir: &Path,
    archive_dir: &Path,
    options: &CompactOptions,
) -> Result<CompactReport> {
    compact(wal_dir, archive_dir, options, &AtomicBool::new(false))
}

/// Holds the archive's lock while alive.
struct ArchiveLock(#[allow(dead_code)] File);

fn lock_archive(dir: &Path) -> Result<ArchiveLock> {
    let path = dir.join(LOCK_NAME);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io("open", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(ArchiveLock(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::io("lock", &path, e)),
    }
}

fn remove_temp_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| AuditError::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("read", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.ends_with(".parquet.tmp") || name == "manifest.json.tmp";
        if ours {
            let p = entry.path();
            fs::remove_file(&p).map_err(|e| AuditError::io("remove", &p, e))?;
        }
    }
    Ok(())
}

/// The name of the archive file holding LSNs `first..=last`.
pub fn file_name(first: u64, last: u64) -> String {
    format!("messages-{first:020}-{last:020}.parquet")
}

pub(crate) fn compact(
    wal_dir: &Path,
    archive_dir: &Path,
    options: &CompactOptions,
    stop: &AtomicBool,
) -> Result<CompactReport> {
    fs::create_dir_all(archive_dir).map_err(|e| AuditError::io("create", archive_dir, e))?;
    let _lock = lock_archive(archive_dir)?;
    remove_temp_files(archive_dir)?;
    let manifest_path = archive_dir.join(crate::manifest::MANIFEST_NAME);
    let mut manifest = match Manifest::load(archive_dir)? {
        Some(m) if m.kind != ManifestKind::Archive => {
            return Err(AuditError::manifest(
                &manifest_path,
                "this is an export's manifest, not an archive's",
            ));
        }
        Some(m) => m,
        None => Manifest::new(ManifestKind::Archive, options.rack.clone()),
    };
    if manifest.rack.is_none() {
        manifest.rack.clone_from(&options.rack);
    }
    let rack = options.rack.clone().or_else(|| manifest.rack.clone());
    let mut report = CompactReport {
        archived_through: manifest.last_lsn().map(Lsn),
        ..CompactReport::default()
    };
    if !wal_dir.is_dir() {
        return Ok(report);
    }
    let segs = segments::list(wal_dir)?;
    let Some(first) = segs.first() else {
        return Ok(report);
    };
    // An archive starts at the log's first LSN: a WAL whose first segments
    // are gone before anything was archived has lost records.
    let mut next = manifest.last_lsn().map_or(Lsn::FIRST.0, |l| l + 1);
    if first.first_lsn.0 > next {
        return Err(AuditError::Gap {
            archived_next: next,
            wal_first: first.first_lsn.0,
        });
    }
    // Closed segments holding LSNs not yet archived.
    let todo: Vec<&Segment> = segs
        .iter()
        .filter(|s| s.closed.is_some_and(|c| c.next_lsn.0 > next))
        .collect();
    let Some(start) = todo.first() else {
        return Ok(report);
    };
    if start.first_lsn.0 != next {
        return Err(AuditError::manifest(
            &manifest_path,
            format!(
                "the archive ends at LSN {}, inside segment {}: it was not made from this WAL",
                next - 1,
                start.path.display()
            ),
        ));
    }
    if let Some(last) = manifest.files.last()
        && last.chain_head.as_deref() != Some(hex(&start.prev_head).as_str())
    {
        return Err(AuditError::manifest(
            &manifest_path,
            format!(
                "the WAL does not continue the archive: segment {} starts from a different chain head",
                start.path.display()
            ),
        ));
    }

    let mut reader = WalReader::open(wal_dir, Lsn(next))?;
    let mut i = 0;
    while i < todo.len() {
        let file_first = next;
        let first_seg = todo[i];
        let tmp = archive_dir.join(format!("{}.tmp", file_name(file_first, file_first)));
        let mut file = ParquetFile::create(&tmp, options.write_options())?;
        let mut batch = EventBatch::new();
        let mut skipped = BTreeMap::new();
        let mut last_seg = first_seg;
        let result = (|| -> Result<bool> {
            while i < todo.len() {
                let seg = todo[i];
                let end = seg.closed.map_or(next, |c| c.next_lsn.0);
                while next < end {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    let rec = reader.next().ok_or_else(|| {
                        AuditError::Wal(fluxrig_wal::WalError::Corrupt {
                            path: seg.path.clone(),
                            offset: 0,
                            reason: format!(
                                "segment ends before LSN {end}, where the next one starts"
                            ),
                        })
                    })??;
                    if !push_record(
                        &mut batch,
                        rack.as_deref(),
                        seg.number,
                        rec.lsn.0,
                        rec.kind,
                        &rec.body,
                    ) {
                        *skipped.entry(rec.kind).or_insert(0u64) += 1;
                    }
                    next = rec.lsn.0 + 1;
                    report.records += 1;
                    if batch.len() >= BATCH_ROWS || report.records.is_multiple_of(BATCH_ROWS as u64)
                    {
                        report.rows += batch.len() as u64;
                        file.write(&batch.finish())?;
                        if let Some(hook) = &options.on_progress {
                            hook(&Progress {
                                lsn: rec.lsn.0,
                                records: report.records,
                                rows: report.rows,
                            });
                        }
                    }
                }
                last_seg = seg;
                i += 1;
                if file.rows() + batch.len() as u64 >= options.max_rows_per_file {
                    break;
                }
            }
            report.rows += batch.len() as u64;
            file.write(&batch.finish())?;
            Ok(true)
        })();
        match result {
            Ok(true) => {}
            Ok(false) => {
                file.abandon();
                report.stopped = true;
                return Ok(report);
            }
            Err(e) => {
                file.abandon();
                return Err(e);
            }
        }
        if next == file_first {
            // Only empty segments: nothing to archive.
            file.abandon();
            continue;
        }
        let name = file_name(file_first, next - 1);
        let written = file.finish(&archive_dir.join(&name))?;
        let entry = FileEntry {
            file: name,
            sha256: written.sha256,
            block_sha256: written.blocks,
            bytes: written.bytes,
            rows: written.rows,
            first_lsn: file_first,
            last_lsn: next - 1,
            segments: Some([first_seg.number, last_seg.number]),
            prev_chain_head: Some(hex(&first_seg.prev_head)),
            chain_head: last_seg.closed.map(|c| hex(&c.head)),
            ts_range: written.ts_range,
            skipped,
        };
        manifest.files.push(entry.clone());
        manifest.store(archive_dir)?;
        tracing::info!(
            file = %entry.file,
            rows = entry.rows,
            first_lsn = entry.first_lsn,
            last_lsn = entry.last_lsn,
            "archived WAL records"
        );
        report.archived_through = Some(Lsn(entry.last_lsn));
        report.files.push(entry);
    }
    Ok(report)
}

/// What the background compactor has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactorStatus {
    /// Compaction runs finished (successfully or not).
    pub runs: u64,
    /// Files archived.
    pub files: u64,
    /// Rows archived.
    pub rows: u64,
    /// The last run's error, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Signal {
    wake: bool,
}

#[derive(Debug)]
struct Shared {
    signal: Mutex<Signal>,
    cv: Condvar,
    stop: AtomicBool,
    /// Last archived LSN + 1 (0: nothing archived).
    archived_next: AtomicU64,
    status: Mutex<CompactorStatus>,
}

/// The background compactor: a thread that compacts closed segments every
/// `interval`, or at once when [`Compactor::trigger`]ed (the Rack may call
/// it after a rotation). Stopping (or dropping) it stops at the next batch
/// boundary: an unfinished file is removed and the manifest keeps only
/// complete files.
///
/// It never blocks the Rack: it reads segment files the WAL writer has
/// finished with, holds no lock the WAL uses, and runs on its own thread.
#[derive(Debug)]
pub struct Compactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts the compactor thread.
    pub fn start(
        wal_dir: PathBuf,
        archive_dir: PathBuf,
        options: CompactOptions,
        interval: Duration,
    ) -> Result<Compactor> {
        let archived_next = Manifest::load(&archive_dir)?
            .and_then(|m| m.last_lsn())
            .map_or(0, |l| l + 1);
        let shared = Arc::new(Shared {
            signal: Mutex::new(Signal { wake: true }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            archived_next: AtomicU64::new(archived_next),
            status: Mutex::new(CompactorStatus::default()),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fluxrig-compactor".into())
            .spawn(move || run(&s, &wal_dir, &archive_dir, &options, interval))
            .map_err(|e| AuditError::io("spawn the compactor thread", Path::new(""), e))?;
        Ok(Compactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs a compaction as soon as the current one (if any) is done.
    pub fn trigger(&self) {
        let mut s = self
            .shared
            .signal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.wake = true;
        self.shared.cv.notify_one();
    }

    /// Every LSN up to this one is in the archive (for
    /// `Wal::apply_retention`).
    pub fn archived_through(&self) -> Option<Lsn> {
        match self.shared.archived_next.load(Ordering::Acquire) {
            0 => None,
            n => Some(Lsn(n - 1)),
        }
    }

    /// What it has done so far.
    pub fn status(&self) -> CompactorStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the thread (at the next batch boundary) and waits for it.
    pub fn stop(mut self) -> CompactorStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    shared: &Shared,
    wal_dir: &Path,
    archive_dir: &Path,
    options: &CompactOptions,
    interval: Duration,
) {
    loop {
        {
            let mut s = shared.signal.lock().unwrap_or_else(PoisonError::into_inner);
            while !s.wake && !shared.stop.load(Ordering::Relaxed) {
                let (guard, timeout) = shared
                    .cv
                    .wait_timeout(s, interval)
                    .unwrap_or_else(PoisonError::into_inner);
                s = guard;
                if timeout.timed_out() {
                    break;
                }
            }
            s.wake = false;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let result = compact(wal_dir, archive_dir, options, &shared.stop);
        let mut status = shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.runs += 1;
        match result {
            Ok(r) => {
                status.files += r.files.len() as u64;
                status.rows += r.files.iter().map(|f| f.rows).sum::<u64>();
                status.last_error = None;
                if let Some(l) = r.archived_through {
                    shared.archived_next.store(l.0 + 1, Ordering::Release);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                // Rate-limited: the same failure is logged once, not every interval.
                if status.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "audit compaction failed; retrying");
                }
                status.last_error = Some(msg);
            }
        }
    }
}
