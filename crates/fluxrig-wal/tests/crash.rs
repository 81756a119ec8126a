//! Crash consistency on the fault-injecting storage: crash at every sync
//! point, injected write and sync failures, short writes, a full disk.
//!
//! The invariant everywhere: after a crash and reopen, the log is the synced
//! prefix of what was submitted — every acknowledged record, in order, with
//! its LSN, possibly followed by records whose sync finished just before the
//! crash but whose answer never got out; never a gap, never anything else.
//! After an I/O failure nothing more is acknowledged until the WAL is
//! reopened.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Expected, assert_synced_prefix, bursty_workload, expected, open_fault, read_all, runtime,
    small_segments,
};
use fluxrig_wal::testing::{FaultPlan, FaultStorage};
use fluxrig_wal::{WalError, verify_storage};

/// Reopens a post-crash image and checks it holds the synced prefix, then
/// that a new append survives a clean reopen. Returns the recovered records.
fn check_recovers(
    image: &FaultStorage,
    acked: &[Expected],
    submitted: &[Expected],
    context: &str,
) -> Vec<Expected> {
    let rt = runtime();
    let (wal, report) = open_fault(image, small_segments())
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let got = expected(&read_all(&wal));
    assert_synced_prefix(&got, acked, submitted, context);
    let next = got.last().map_or(report.next_lsn, |e| e.lsn.next());
    assert_eq!(report.next_lsn, next, "{context}: next LSN");
    let lsn = rt.block_on(wal.append(7, &b"after recovery"[..])).unwrap();
    assert_eq!(lsn, next, "{context}: LSNs continue");
    rt.block_on(wal.close()).unwrap();
    let (wal, report) = open_fault(image, small_segments()).unwrap();
    assert!(report.clean_close, "{context}");
    let all = read_all(&wal);
    assert_eq!(all.len(), got.len() + 1, "{context}");
    assert_eq!(&*all.last().unwrap().body, b"after recovery", "{context}");
    drop(wal);
    verify_storage(image).unwrap_or_else(|e| panic!("{context}: verify after recovery: {e}"));
    got
}

#[test]
fn crash_at_every_sync_point_recovers_exactly_the_synced_prefix() {
    let rt = runtime();
    // How many syncs the workload makes (batching varies a little between
    // runs, so go a few beyond).
    let baseline = FaultStorage::new();
    {
        let (wal, _) = open_fault(&baseline, small_segments()).unwrap();
        baseline.set_plan(FaultPlan::none());
        let out = rt.block_on(bursty_workload(&wal, 1, 24));
        assert!(out.err.is_none());
        assert!(out.acked.len() > 60);
        assert!(wal.segments().len() > 5, "the workload rotates segments");
    }
    let syncs = baseline.stats().syncs;
    let mut crashed = 0;
    for k in 1..=syncs + 3 {
        let disk = FaultStorage::new();
        let (wal, _) = open_fault(&disk, small_segments()).unwrap();
        disk.set_plan(FaultPlan::none().crash_at_sync(k));
        let out = rt.block_on(bursty_workload(&wal, 1, 24));
        if disk.stats().crashed {
            crashed += 1;
            let err = out
                .err
                .unwrap_or_else(|| panic!("crash at sync {k} went unnoticed"));
            assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
            // Poisoned: nothing more is accepted.
            assert!(matches!(
                rt.block_on(wal.append(1, &b"x"[..])),
                Err(WalError::Poisoned { .. })
            ));
        }
        let image = disk.crash();
        drop(wal);
        check_recovers(
            &image,
            &out.acked,
            &out.submitted,
            &format!("crash at sync {k}"),
        );
    }
    // Under a loaded machine the runs batch more than the baseline did and
    // make fewer syncs, so not every point exists in every run (54 of 95
    // were reached once under a load average of 5): require most of them
    // and enough that the test cannot pass vacuously.
    assert!(
        crashed * 2 >= syncs && crashed >= 20,
        "only {crashed} of {syncs} crash points were reached"
    );
}

#[test]
fn crash_during_the_first_segment_creation_leaves_a_fresh_log() {
    // Creating the first segment syncs twice: its header, then the directory.
    for k in 1..=2 {
        let disk = FaultStorage::new();
        disk.set_plan(FaultPlan::none().crash_at_sync(k));
        assert!(open_fault(&disk, small_segments()).is_err());
        let image = disk.crash();
        check_recovers(&image, &[], &[], &format!("crash at sync {k} of creation"));
    }
}

/// Runs the workload with a fault plan; checks that the fault poisons the
/// WAL, that nothing more is acknowledged, and that every acknowledged
/// record is there after a power loss, and after a reopen on the same disk
/// (same boot) followed by more appends and a power loss.
fn check_failure(plan: FaultPlan, context: &str) -> bool {
    let rt = runtime();
    let disk = FaultStorage::new();
    let (wal, _) = open_fault(&disk, small_segments()).unwrap();
    disk.set_plan(plan);
    let out = rt.block_on(bursty_workload(&wal, 3, 20));
    let Some(err) = &out.err else {
        return false; // the fault's operation was never reached
    };
    assert!(
        matches!(err, WalError::Poisoned { .. }),
        "{context}: unexpected error {err}"
    );
    assert!(wal.poisoned().is_some(), "{context}");
    for _ in 0..3 {
        assert!(
            matches!(
                rt.block_on(wal.append(1, &b"x"[..])),
                Err(WalError::Poisoned { .. })
            ),
            "{context}: a poisoned WAL must refuse appends"
        );
    }
    assert!(matches!(
        rt.block_on(wal.sync()),
        Err(WalError::Poisoned { .. })
    ));
    drop(wal);
    // Power loss right after the failure.
    let image = disk.crash();
    check_recovers(
        &image,
        &out.acked,
        &out.submitted,
        &format!("{context}, then power loss"),
    );
    // Reopen in the same boot (the page cache survives): the failed batch
    // was cut off, so only records that may have been synced are read back.
    disk.set_plan(FaultPlan::none());
    let (wal, _) = open_fault(&disk, small_segments())
        .unwrap_or_else(|e| panic!("{context}: reopen after the failure: {e}"));
    let got = expected(&read_all(&wal));
    assert_synced_prefix(
        &got,
        &out.acked,
        &out.submitted,
        &format!("{context}: same boot"),
    );
    let more = rt.block_on(bursty_workload(&wal, 4, 4));
    assert!(more.err.is_none(), "{context}");
    let image = disk.crash();
    drop(wal);
    let mut acked = got.clone();
    acked.extend(more.acked);
    let mut submitted = got;
    submitted.extend(more.submitted);
    check_recovers(
        &image,
        &acked,
        &submitted,
        &format!("{context}, reopen, power loss"),
    );
    true
}

#[test]
fn a_failed_fsync_poisons_and_acknowledges_nothing_of_its_group() {
    let mut hit = 0;
    for k in 1..=60 {
        if check_failure(
            FaultPlan::none().fail_sync_at(k),
            &format!("fsync {k} fails"),
        ) {
            hit += 1;
        }
    }
    assert!(hit > 40, "only {hit} sync failures were reached");
}

#[test]
fn a_failed_write_poisons_and_acknowledges_nothing_of_its_group() {
    let mut hit = 0;
    for k in 1..=50 {
        if check_failure(
            FaultPlan::none().fail_write_at(k),
            &format!("write {k} fails"),
        ) {
            hit += 1;
        }
    }
    assert!(hit > 30, "only {hit} write failures were reached");
}

#[test]
fn a_full_disk_poisons_with_a_clear_error_and_loses_nothing_acknowledged() {
    let rt = runtime();
    let disk = FaultStorage::new();
    let (wal, _) = open_fault(&disk, small_segments()).unwrap();
    disk.set_plan(FaultPlan::none().capacity(4000));
    let out = rt.block_on(bursty_workload(&wal, 5, 40));
    let err = out.err.as_ref().expect("the disk fills up");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(err.to_string().contains(".wal"), "names the segment: {err}");
    assert!(!out.acked.is_empty());
    drop(wal);
    check_recovers(&disk.crash(), &out.acked, &out.submitted, "full disk");
}

#[test]
fn short_writes_are_completed() {
    let rt = runtime();
    let disk = FaultStorage::new();
    let (wal, _) = open_fault(&disk, small_segments()).unwrap();
    disk.set_plan(FaultPlan::none().short_writes());
    let out = rt.block_on(bursty_workload(&wal, 6, 20));
    assert!(out.err.is_none());
    let image = disk.crash();
    drop(wal);
    let got = check_recovers(&image, &out.acked, &out.submitted, "short writes");
    assert_eq!(
        got, out.acked,
        "nothing failed: everything was acknowledged"
    );
}
