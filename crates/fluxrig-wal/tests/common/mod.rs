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

/// What a workload did: the records acknowledged, and every record that
/// got an LSN (acknowledged or not), both in LSN order.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: Vec<Expected>,
    pub submitted: Vec<Expected>,
    pub err: Option<WalError>,
}

/// Checks that `got` (a recovered log) holds every acknowledged record and
/// nothing but a prefix of what was submitted: the synced prefix. A record
/// may be durable without having been acknowledged (its sync finished, the
/// crash came before the answer), never the reverse.
pub fn assert_synced_prefix(
    got: &[Expected],
    acked: &[Expected],
    submitted: &[Expected],
    context: &str,
) {
    assert!(
        got.len() >= acked.len() && got[..acked.len()] == *acked,
        "{context}: an acknowledged record is missing or different (recovered {} records, {} acknowledged)",
        got.len(),
        acked.len()
    );
    assert!(
        got.len() <= submitted.len() && got == &submitted[..got.len()],
        "{context}: the recovered log is not a prefix of what was submitted"
    );
}

/// Appends `bursts` of concurrent records (and a group every fourth burst),
/// awaiting each burst, stopping at the first failure (the WAL is poisoned
/// after it).
pub async fn bursty_workload(wal: &Wal, seed: u64, bursts: usize) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
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
                Err(e) => {
                    out.err = Some(e);
                    break;
                }
            }
        }
        if burst % 4 == 3 && out.err.is_none() {
            let group: Vec<(u8, Vec<u8>)> = (0..3)
                .map(|j| {
                    counter += 1;
                    (9, body(counter, 10 + j))
                })
                .collect();
            match wal.submit_group(group.clone()).await {
                Ok(p) => pending.push((p, group)),
                Err(e) => out.err = Some(e),
            }
        }
        for (p, records) in pending {
            let first = p.lsn();
            let expected: Vec<Expected> = records
                .into_iter()
                .enumerate()
                .map(|(i, (kind, body))| Expected {
                    lsn: Lsn(first.get() + i as u64),
                    kind,
                    body,
                })
                .collect();
            out.submitted.extend(expected.iter().cloned());
            match p.await {
                Ok(_) => out.acked.extend(expected),
                Err(e) => {
                    out.err.get_or_insert(e);
                }
            }
        }
        if out.err.is_some() {
            break;
        }
    }
    out
}
