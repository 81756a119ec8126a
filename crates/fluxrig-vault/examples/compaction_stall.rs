//! How long parks wait while the vault compacts its log.
//!
//! Parks N distinct test PANs (format-preserving, 5-minute TTL) four times
//! each, so the log holds four records per live entry and the next sweep
//! compacts it. That sweep runs on one thread while another parks one
//! opaque value after another; prints the sweep's duration, how many parks
//! went through meanwhile and the longest one.
//!
//! ```sh
//! cargo run --release -p fluxrig-vault --example compaction_stall -- 1000000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxrig_vault::{ParkOptions, Vault, WhenFull};

fn opts(pan: Option<&str>) -> ParkOptions<'_> {
    ParkOptions {
        ttl: Duration::from_mins(5),
        format_preserving: pan,
        label: "card.pan",
        max_entries: 10_000_000,
        when_full: WhenFull::Reject,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|e| format!("entries: `{a}` is not a count ({e})"))?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let vault = Arc::new(Vault::open(dir.path())?);
    for round in 0..4 {
        for i in 0..n {
            // 16-digit test PANs under a test BIN.
            let pan = format!("411111{i:010}");
            vault.park(pan.as_bytes(), &opts(Some(&pan)), round)?;
        }
    }
    vault.sync()?;
    let log_len = || std::fs::metadata(dir.path().join("entries.log")).map_or(0, |m| m.len());
    let log = log_len();

    let stop = Arc::new(AtomicBool::new(false));
    let parker = {
        let (vault, stop) = (Arc::clone(&vault), Arc::clone(&stop));
        std::thread::spawn(
            move || -> Result<(u64, Duration), fluxrig_vault::VaultError> {
                let (mut count, mut longest) = (0u64, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    vault.park(&count.to_be_bytes(), &opts(None), 1_000_000_000)?;
                    longest = longest.max(t.elapsed());
                    count += 1;
                }
                Ok((count, longest))
            },
        )
    };
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let swept = vault.sweep(1_000_000_000);
    let sweep = t.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let parked = parker.join().map_err(|_| "the parking thread panicked")?;
    swept?;
    let (parks, longest) = parked?;
    println!(
        "entries={n} log_mb={} compacted_mb={} sweep_ms={:.0} parks_during={parks} longest_park_ms={:.1}",
        log / 1_000_000,
        log_len() / 1_000_000,
        sweep.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3,
    );
    Ok(())
}
