//! HTTP load for the end-to-end benchmark (`docs/BENCHMARKS.md`): keeps
//! `--concurrency` POST requests in flight against a URL for `--seconds`,
//! then prints one JSON line: requests answered 2xx, other answers, errors,
//! 2xx per second, and latency p50/p99/max in microseconds.
//!
//! ```text
//! cargo run --release -p fluxrig --example http_load -- http://127.0.0.1:8080/in 512 10
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080/in".into());
    let concurrency: usize = args.get(2).map_or(512, |s| s.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(10, |s| s.parse().unwrap());
    fluxrig_gears::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
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
                let mut lat = hdrhistogram::Histogram::<u64>::new(3).unwrap();
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
                            lat.record(us.max(1)).unwrap();
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
    let mut lat = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        lat.add(t.await.unwrap()).unwrap();
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
}
