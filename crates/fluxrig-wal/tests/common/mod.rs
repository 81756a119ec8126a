//! Helpers shared by the WAL's integration tests.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::type_complexity,
    unreachable_pub
)]

use std::sync::Arc;

use fluxrig_wal::testing::FaultStorage;
use fluxrig_wal::{Lsn, Record, RecoveryReport, Storage, Wal, WalError, WalOptions};

/// A multi-threaded runtime with two workers, like the Rack's.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// Options that make segments rotate every few records.
pub fn small_segments() -> WalOptions {
    WalOptions::default()
        .segment_size(1024)
        .max_record_size(4096)
        .queue_capacity(64 << 10)
}

/// A deterministic body for record `i`.
pub fn body(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j as u64 * 7) % 251) as u8)
        .collect()
}

/// Every record from the first LSN on.
pub fn read_all(wal: &Wal) -> Vec<Record> {
    wal.read_from(wal.first_lsn())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Opens the WAL on a fault storage.
pub fn open_fault(
    storage: &FaultStorage,
    opts: WalOptions,
) -> Result<(Wal, RecoveryReport), WalError> {
    Wal::open_with_storage(Arc::new(storage.clone()) as Arc<dyn Storage>, opts)
}

/// What a test expects a record to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub lsn: Lsn,
    pub kind: u8,
    pub body: Vec<u8>,
}

impl From<&Record> for Expected {
    fn from(r: &Record) -> Expected {
        Expected {
            lsn: r.lsn,
            kind: r.kind,
            body: r.body.to_vec(),
        }
    }
}

pub fn expected(records: &[Record]) -> Vec<Expected> {
    records.iter().map(Expected::from).collect()
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Appends `bursts` of concurrent records (and a group every fourth burst),
/// awaiting each burst; returns what was acknowledged, stopping at the first
/// failure (the WAL is poisoned after it).
pub async fn bursty_workload(
    wal: &Wal,
    seed: u64,
    bursts: usize,
) -> (Vec<Expected>, Option<WalError>) {
    let mut rng = Rng::new(seed);
    let mut acked = Vec::new();
    let mut counter = 0u64;
    for burst in 0..bursts {
        let mut pending = Vec::new();
        let width = 1 + rng.below(6);
        for _ in 0..width {
            counter += 1;
            let kind = (counter % 5) as u8;
            let b = body(counter, rng.below(200) as usize);
            match wal.submit(kind, b.clone()).await {
                Ok(p) => pending.push((p, vec![(kind, b)])),
                Err(e) => return finish(pending, acked, Some(e)).await,
            }
        }
        if burst % 4 == 3 {
            let group: Vec<(u8, Vec<u8>)> = (0..3)
                .map(|j| {
                    counter += 1;
                    (9, body(counter, 10 + j))
                })
                .collect();
            match wal.submit_group(group.clone()).await {
                Ok(p) => pending.push((p, group)),
                Err(e) => return finish(pending, acked, Some(e)).await,
            }
        }
        let (a, err) = finish(pending, acked, None).await;
        acked = a;
        if err.is_some() {
            return (acked, err);
        }
    }
    (acked, None)
}

async fn finish(
    pending: Vec<(fluxrig_wal::Pending, Vec<(u8, Vec<u8>)>)>,
    mut acked: Vec<Expected>,
    mut err: Option<WalError>,
) -> (Vec<Expected>, Option<WalError>) {
    for (p, records) in pending {
        let first = p.lsn();
        match p.await {
            Ok(_) => {
                for (i, (kind, body)) in records.into_iter().enumerate() {
                    acked.push(Expected {
                        lsn: Lsn(first.get() + i as u64),
                        kind,
                        body,
                    });
                }
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    (acked, err)
}
