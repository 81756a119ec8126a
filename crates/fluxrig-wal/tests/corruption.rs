//! Damage on disk: single-bit flips, torn tails at every byte, foreign and
//! truncated files, missing segments. Damage is either cut off as a torn
//! tail (only where a crash could have left it, and reported) or refused
//! with an error naming the file and offset; never silently accepted.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::case_sensitive_file_extension_comparisons
)]

mod common;

use std::path::Path;

use common::{Expected, Rng, body, expected, open_fault, read_all, runtime, small_segments};
use fluxrig_wal::testing::FaultStorage;
use fluxrig_wal::{
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, Wal, WalError, WalOptions, verify, verify_storage,
};

/// A log of several segments on the fault storage, written one record at a
/// time; closed cleanly or left as a crash leaves it.
fn build_log(records: u64, clean_close: bool) -> (FaultStorage, Vec<Expected>) {
    let rt = runtime();
    let disk = FaultStorage::new();
    let (wal, _) = open_fault(&disk, small_segments()).unwrap();
    for i in 0..records {
        rt.block_on(wal.append((i % 4) as u8, body(i, 20 + (i as usize * 37) % 150)))
            .unwrap();
    }
    let all = expected(&read_all(&wal));
    let image = if clean_close {
        rt.block_on(wal.close()).unwrap();
        disk.crash()
    } else {
        let image = disk.crash();
        drop(wal);
        image
    };
    (image, all)
}

fn segment_files(disk: &FaultStorage) -> Vec<(String, usize)> {
    disk.file_names()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| {
            let len = disk.read_file(&n).unwrap().len();
            (n, len)
        })
        .collect()
}

/// Flips `flips` random bits across the segments of `base` and checks each
/// is detected: `verify` always fails, and opening either fails or cuts a
/// torn tail (reported) that `allow_tail` accepts.
fn flip_bits(
    base: &FaultStorage,
    all: &[Expected],
    flips: usize,
    seed: u64,
    clean: bool,
) -> (usize, usize) {
    let files = segment_files(base);
    assert!(files.len() >= 3, "flips spread over several segments");
    let total: usize = files.iter().map(|f| f.1).sum();
    let mut rng = Rng::new(seed);
    let (mut refused, mut torn) = (0, 0);
    for _ in 0..flips {
        let mut at = rng.below(total as u64) as usize;
        let (name, _) = files
            .iter()
            .find(|(_, len)| {
                if at < *len {
                    true
                } else {
                    at -= len;
                    false
                }
            })
            .unwrap();
        let bit = rng.below(8) as u8;
        let disk = base.crash();
        assert!(disk.flip_bit(name, at as u64, bit));
        let context = format!("bit {bit} of byte {at} of {name}");
        let err = verify_storage(&disk).expect_err(&format!("verify missed {context}"));
        assert!(err.is_corruption(), "{context}: {err}");
        assert!(
            err.to_string().contains(".wal"),
            "{context}: error names the file: {err}"
        );
        match open_fault(&disk, small_segments()) {
            Err(e) => {
                assert!(e.is_corruption(), "{context}: {e}");
                refused += 1;
            }
            Ok((wal, report)) => {
                let tail = report
                    .torn_tail
                    .as_ref()
                    .unwrap_or_else(|| panic!("{context} silently accepted"));
                torn += 1;
                let last = files.last().unwrap();
                assert_eq!(
                    &tail.segment.file_name().unwrap().to_string_lossy(),
                    &last.0
                );
                assert!(tail.offset as usize <= at, "{context}: cut after the flip");
                let got = expected(&read_all(&wal));
                if clean {
                    // After a clean close only the close frame itself can be
                    // cut: every record is still there.
                    assert_eq!(got, all, "{context}");
                } else {
                    assert_eq!(got, all[..got.len()], "{context}");
                }
            }
        }
    }
    assert!(refused > 0);
    (refused, torn)
}

fn flips_wanted(default: usize) -> usize {
    if std::env::var_os("FLUXRIG_WAL_LONG").is_some() {
        default * 10
    } else {
        default
    }
}

#[test]
fn ten_thousand_bit_flips_in_a_cleanly_closed_log_are_all_detected() {
    let (base, all) = build_log(60, true);
    let flips = flips_wanted(10_000);
    let (refused, torn) = flip_bits(&base, &all, flips, 0x5eed, true);
    eprintln!("{flips} flips: {refused} refused at open, {torn} cut as a reported torn tail");
}

#[test]
fn bit_flips_in_a_crashed_log_are_detected_or_cut_as_a_reported_tail() {
    let (base, all) = build_log(60, false);
    let flips = flips_wanted(2_000);
    let (refused, torn) = flip_bits(&base, &all, flips, 0xf1d0, false);
    eprintln!("{flips} flips: {refused} refused at open, {torn} cut as a reported torn tail");
}

/// Offsets of the frames in a segment file, read independently of the
/// crate's parser: the header, then `len` + 57 bytes per record.
fn frame_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut frames = Vec::new();
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if len >= 0xFFFF_FF00 {
            break; // a control frame
        }
        let end = at + RECORD_HEADER_LEN + len as usize;
        frames.push((at, end));
        at = end;
    }
    frames
}

#[test]
fn torn_tail_at_every_byte_of_the_last_three_records() {
    let rt = runtime();
    let (base, all) = build_log(40, false);
    let (last, _) = segment_files(&base).pop().unwrap();
    let frames = frame_offsets(&base.read_file(&last).unwrap());
    assert!(frames.len() >= 3, "the last segment holds three records");
    let third_last = frames[frames.len() - 3].0;
    let end = frames.last().unwrap().1;
    let in_last = frames.len();
    for cut in third_last..end {
        let disk = base.crash();
        assert!(disk.truncate_file(&last, cut as u64));
        let complete = frames.iter().filter(|f| f.1 <= cut).count();
        let keep = all.len() - in_last + complete;
        let (wal, report) = open_fault(&disk, small_segments())
            .unwrap_or_else(|e| panic!("cut at {cut}: open refused: {e}"));
        let at_boundary = frames.iter().any(|f| f.0 == cut);
        assert_eq!(report.torn_tail.is_some(), !at_boundary, "cut at {cut}");
        let got = expected(&read_all(&wal));
        assert_eq!(got, all[..keep], "cut at {cut}");
        let lsn = rt.block_on(wal.append(3, &b"later"[..])).unwrap();
        assert_eq!(lsn.get(), keep as u64 + 1, "cut at {cut}: LSNs continue");
        rt.block_on(wal.close()).unwrap();
        let (wal, report) = open_fault(&disk, small_segments()).unwrap();
        assert!(
            report.torn_tail.is_none() && report.clean_close,
            "cut at {cut}"
        );
        let got = read_all(&wal);
        assert_eq!(got.len(), keep + 1, "cut at {cut}");
        assert_eq!(&*got.last().unwrap().body, b"later");
    }
}

#[test]
fn torn_tail_on_real_files() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default().segment_size(2048);
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    // At least two segments, and three records in the last one.
    let mut i = 0;
    while wal.segments().len() < 2
        || wal.next_lsn().get() - wal.segments().last().unwrap().first_lsn.get() < 3
    {
        rt.block_on(wal.append(1, body(i, 90))).unwrap();
        i += 1;
    }
    let all = expected(&read_all(&wal));
    rt.block_on(wal.close()).unwrap();
    let last = last_segment(dir.path());
    let bytes = std::fs::read(&last).unwrap();
    let frames = frame_offsets(&bytes);
    let in_last = frames.len();
    let (start, end) = (frames[in_last - 3].0, frames[in_last - 1].1);
    // Every fifth byte (each cut costs a few real fsyncs).
    for cut in (start..end).step_by(5) {
        std::fs::write(&last, &bytes[..cut]).unwrap();
        let (wal, report) = Wal::open(dir.path(), opts).unwrap();
        let complete = frames.iter().filter(|f| f.1 <= cut).count();
        let keep = all.len() - in_last + complete;
        assert_eq!(
            report.torn_tail.is_some(),
            !frames.iter().any(|f| f.0 == cut)
        );
        assert_eq!(expected(&read_all(&wal)), all[..keep], "cut at {cut}");
        rt.block_on(wal.append(2, &b"after"[..])).unwrap();
        rt.block_on(wal.close()).unwrap();
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        assert_eq!(read_all(&wal).len(), keep + 1);
        drop(wal);
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// The directory's files and their bytes, to prove nothing was touched.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn written_log(segments: usize) -> tempfile::TempDir {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut i = 0;
    while wal.segments().len() < segments {
        rt.block_on(wal.append(1, body(i, 100))).unwrap();
        i += 1;
    }
    rt.block_on(wal.close()).unwrap();
    dir
}

fn assert_refused_untouched(dir: &Path, check: impl Fn(&WalError) -> bool) {
    let before = snapshot(dir);
    let err = Wal::open(dir, small_segments()).expect_err("open must refuse");
    assert!(check(&err), "unexpected error: {err}");
    assert_eq!(snapshot(dir), before, "nothing may change: {err}");
    assert!(verify(dir).is_err());
}

#[test]
fn a_foreign_file_in_the_directory_is_refused() {
    let dir = written_log(2);
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::ForeignFile { path, .. } if path.ends_with("notes.txt")),
    );
}

#[test]
fn a_foreign_file_with_a_segment_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let name = "00000000000000000000.wal";
    std::fs::write(
        dir.path().join(name),
        b"PK\x03\x04 definitely a zip file, not a WAL segment, long enough to have a header",
    )
    .unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::ForeignFile { path, .. } if path.ends_with(name)),
    );
}

#[test]
fn a_truncated_segment_header_is_refused() {
    let dir = written_log(3);
    let first = dir.path().join("00000000000000000001.wal");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..40]).unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::Corrupt { path, offset: 0, .. } if *path == first),
    );
}

#[test]
fn a_truncated_middle_segment_is_refused_with_its_offset() {
    let dir = written_log(3);
    let first = dir.path().join("00000000000000000000.wal");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() - 70]).unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::Corrupt { path, offset, .. } if *path == first && *offset > 0),
    );
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let dir = written_log(4);
    std::fs::remove_file(dir.path().join("00000000000000000001.wal")).unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::MissingSegment { path, .. } if path.ends_with("00000000000000000001.wal")),
    );
}

#[test]
fn a_missing_last_segment_is_refused() {
    let dir = written_log(4);
    std::fs::remove_file(last_segment(dir.path())).unwrap();
    assert_refused_untouched(
        dir.path(),
        |e| matches!(e, WalError::MissingSegment { path, .. } if path.ends_with("00000000000000000003.wal")),
    );
}

#[test]
fn swapped_segments_break_the_chain() {
    let dir = written_log(4);
    let a = dir.path().join("00000000000000000001.wal");
    let b = dir.path().join("00000000000000000002.wal");
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bb).unwrap();
    std::fs::write(&b, &ba).unwrap();
    assert_refused_untouched(dir.path(), WalError::is_corruption);
}

#[test]
fn verify_accepts_a_sound_log_and_names_the_first_bad_offset() {
    let dir = written_log(3);
    let report = verify(dir.path()).unwrap();
    assert!(report.clean_close);
    assert_eq!(report.segments, 3);
    let seg = dir.path().join("00000000000000000001.wal");
    let mut bytes = std::fs::read(&seg).unwrap();
    let frames = frame_offsets(&bytes);
    let (start, _) = frames[1];
    bytes[start + RECORD_HEADER_LEN + 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    match verify(dir.path()) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, start as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
