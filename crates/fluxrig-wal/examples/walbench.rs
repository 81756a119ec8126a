//! WAL load tool: the disk's own `write`+`fdatasync` latency and sequential
//! bandwidth, then WAL appends of 256-byte records under `always` with 1,
//! 64 and 4,096 appends in flight — all in one run, repeated, medians
//! reported (the machine is shared and noisy).
//!
//! ```sh
//! cargo run --release -p fluxrig-wal --example walbench -- --seconds 5 --runs 3
//! ```
//!
//! Two ways of keeping N appends in flight are measured:
//!
//! - `tasks`: N Tokio tasks, each appending and awaiting in a loop (like N
//!   connections, each waiting for its record before answering);
//! - `window`: one task that keeps N `submit`s outstanding and awaits the
//!   oldest (like a gear pipelining its input).
//!
//! Each WAL measurement starts with a one-second warm-up (spawning thousands
//! of tasks, first allocations) whose appends are not counted; an append is
//! counted when it started after the warm-up. Latency is from the call to
//! `append`/`submit` until the record is durable.
//!
//! Options: `--dir DIR` (where to write; default the system temp dir, which
//! should be on the disk under test), `--seconds N` per measurement,
//! `--runs N`, `--inflight 1,64,4096`, `--drivers tasks,window`.
//! `WALBENCH_DEBUG=1` prints batch and sync counts per measurement.
//!
//! Criterion does not fit this measurement: what matters is throughput and
//! the latency distribution under a fixed number of appends in flight for
//! seconds at a time, not the mean time of one call.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)]

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxrig_wal::{RECORD_HEADER_LEN, SyncPolicy, Wal, WalOptions};
use hdrhistogram::Histogram;

const BODY: usize = 256;
const FRAME: usize = BODY + RECORD_HEADER_LEN;
/// Appends before this are not measured.
const WARM_UP: Duration = Duration::from_secs(1);

struct Args {
    dir: PathBuf,
    seconds: f64,
    runs: usize,
    inflight: Vec<usize>,
    drivers: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir(),
        seconds: 5.0,
        runs: 3,
        inflight: vec![1, 64, 4096],
        drivers: vec!["tasks".into(), "window".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = value.into(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--runs" => a.runs = value.parse().unwrap(),
            "--inflight" => a.inflight = value.split(',').map(|v| v.parse().unwrap()).collect(),
            "--drivers" => a.drivers = value.split(',').map(String::from).collect(),
            _ => panic!("unknown option {flag}"),
        }
    }
    a
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 2).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// `write` of one framed record's worth at the end of a file, then
/// `fdatasync`: what one un-batched durable append costs.
fn disk_sync_latency(dir: &Path, seconds: f64) -> Histogram<u64> {
    let path = dir.join("fsync-probe");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let buf = vec![0x5a; FRAME];
    let mut h = histogram();
    let mut offset = 0;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let t = Instant::now();
        f.write_all_at(&buf, offset).unwrap();
        f.sync_data().unwrap();
        h.saturating_record(t.elapsed().as_nanos() as u64);
        offset += buf.len() as u64;
    }
    std::fs::remove_file(path).unwrap();
    h
}

/// Sequential write bandwidth: 1 MiB writes then one `fdatasync`, bytes
/// per second of the whole.
fn disk_bandwidth(dir: &Path, bytes: usize) -> f64 {
    let path = dir.join("bandwidth-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..bytes / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.sync_data().unwrap();
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    bytes as f64 / secs
}

struct WalResult {
    records_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// N tasks, each appending and awaiting in a loop.
async fn drive_tasks(
    wal: &Wal,
    inflight: usize,
    stop: &Arc<AtomicBool>,
    measuring: &Arc<AtomicBool>,
) -> (Histogram<u64>, u64) {
    let body = bytes::Bytes::from(vec![0x42u8; BODY]);
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let wal = wal.clone();
            let stop = Arc::clone(stop);
            let measuring = Arc::clone(measuring);
            let body = body.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let measured = measuring.load(Ordering::Relaxed);
                    let t = Instant::now();
                    wal.append(1, body.clone()).await.unwrap();
                    if measured {
                        h.saturating_record(t.elapsed().as_nanos() as u64);
                        n += 1;
                    }
                }
                (h, n)
            })
        })
        .collect();
    let mut total = histogram();
    let mut count = 0;
    for t in tasks {
        let (h, n) = t.await.unwrap();
        total.add(&h).unwrap();
        count += n;
    }
    (total, count)
}

/// One task keeping N submits outstanding, awaiting the oldest (appends
/// complete in LSN order, so the oldest is always the next to finish).
async fn drive_window(
    wal: &Wal,
    inflight: usize,
    stop: &Arc<AtomicBool>,
    measuring: &Arc<AtomicBool>,
) -> (Histogram<u64>, u64) {
    let body = bytes::Bytes::from(vec![0x42u8; BODY]);
    let mut window = VecDeque::with_capacity(inflight);
    let mut h = histogram();
    let mut n = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while !stopping && window.len() < inflight {
            let measured = measuring.load(Ordering::Relaxed);
            let t = Instant::now();
            let p = wal.submit(1, body.clone()).await.unwrap();
            window.push_back((t, measured, p));
        }
        let Some((t, measured, p)) = window.pop_front() else {
            break;
        };
        p.await.unwrap();
        if measured {
            h.saturating_record(t.elapsed().as_nanos() as u64);
            n += 1;
        }
    }
    (h, n)
}

fn wal_run(dir: &Path, driver: &str, inflight: usize, seconds: f64) -> WalResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let wal_dir = tempfile::tempdir_in(dir).unwrap();
    let opts = WalOptions::default().sync(SyncPolicy::Always);
    let (wal, _) = Wal::open(wal_dir.path(), opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let (hist, count, elapsed) = rt.block_on(async {
        let timer = tokio::task::spawn_blocking({
            let stop = Arc::clone(&stop);
            let measuring = Arc::clone(&measuring);
            move || {
                std::thread::sleep(WARM_UP);
                let started = Instant::now();
                measuring.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs_f64(seconds));
                stop.store(true, Ordering::Relaxed);
                started
            }
        });
        let (h, n) = match driver {
            "tasks" => drive_tasks(&wal, inflight, &stop, &measuring).await,
            "window" => drive_window(&wal, inflight, &stop, &measuring).await,
            other => panic!("unknown driver {other}"),
        };
        let started = timer.await.unwrap();
        (h, n, started.elapsed().as_secs_f64())
    });
    if std::env::var_os("WALBENCH_DEBUG").is_some() {
        let st = wal.stats();
        println!(
            "  debug: p90 {:.2} p99.9 {:.2} max {:.2} ms; {} batches, {:.0} records/batch, {} syncs, {:.0} records/sync, mean fdatasync {:.2} ms",
            ms(&hist, 0.9),
            ms(&hist, 0.999),
            hist.max() as f64 / 1e6,
            st.batches,
            st.records as f64 / st.batches as f64,
            st.syncs,
            st.records as f64 / st.syncs as f64,
            st.sync_time.as_secs_f64() * 1e3 / st.syncs as f64
        );
    }
    rt.block_on(wal.close()).unwrap();
    WalResult {
        records_per_s: count as f64 / elapsed,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn main() {
    let a = args();
    let probe_dir = tempfile::tempdir_in(&a.dir).unwrap();
    let (mut sync_p50, mut sync_p99, mut sync_rate, mut bw) = (vec![], vec![], vec![], vec![]);
    let cases: Vec<(String, usize)> = a
        .drivers
        .iter()
        .flat_map(|d| a.inflight.iter().map(move |&n| (d.clone(), n)))
        .collect();
    let mut results: Vec<Vec<WalResult>> = cases.iter().map(|_| Vec::new()).collect();
    println!(
        "dir {} | {} s per measurement | {} runs",
        a.dir.display(),
        a.seconds,
        a.runs
    );
    for run in 1..=a.runs {
        let h = disk_sync_latency(probe_dir.path(), a.seconds);
        let b = disk_bandwidth(probe_dir.path(), 256 << 20) / 1e6;
        let rate = h.len() as f64 / a.seconds;
        println!(
            "run {run}: disk write+fdatasync p50 {:.2} ms p99 {:.2} ms ({rate:.0}/s), sequential {b:.0} MB/s",
            ms(&h, 0.5),
            ms(&h, 0.99),
        );
        sync_p50.push(ms(&h, 0.5));
        sync_p99.push(ms(&h, 0.99));
        sync_rate.push(rate);
        bw.push(b);
        for (i, (driver, n)) in cases.iter().enumerate() {
            let r = wal_run(&a.dir, driver, *n, a.seconds);
            println!(
                "run {run}: WAL always, {driver:>6}, {n:>5} in flight: {:>9.0} records/s, {:>6.1} MB/s on disk, p50 {:.2} ms, p99 {:.2} ms",
                r.records_per_s,
                r.records_per_s * FRAME as f64 / 1e6,
                r.p50_ms,
                r.p99_ms
            );
            results[i].push(r);
        }
    }
    let disk_p99 = median(sync_p99.clone());
    let disk_bw = median(bw.clone());
    let disk_rate = median(sync_rate);
    println!();
    println!("## medians of {} runs", a.runs);
    println!();
    println!("| measurement | records/s | MB/s payload | MB/s on disk | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| disk: write {FRAME} B + `fdatasync`, one at a time | {disk_rate:.0} | {:.2} | {:.2} | {:.2} | {disk_p99:.2} |",
        disk_rate * BODY as f64 / 1e6,
        disk_rate * FRAME as f64 / 1e6,
        median(sync_p50),
    );
    println!("| disk: sequential write, 1 MiB writes + `fdatasync` | | | {disk_bw:.0} | | |");
    let need_rate = 200_000f64.min(0.5 * disk_bw * 1e6 / FRAME as f64);
    let mut verdicts = Vec::new();
    for (i, (driver, n)) in cases.iter().enumerate() {
        let rs = &results[i];
        let rate = median(rs.iter().map(|r| r.records_per_s).collect());
        let p50 = median(rs.iter().map(|r| r.p50_ms).collect());
        let p99 = median(rs.iter().map(|r| r.p99_ms).collect());
        println!(
            "| WAL `always`, {driver}, {n} in flight | {rate:.0} | {:.1} | {:.1} | {p50:.2} | {p99:.2} |",
            rate * BODY as f64 / 1e6,
            rate * FRAME as f64 / 1e6,
        );
        if *n >= 4096 {
            verdicts.push(format!(
                "{driver}, {n} in flight: {rate:.0} records/s vs ≥ {need_rate:.0} → {}; p99 {p99:.2} ms vs ≤ {:.2} ms → {}",
                if rate >= need_rate { "met" } else { "MISSED" },
                2.0 * disk_p99,
                if p99 <= 2.0 * disk_p99 { "met" } else { "MISSED" },
            ));
        }
    }
    println!();
    println!(
        "targets: throughput ≥ min(200,000 records/s, 50% of {disk_bw:.0} MB/s); p99 ≤ 2 × disk fdatasync p99"
    );
    for v in verdicts {
        println!("  {v}");
    }
}
