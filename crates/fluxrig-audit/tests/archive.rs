//! Compaction end to end: a real WAL with the Rack's records, closed
//! segments compacted into Parquet, read back by an independent reader
//! (Python's pyarrow) and compared with what was written.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{expected_rows, normalise, open_wal, pyarrow_read, rt, write_mix};
use fluxrig_audit::{
    AuditError, CompactOptions, Compactor, Manifest, ManifestKind, archive_dir, compact_now,
    snapshot, wal_dir,
};
use sha2::{Digest, Sha256};

fn options() -> CompactOptions {
    CompactOptions::default().rack("edge-1")
}

fn archive_files(data: &std::path::Path) -> Vec<PathBuf> {
    let m = Manifest::load(&archive_dir(data)).unwrap().unwrap();
    m.files
        .iter()
        .map(|f| archive_dir(data).join(&f.file))
        .collect()
}

/// Rows of the snapshot's tail as JSON objects (through the same pyarrow
/// path: the tail is written to a Parquet file first).
fn tail_rows(data: &std::path::Path) -> Vec<serde_json::Value> {
    let snap = snapshot(data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tail.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, fluxrig_audit::schema::schema(), None).unwrap();
    for b in &snap.tail {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    pyarrow_read(&[path]).2
}

#[test]
fn closed_segments_become_parquet_rows_equal_to_what_was_written() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 8 * 1024);
    let written = write_mix(&rt, &wal, 0, 300);
    let report = compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap();
    let through = report.archived_through.unwrap().0;
    assert!(through > 100, "several segments were closed: {through}");
    assert!(
        through < written.last().unwrap().lsn,
        "the open segment is not archived"
    );
    assert_eq!(report.records, through);

    let (schema, compression, rows) = pyarrow_read(&archive_files(data.path()));
    assert_eq!(compression, ["ZSTD"]);
    assert_eq!(schema["flux_id"], "uint64");
    assert_eq!(schema["ts"], "timestamp[ns, tz=UTC]");
    assert_eq!(schema["amount"], "int64");
    assert_eq!(schema["value"], "double");
    assert_eq!(schema["kind"], "uint8");
    assert_eq!(schema["meta"], "string");
    let expected = expected_rows(&written, 1..=through);
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    // Bookkeeping records made no row and are counted.
    let m = Manifest::load(&archive_dir(data.path())).unwrap().unwrap();
    let skipped: u64 = m
        .files
        .iter()
        .map(|f| f.skipped.get(&9).copied().unwrap_or(0))
        .sum();
    let bookkeeping = written
        .iter()
        .filter(|w| w.kind == 9 && w.lsn <= through)
        .count();
    assert_eq!(skipped, bookkeeping as u64);

    // The tail holds the rest, exactly once.
    let tail = tail_rows(data.path());
    let all_lsn = written.last().unwrap().lsn;
    assert_eq!(tail, expected_rows(&written, through + 1..=all_lsn));
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn the_manifest_lists_each_file_with_its_hash_range_and_chain_heads() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    write_mix(&rt, &wal, 0, 200);
    let opts = options().max_rows_per_file(40);
    let report = compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &opts).unwrap();
    let m = Manifest::load(&archive_dir(data.path())).unwrap().unwrap();
    assert_eq!(m.kind, ManifestKind::Archive);
    assert_eq!(m.rack.as_deref(), Some("edge-1"));
    assert!(m.files.len() > 2, "files are split: {}", m.files.len());
    assert_eq!(m.files, report.files);
    let segments = fluxrig_audit::segments::list(&wal_dir(data.path())).unwrap();
    let mut next = 1;
    for (i, f) in m.files.iter().enumerate() {
        let bytes = std::fs::read(archive_dir(data.path()).join(&f.file)).unwrap();
        assert_eq!(f.sha256, hex(&Sha256::digest(&bytes)));
        assert_eq!(f.bytes, bytes.len() as u64);
        assert_eq!(f.first_lsn, next, "contiguous");
        assert_eq!(f.file, fluxrig_audit::file_name(f.first_lsn, f.last_lsn));
        next = f.last_lsn + 1;
        if i > 0 {
            assert_eq!(f.prev_chain_head, m.files[i - 1].chain_head);
        }
        // Files end at segment boundaries; the chain head they end at is
        // the one the next segment's header starts from.
        let after = segments
            .iter()
            .find(|s| s.first_lsn.0 == f.last_lsn + 1)
            .unwrap();
        assert_eq!(
            f.chain_head.as_deref(),
            Some(hex(&after.prev_head).as_str())
        );
        // A file is closed at the first segment boundary past 40 rows.
        assert!(f.rows >= 40 || i + 1 == m.files.len(), "{f:?}");
    }
    rt.block_on(wal.close()).unwrap();
}

use fluxrig_msg::hex;

#[test]
fn compaction_is_incremental_and_each_record_is_archived_once() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let (wal_d, arch_d) = (wal_dir(data.path()), archive_dir(data.path()));
    let wal = open_wal(data.path(), 4 * 1024);
    let mut written = write_mix(&rt, &wal, 0, 100);
    let first = compact_now(&wal_d, &arch_d, &options()).unwrap();
    assert!(!first.files.is_empty());
    let again = compact_now(&wal_d, &arch_d, &options()).unwrap();
    assert!(again.files.is_empty(), "nothing new to archive");
    assert_eq!(again.archived_through, first.archived_through);
    written.extend(write_mix(&rt, &wal, 100, 100));
    let second = compact_now(&wal_d, &arch_d, &options()).unwrap();
    assert!(second.archived_through > first.archived_through);
    assert_eq!(
        second.files[0].first_lsn,
        first.archived_through.unwrap().0 + 1
    );
    // After a clean close and reopen, the old open segment gets closed by
    // the next rotation and joins the archive.
    rt.block_on(wal.close()).unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    written.extend(write_mix(&rt, &wal, 200, 60));
    compact_now(&wal_d, &arch_d, &options()).unwrap();

    let (_, _, mut rows) = pyarrow_read(&archive_files(data.path()));
    rows.extend(tail_rows(data.path()));
    let all = expected_rows(&written, 1..=written.last().unwrap().lsn);
    assert_eq!(rows, all);
    let lsns: BTreeSet<u64> = rows
        .iter()
        .map(|r| r["wal_lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(lsns.len(), rows.len(), "no record twice");
    fluxrig_audit::verify(data.path()).unwrap();
    rt.block_on(wal.close()).unwrap();
}

/// The compactor holds the archive, a WAL reader and its file open while
/// it is stopped inside a batch: appends (synced, `always`) and rotations
/// go on meanwhile, because the compactor shares nothing with the writer.
#[test]
fn appends_proceed_while_a_compaction_is_in_progress() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 1 << 20);
    write_mix(&rt, &wal, 0, 9_000); // ~ 3 MB: several segments of 1 MiB
    let inside = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let paused = Arc::new(AtomicBool::new(false));
    let (i2, r2, p2) = (
        Arc::clone(&inside),
        Arc::clone(&release),
        Arc::clone(&paused),
    );
    let opts = options().on_progress(Arc::new(move |_p| {
        if !p2.swap(true, Ordering::SeqCst) {
            i2.wait();
            r2.wait();
        }
    }));
    let (wal_d, arch_d) = (wal_dir(data.path()), archive_dir(data.path()));
    let compaction = std::thread::spawn(move || compact_now(&wal_d, &arch_d, &opts));
    inside.wait();
    // The compaction is now stopped in the middle of its first segment.
    let before = wal.segments().len();
    let more = write_mix(&rt, &wal, 9_000, 3_000);
    assert_eq!(more.len(), 6_000, "every append completed durably");
    assert!(wal.segments().len() > before, "the WAL rotated meanwhile");
    assert!(!compaction.is_finished());
    release.wait();
    let report = compaction.join().unwrap().unwrap();
    assert!(report.rows > 8_000);
    fluxrig_audit::verify(data.path()).unwrap();
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn the_background_compactor_keeps_up_and_stops_cleanly() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 16 * 1024);
    let compactor = Compactor::start(
        wal_dir(data.path()),
        archive_dir(data.path()),
        options(),
        Duration::from_millis(5),
    )
    .unwrap();
    let mut written = Vec::new();
    for round in 0..10 {
        written.extend(write_mix(&rt, &wal, round * 100, 100));
        compactor.trigger();
    }
    let status = compactor.stop();
    assert_eq!(status.last_error, None);
    // Whatever it did not get to, a last run does; nothing twice.
    compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap();
    let (_, _, mut rows) = pyarrow_read(&archive_files(data.path()));
    rows.extend(tail_rows(data.path()));
    assert_eq!(
        rows,
        expected_rows(&written, 1..=written.last().unwrap().lsn)
    );
    // archived_through is what the Rack hands to Wal::apply_retention.
    let compactor = Compactor::start(
        wal_dir(data.path()),
        archive_dir(data.path()),
        options(),
        Duration::from_hours(1),
    )
    .unwrap();
    let m = Manifest::load(&archive_dir(data.path())).unwrap().unwrap();
    assert_eq!(compactor.archived_through().map(|l| l.0), m.last_lsn());
    drop(compactor);
    let removed = wal
        .remove_through(fluxrig_wal::Lsn(m.last_lsn().unwrap()))
        .unwrap();
    assert!(!removed.is_empty());
    fluxrig_audit::verify(data.path()).unwrap();
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn records_removed_before_they_were_archived_are_a_gap() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    write_mix(&rt, &wal, 0, 100);
    let segs = wal.segments();
    let last_closed = segs.iter().rev().find(|s| s.closed).unwrap();
    wal.remove_through(last_closed.last_lsn.unwrap()).unwrap();
    let err =
        compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Gap {
                archived_next: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = fluxrig_audit::verify(data.path()).unwrap_err();
    assert!(matches!(err, AuditError::Gap { .. }), "{err}");
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn one_compactor_at_a_time() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    write_mix(&rt, &wal, 0, 50);
    std::fs::create_dir_all(archive_dir(data.path())).unwrap();
    let lock = std::fs::File::create(archive_dir(data.path()).join("LOCK")).unwrap();
    lock.lock().unwrap();
    let err =
        compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    drop(lock);
    compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap();
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn leftovers_of_an_interrupted_compaction_are_removed() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    let written = write_mix(&rt, &wal, 0, 80);
    std::fs::create_dir_all(archive_dir(data.path())).unwrap();
    let junk = archive_dir(data.path())
        .join("messages-00000000000000000001-00000000000000000001.parquet.tmp");
    std::fs::write(&junk, b"half a file").unwrap();
    let report = compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap();
    assert!(!junk.exists());
    let (_, _, rows) = pyarrow_read(&archive_files(data.path()));
    assert_eq!(
        rows,
        expected_rows(&written, 1..=report.archived_through.unwrap().0)
    );
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn rows_read_back_in_rust_match_pyarrow() {
    // The crate's own reader (used by export) agrees with pyarrow.
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    write_mix(&rt, &wal, 0, 60);
    rt.block_on(wal.close()).unwrap();
    compact_now(&wal_dir(data.path()), &archive_dir(data.path()), &options()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    let report = fluxrig_audit::export(
        data.path(),
        &target,
        &fluxrig_audit::ExportOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let (_, _, exported) = pyarrow_read(&[target.join(fluxrig_audit::EXPORT_FILE)]);
    let (_, _, mut all) = pyarrow_read(&archive_files(data.path()));
    all.extend(tail_rows(data.path()));
    assert_eq!(exported, all);
    assert_eq!(report.rows, all.len() as u64);
    let _ = normalise;
}
