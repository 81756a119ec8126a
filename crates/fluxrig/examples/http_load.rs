//! HTTP load for the end-to-end benchmark (`docs/BENCHMARKS.md`): keeps
//! `--concurrency` POST requests in flight against a URL for `--seconds`,
//! then prints one JSON line: requests answered 2xx, other answers, errors,
//! 2xx per second, and latency p50/p99/max in microseconds.
//!
//! ```text
//! cargo run --release -p fluxrig --example http_load -- http://127.0.0.1:8080/in 512 10
//! ```

#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080/in".into());
    let concurrency: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .with_context(|| format!("concurrency (argument 2) {s:?} is not a count"))?,
        None => 512,
    };
    let seconds: u64 = match args.get(3) {
        Some(s) => s
            .parse()
            .with_context(|| format!("seconds (argument 3) {s:?} is not a whole number"))?,
        None => 10,
    };
    fluxrig_gears::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("building the HTTP client")?;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let (other, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, stop, next) = (
                http.clone(),
                url.clone(),
                Arc::clone(&stop),
                Arc::clone(&next),
            );
            let (other, errors) = (Arc::clone(&other), Arc::clone(&errors));
            tokio::spawn(async move {
                let mut lat = latency_histogram();
                while !stop.load(Ordering::Relaxed) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(format!(
                            "{{\"id\": {id}, \"amount\": 1250, \"currency\": \"EUR\"}}"
                        ))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                            lat.saturating_record(us.max(1));
                        }
                        Ok(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = latency_histogram();
    for t in tasks {
        let part = t.await.context("a load task panicked")?;
        lat.add(part).context("merging latency histograms")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "concurrency": concurrency,
            "seconds": elapsed,
            "ok": lat.len(),
            "other": other.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed),
            "ok_per_s": (lat.len() as f64 / elapsed).round(),
            "p50_us": lat.value_at_quantile(0.5),
            "p99_us": lat.value_at_quantile(0.99),
            "max_us": lat.max(),
        })
    );
    Ok(())
}

/// Microsecond latencies, 3 significant digits (auto-resizing, so any
/// value fits).
fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
    h.auto(true);
    h
}
