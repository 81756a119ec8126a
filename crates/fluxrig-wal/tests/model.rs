//! Model-based property test: random workloads of concurrent appends,
//! groups, syncs, clean reopens and crashes at random sync points, checked
//! against a reference model (a plain list of acknowledged records).
//!
//! Under `always` the log after a crash is the synced prefix: every
//! acknowledged record, possibly followed by submitted records whose sync
//! finished just before the crash. Under `none` it is a prefix of what was
//! submitted holding at least everything synced before the crash.
//! `FLUXRIG_WAL_LONG=1` runs many more cases.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::{Expected, assert_synced_prefix, body, expected, open_fault, read_all};
use fluxrig_wal::testing::{FaultPlan, FaultStorage};
use fluxrig_wal::{Lsn, SyncPolicy, Wal, WalOptions, verify_storage};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Concurrent appends (body sizes), awaited together.
    Burst(Vec<u16>),
    /// One group of records.
    Group(Vec<u16>),
    /// `Wal::sync`.
    Sync,
    /// Close cleanly and reopen.
    Reopen,
    /// The disk dies at the n-th sync from now, during a burst; reopen the
    /// post-crash image.
    Crash(u64, Vec<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = || prop::collection::vec(0u16..300, 1..12);
    prop_oneof![
        5 => sizes().prop_map(Op::Burst),
        2 => prop::collection::vec(0u16..200, 1..6).prop_map(Op::Group),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => (1u64..8, sizes()).prop_map(|(k, s)| Op::Crash(k, s)),
    ]
}

struct Harness {
    rt: tokio::runtime::Runtime,
    policy: SyncPolicy,
    disk: FaultStorage,
    wal: Option<Wal>,
    /// Acknowledged records.
    model: Vec<Expected>,
    /// Submitted records whose append failed (a crash came first).
    unacked: Vec<Expected>,
    counter: u64,
}

impl Harness {
    fn options(&self) -> WalOptions {
        common::small_segments().sync(self.policy)
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        let (wal, report) = open_fault(&self.disk, self.options()).unwrap();
        let got = expected(&read_all(&wal));
        let mut submitted = self.model.clone();
        submitted.append(&mut self.unacked);
        submitted.sort_by_key(|e| e.lsn);
        if self.policy == SyncPolicy::Always {
            assert_synced_prefix(&got, &self.model, &submitted, "reopen");
        } else {
            assert!(
                got.len() <= submitted.len() && got == submitted[..got.len()],
                "recovered log is not a prefix of what was submitted"
            );
        }
        self.model = got;
        let next = self.model.last().map_or(report.next_lsn, |e| e.lsn.next());
        assert_eq!(wal.next_lsn(), next);
        self.wal = Some(wal);
    }

    /// Appends concurrently; returns whether every append was acknowledged.
    fn burst(&mut self, sizes: &[u16]) -> bool {
        let mut records = Vec::new();
        for &s in sizes {
            self.counter += 1;
            records.push(((self.counter % 7) as u8, body(self.counter, s as usize)));
        }
        let wal = self.wal().clone();
        let results = self.rt.block_on(async move {
            let tasks: Vec<_> = records
                .into_iter()
                .map(|(kind, b)| {
                    let wal = wal.clone();
                    tokio::spawn(async move {
                        match wal.submit(kind, b.clone()).await {
                            Ok(p) => {
                                let lsn = p.lsn();
                                (Some(lsn), p.await.is_ok(), kind, b)
                            }
                            Err(_) => (None, false, kind, b),
                        }
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let mut all_ok = true;
        let mut acked: Vec<Expected> = Vec::new();
        for (lsn, ok, kind, b) in results {
            match (lsn, ok) {
                (Some(lsn), true) => acked.push(Expected { lsn, kind, body: b }),
                (Some(lsn), false) => {
                    all_ok = false;
                    self.unacked.push(Expected { lsn, kind, body: b });
                }
                (None, _) => all_ok = false,
            }
        }
        acked.sort_by_key(|e| e.lsn);
        self.model.extend(acked);
        all_ok
    }

    fn group(&mut self, sizes: &[u16]) {
        let records: Vec<(u8, Vec<u8>)> = sizes
            .iter()
            .map(|&s| {
                self.counter += 1;
                (42, body(self.counter, s as usize))
            })
            .collect();
        let (first, last) = self
            .rt
            .block_on(self.wal().append_group(records.clone()))
            .unwrap();
        assert_eq!(last.get() - first.get() + 1, records.len() as u64);
        for (i, (kind, b)) in records.into_iter().enumerate() {
            self.model.push(Expected {
                lsn: Lsn(first.get() + i as u64),
                kind,
                body: b,
            });
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Burst(sizes) => assert!(self.burst(sizes)),
            Op::Group(sizes) => self.group(sizes),
            Op::Sync => {
                self.rt.block_on(self.wal().sync()).unwrap();
                assert_eq!(self.wal().synced_lsn(), self.wal().next_lsn());
            }
            Op::Reopen => {
                let wal = self.wal.take().unwrap();
                self.rt.block_on(wal.close()).unwrap();
                self.reopen();
            }
            Op::Crash(k, sizes) => {
                self.disk.set_plan(FaultPlan::none().crash_at_sync(*k));
                self.burst(sizes);
                let synced = self.wal().synced_lsn();
                let image = self.disk.crash();
                self.wal = None;
                self.disk = image;
                self.reopen();
                // Everything synced before the crash survived.
                let next = self.model.last().map_or(1, |e| e.lsn.get() + 1);
                assert!(next >= synced.get(), "lost synced records below {synced}");
            }
        }
    }
}

fn cases() -> u32 {
    if std::env::var_os("FLUXRIG_WAL_LONG").is_some() {
        2000
    } else {
        40
    }
}

fn check(policy: SyncPolicy, ops: &[Op]) {
    let disk = FaultStorage::new();
    let mut h = Harness {
        rt: common::runtime(),
        policy,
        wal: None,
        disk,
        model: Vec::new(),
        unacked: Vec::new(),
        counter: 0,
    };
    h.reopen();
    for op in ops {
        h.run(op);
    }
    let wal = h.wal.take().unwrap();
    h.rt.block_on(wal.close()).unwrap();
    h.reopen();
    h.wal = None;
    verify_storage(&h.disk).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn always_recovers_exactly_the_acknowledged_records(ops in prop::collection::vec(op(), 1..25)) {
        check(SyncPolicy::Always, &ops);
    }

    #[test]
    fn none_recovers_a_prefix_holding_everything_synced(ops in prop::collection::vec(op(), 1..25)) {
        check(SyncPolicy::None, &ops);
    }
}
