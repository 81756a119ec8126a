//! Memory per vault entry: parks N distinct test PANs (format-preserving
//! tokens, as the example switch's coat check does) and prints the growth
//! of the process's resident memory divided by N (docs/BENCHMARKS.md,
//! "Coat check: vault memory per entry").
//!
//! usage: cargo run --release -p fluxrig-vault --example entry_memory [N]

use std::time::Duration;

use fluxrig_vault::{ParkOptions, Vault, WhenFull, now_ns};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(500_000);
    let dir = std::env::temp_dir().join(format!("fluxrig-entry-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let vault = Vault::open(&dir)?;
    let before = rss_kib();
    let now = now_ns();
    for i in 0..n {
        // A 16-digit test PAN under the 411111 test BIN (not Luhn-checked:
        // the vault does not care).
        let pan = format!("411111{i:010}");
        let opts = ParkOptions {
            ttl: Duration::from_mins(5),
            format_preserving: Some(&pan),
            label: "park:card.pan",
            max_entries: usize::MAX,
            when_full: WhenFull::Reject,
        };
        vault.park(pan.as_bytes(), &opts, now)?;
    }
    let after = rss_kib();
    println!(
        "entries={} rss_before_kib={before} rss_after_kib={after} bytes_per_entry={}",
        vault.len(),
        (after.saturating_sub(before) * 1024) / n.max(1)
    );
    drop(vault);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
