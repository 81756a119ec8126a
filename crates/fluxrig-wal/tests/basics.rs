//! The WAL on real files: appends, LSNs across restarts, the directory
//! lock, rotation, reading, retention, sync policies, limits, concurrency.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{body, expected, read_all, runtime, small_segments};
use fluxrig_wal::testing::{FaultPlan, FaultStorage};
use fluxrig_wal::{
    Lsn, Retention, Storage, SyncPolicy, Wal, WalError, WalOptions, WalReader, verify,
};

#[test]
fn appends_survive_reopen_and_lsns_continue() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(report.created);
    assert_eq!(report.next_lsn, Lsn::FIRST);
    for i in 0..10 {
        let lsn = rt.block_on(wal.append(i as u8, body(i, 64))).unwrap();
        assert_eq!(lsn, Lsn(i + 1));
    }
    let (first, last) = rt
        .block_on(wal.append_group([(20, &b"a"[..]), (21, &b"bb"[..]), (22, &b""[..])]))
        .unwrap();
    assert_eq!((first, last), (Lsn(11), Lsn(13)));
    rt.block_on(wal.close()).unwrap();

    let (wal, report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(!report.created && report.clean_close && report.torn_tail.is_none());
    assert_eq!((report.records, report.next_lsn), (13, Lsn(14)));
    let records = read_all(&wal);
    assert_eq!(records.len(), 13);
    for (i, r) in records.iter().take(10).enumerate() {
        assert_eq!((r.lsn, r.kind), (Lsn(i as u64 + 1), i as u8));
        assert_eq!(&*r.body, &body(i as u64, 64)[..]);
    }
    assert_eq!((records[12].kind, &*records[12].body), (22, &b""[..]));
    assert_eq!(rt.block_on(wal.append(1, &b"x"[..])).unwrap(), Lsn(14));
    // Dropping the last handle closes the log too.
    drop(wal);
    let (_wal, report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(report.clean_close);
    assert_eq!(report.next_lsn, Lsn(15));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(&err, WalError::Locked { dir: d } if d == dir.path()),
        "{err}"
    );
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    rt.block_on(wal.close()).unwrap();
    let (_wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
}

#[test]
fn segments_rotate_and_are_read_across() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 0..60 {
        rt.block_on(wal.append(1, body(i, 100))).unwrap();
    }
    let segments = wal.segments();
    assert!(segments.len() >= 5);
    let (open, closed) = segments.split_last().unwrap();
    assert!(!open.closed && open.closed_at.is_none());
    assert!(closed.iter().all(|s| s.closed && s.closed_at.is_some()));
    for w in segments.windows(2) {
        assert_eq!(
            w[0].last_lsn.unwrap().next(),
            w[1].first_lsn,
            "contiguous LSNs"
        );
        assert_eq!(w[0].number + 1, w[1].number);
        assert!(w[0].path.exists());
    }
    assert_eq!(open.last_lsn, Some(Lsn(60)));
    // Segments exceed the size by at most one batch (here one record).
    for s in closed {
        assert!(s.bytes >= 1024 && s.bytes < 1024 + 57 + 100 + 56, "{s:?}");
        assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.bytes);
    }
    // Reading from the middle of a closed segment.
    let from = Lsn(segments[2].first_lsn.get() + 1);
    let tail: Vec<_> = wal.read_from(from).unwrap().map(Result::unwrap).collect();
    assert_eq!(tail.len() as u64, 60 - from.get() + 1);
    assert_eq!(tail[0].lsn, from);
    assert!(matches!(
        wal.read_from(Lsn(62)),
        Err(WalError::LsnOutOfRange { .. })
    ));
    rt.block_on(wal.close()).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.records, report.segments), (60, segments.len()));
}

#[test]
fn a_reader_follows_the_growing_log() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut reader = wal.read_from(Lsn::FIRST).unwrap();
    assert!(reader.next().is_none());
    for round in 0..5u64 {
        for i in 0..7 {
            rt.block_on(wal.append(2, body(round * 7 + i, 150)))
                .unwrap();
        }
        let got: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(got.len(), 7, "round {round}");
        assert_eq!(got[0].lsn, Lsn(round * 7 + 1));
    }
    assert_eq!(reader.position(), Lsn(36));
}

#[test]
fn archived_segments_are_removed_and_lsns_stay_monotonic() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 0..60 {
        rt.block_on(wal.append(1, body(i, 100))).unwrap();
    }
    let segments = wal.segments();
    let through = segments[2].last_lsn.unwrap();
    // Not archived past segment 2: only 0..=2 may go.
    let removed = wal.remove_through(Lsn(through.get() + 1)).unwrap();
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(|s| !s.path.exists()));
    assert_eq!(wal.first_lsn(), through.next());
    assert!(matches!(
        wal.read_from(Lsn::FIRST),
        Err(WalError::LsnOutOfRange { .. })
    ));
    // Nothing is archived beyond: retention by size removes nothing more.
    let none = wal
        .apply_retention(
            through,
            &Retention::default().max_bytes(0),
            SystemTime::now(),
        )
        .unwrap();
    assert!(none.is_empty());
    // Archived through everything: the size limit removes closed segments
    // oldest first, never the open one.
    let all_through = Lsn(60);
    let total: u64 = wal.segments().iter().map(|s| s.bytes).sum();
    let removed = wal
        .apply_retention(
            all_through,
            &Retention::default().max_bytes(total - 1),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(removed.len(), 1);
    // By age: a day later, every archived closed segment goes.
    let later = SystemTime::now() + Duration::from_hours(24);
    let removed = wal
        .apply_retention(
            all_through,
            &Retention::default().max_age(Duration::from_hours(1)),
            later,
        )
        .unwrap();
    assert!(!removed.is_empty());
    let left = wal.segments();
    assert_eq!(left.len(), 1);
    assert!(!left[0].closed);
    rt.block_on(wal.close()).unwrap();

    let (wal, report) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(report.first_lsn, left[0].first_lsn);
    assert_eq!(report.next_lsn, Lsn(61));
    assert_eq!(rt.block_on(wal.append(1, &b"next"[..])).unwrap(), Lsn(61));
    let records = read_all(&wal);
    assert_eq!(records.first().unwrap().lsn, left[0].first_lsn);
    assert_eq!(records.last().unwrap().lsn, Lsn(61));
    drop(wal);
    verify(dir.path()).unwrap();
}

#[test]
fn record_and_group_limits_are_clear_errors() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default()
        .max_record_size(1000)
        .queue_capacity(4096);
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let err = rt.block_on(wal.append(1, vec![0u8; 1001])).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::RecordTooLarge {
                size: 1001,
                limit: 1000
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "record body of 1001 bytes exceeds the WAL's limit of 1000 bytes"
    );
    let group = (0..5).map(|_| (1u8, vec![0u8; 1000]));
    let err = rt.block_on(wal.append_group(group)).unwrap_err();
    assert!(matches!(err, WalError::GroupTooLarge { .. }), "{err}");
    // The WAL is unharmed.
    assert_eq!(rt.block_on(wal.append(1, vec![0u8; 1000])).unwrap(), Lsn(1));
    for bad in [
        WalOptions::default().queue_capacity(100),
        WalOptions::default().segment_size(10),
        WalOptions::default().sync(SyncPolicy::Interval(Duration::ZERO)),
    ] {
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            Wal::open(other.path(), bad),
            Err(WalError::InvalidOptions(_))
        ));
    }
}

#[test]
fn a_tiny_queue_applies_back_pressure_without_losing_order() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Room for one record at a time.
    let opts = WalOptions::default()
        .max_record_size(64)
        .queue_capacity(121);
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let acked = rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    let mut lsns = Vec::new();
                    for i in 0..25 {
                        lsns.push(wal.append(t as u8, body(t * 100 + i, 64)).await.unwrap());
                    }
                    lsns
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    for lsns in &acked {
        assert!(lsns.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(read_all(&wal).len(), 200);
}

#[test]
fn many_concurrent_appenders_are_all_readable_in_order_after_reopen() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default().segment_size(64 << 10);
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let tasks = 64u64;
    let each = 50u64;
    let acked = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..each {
                        let b = format!("task {t} record {i}").into_bytes();
                        let lsn = wal.append((t % 256) as u8, b.clone()).await.unwrap();
                        out.push((lsn, t, b));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(report.records, tasks * each);
    let records = read_all(&wal);
    let lsns: Vec<_> = records.iter().map(|r| r.lsn.get()).collect();
    assert_eq!(lsns, (1..=tasks * each).collect::<Vec<_>>());
    for (lsn, task, b) in &acked {
        let r = &records[(lsn.get() - 1) as usize];
        assert_eq!((r.kind, &*r.body), ((task % 256) as u8, &b[..]));
    }
    // Each task's records are in its own order.
    for t in 0..tasks {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.body.starts_with(format!("task {t} ").as_bytes()))
            .collect();
        let expect: Vec<_> = (0..each)
            .map(|i| format!("task {t} record {i}").into_bytes())
            .collect();
        assert_eq!(
            mine.iter().map(|r| r.body.to_vec()).collect::<Vec<_>>(),
            expect
        );
    }
}

/// Counts syncs on the fault storage to see what each policy does.
fn syncs_for(policy: SyncPolicy, appends: u64) -> (FaultStorage, Wal, u64) {
    let rt = runtime();
    let disk = FaultStorage::new();
    let (wal, _) = Wal::open_with_storage(
        Arc::new(disk.clone()) as Arc<dyn Storage>,
        WalOptions::default().sync(policy),
    )
    .unwrap();
    disk.set_plan(FaultPlan::none());
    for i in 0..appends {
        rt.block_on(wal.append(1, body(i, 10))).unwrap();
    }
    let syncs = disk.stats().syncs;
    (disk, wal, syncs)
}

#[test]
fn policy_always_syncs_before_every_acknowledgement() {
    let (disk, wal, syncs) = syncs_for(SyncPolicy::Always, 20);
    assert_eq!(syncs, 20, "one append at a time: one sync each");
    assert_eq!(wal.synced_lsn(), Lsn(21));
    // The post-crash image has every acknowledged record.
    let image = disk.crash();
    drop(wal);
    let (wal, _) = common::open_fault(&image, WalOptions::default()).unwrap();
    assert_eq!(read_all(&wal).len(), 20);
}

#[test]
fn policy_always_syncs_unawaited_records_lazily_and_awaited_ones_at_once() {
    let rt = runtime();
    let disk = FaultStorage::new();
    let opts = WalOptions::default().lazy_sync(Duration::from_hours(1));
    let (wal, _) =
        Wal::open_with_storage(Arc::new(disk.clone()) as Arc<dyn Storage>, opts).unwrap();
    disk.set_plan(FaultPlan::none());
    // Appended, never awaited: written, but nobody was told, so no sync.
    for i in 0..50 {
        drop(rt.block_on(wal.submit(1, body(i, 10))).unwrap());
    }
    let mut kept = rt.block_on(wal.submit(1, body(50, 10))).unwrap();
    // Give a writer that would write (or sync) them time to do so.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(wal.stats().records, 0, "queued until someone asks");
    assert_eq!(disk.stats().syncs, 0, "no one awaits these records yet");
    assert_eq!(wal.synced_lsn(), Lsn(1));
    assert!(
        read_all(&wal).is_empty(),
        "readers see acknowledged records only"
    );
    // Asking for one record syncs it and everything before it, once.
    kept.expedite();
    assert_eq!(rt.block_on(kept).unwrap(), Lsn(51));
    assert_eq!(wal.synced_lsn(), Lsn(52));
    assert_eq!(disk.stats().syncs, 1);
    assert_eq!(wal.stats().records, 51);
    assert_eq!(wal.stats().batches, 1, "written in one batch");
    // Awaiting is asking.
    assert_eq!(rt.block_on(wal.append(1, body(51, 10))).unwrap(), Lsn(52));
    assert_eq!(disk.stats().syncs, 2);

    // With the default bound, records nobody awaits are synced on their own.
    let disk = FaultStorage::new();
    let (wal, _) = Wal::open_with_storage(
        Arc::new(disk.clone()) as Arc<dyn Storage>,
        WalOptions::default().lazy_sync(Duration::from_millis(10)),
    )
    .unwrap();
    disk.set_plan(FaultPlan::none());
    for i in 0..20 {
        drop(rt.block_on(wal.submit(1, body(i, 10))).unwrap());
    }
    for _ in 0..400 {
        if wal.synced_lsn() == Lsn(21) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(wal.synced_lsn(), Lsn(21));
    let image = disk.crash();
    drop(wal);
    let (wal, _) = common::open_fault(&image, WalOptions::default()).unwrap();
    assert_eq!(read_all(&wal).len(), 20);
}

#[test]
fn policy_none_syncs_only_when_asked() {
    let rt = runtime();
    let (disk, wal, syncs) = syncs_for(SyncPolicy::None, 20);
    assert_eq!(syncs, 0);
    assert_eq!(wal.synced_lsn(), Lsn(1));
    assert_eq!(read_all(&wal).len(), 20, "acknowledged once written");
    // A crash now loses the unsynced records, but leaves a clean log.
    let (lost, _) = common::open_fault(&disk.crash(), WalOptions::default()).unwrap();
    assert!(read_all(&lost).is_empty());
    rt.block_on(wal.sync()).unwrap();
    assert_eq!(wal.synced_lsn(), Lsn(21));
    assert_eq!(disk.stats().syncs, 1);
    let image = disk.crash();
    drop(wal);
    let (wal, _) = common::open_fault(&image, WalOptions::default()).unwrap();
    assert_eq!(read_all(&wal).len(), 20);
}

#[test]
fn policy_interval_syncs_within_the_interval() {
    let (disk, wal, _) = syncs_for(SyncPolicy::Interval(Duration::from_millis(20)), 20);
    assert_eq!(read_all(&wal).len(), 20);
    // Wait for the writer's timer (bounded; no fixed sleep decides the test).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal.synced_lsn() < Lsn(21) {
        assert!(
            std::time::Instant::now() < deadline,
            "interval sync never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let image = disk.crash();
    drop(wal);
    let (wal, _) = common::open_fault(&image, WalOptions::default()).unwrap();
    assert_eq!(expected(&read_all(&wal)).len(), 20);
}

/// A minimal tracing subscriber that keeps INFO-and-above messages.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut s = format!("{} ", e.metadata().level());
        e.record(&mut Fields(&mut s));
        self.0.lock().unwrap().push(s);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_effective_sync_policy_is_logged_at_open() {
    for (policy, text) in [
        (SyncPolicy::Always, "always"),
        (
            SyncPolicy::Interval(Duration::from_millis(50)),
            "interval(50ms)",
        ),
        (SyncPolicy::None, "none"),
    ] {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let dir = tempfile::tempdir().unwrap();
        let wal = tracing::subscriber::with_default(Capture(Arc::clone(&lines)), || {
            Wal::open(dir.path(), WalOptions::default().sync(policy))
                .unwrap()
                .0
        });
        drop(wal);
        let lines = lines.lock().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("INFO") && l.contains(&format!("sync={text}"))),
            "{lines:?}"
        );
    }
}

#[test]
fn a_directory_reader_reads_beside_a_running_wal() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 0..20 {
        rt.block_on(wal.append(1, body(i, 100))).unwrap();
    }
    // No lock is taken: the WAL stays open.
    let mut reader = WalReader::open(dir.path(), Lsn(5)).unwrap();
    let got: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got.first().unwrap().lsn, Lsn(5));
    assert_eq!(got.len(), 16);
    assert_eq!(&*got[0].body, &body(4, 100)[..]);
    // The log grows (and rotates); the reader follows.
    for i in 20..40 {
        rt.block_on(wal.append(2, body(i, 100))).unwrap();
    }
    let more: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(more.len(), 20);
    assert_eq!(more.last().unwrap().lsn, Lsn(40));
    rt.block_on(wal.close()).unwrap();
    // A cleanly closed log reads to its end.
    let all: Vec<_> = WalReader::open(dir.path(), Lsn::FIRST)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 40);
    assert!(WalReader::open(&dir.path().join("missing"), Lsn::FIRST).is_err());
}

#[test]
fn a_directory_reader_stops_at_a_torn_tail_and_reports_damage_elsewhere() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 0..40 {
        rt.block_on(wal.append(1, body(i, 100))).unwrap();
    }
    let segments = wal.segments();
    rt.block_on(wal.close()).unwrap();
    // Cut the last segment inside its last record: the reader ends quietly
    // before it.
    let last = &segments.last().unwrap().path;
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 56 - 10).unwrap();
    drop(f);
    let got: Vec<_> = WalReader::open(dir.path(), Lsn::FIRST)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 39);
    // A flipped bit in a closed segment is an error naming it.
    let first = &segments[0].path;
    let mut bytes = std::fs::read(first).unwrap();
    bytes[200] ^= 4;
    std::fs::write(first, &bytes).unwrap();
    let err = WalReader::open(dir.path(), Lsn::FIRST)
        .unwrap()
        .find_map(Result::err)
        .expect("the damage is reported");
    assert!(
        matches!(&err, WalError::Corrupt { path, .. } if path == first),
        "{err}"
    );
    assert!(matches!(
        WalReader::open(dir.path(), Lsn(0)),
        Err(WalError::LsnOutOfRange { .. })
    ));
}
