//! A destination that is down while clients keep posting: `http_in →
//! http_out` with a pending file, a real HTTP peer (Python) that comes up
//! late, real sockets. Nothing accepted is lost or doubled, and it arrives
//! in order; under the `reject` policy a full pending file makes `http_in`
//! refuse at once instead of waiting.
//!
//! The outage lasts 5 s by default; `FLUXRIG_LONG_TESTS=1` makes it the
//! 60 s of the durability issue.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxrig_gear::CheckContext;
use fluxrig_rack::{Rack, RackHandle, RackOptions};
use fluxrig_scenario::Scenario;
use fluxrig_test_support::ChildGuard;

/// Clients posting at once in the outage test.
const CLIENTS: u64 = 16;

fn scenario(dir: &Path, listen: u16, dest: u16, pending: &str) -> Scenario {
    let text = format!(
        "meta: {{name: outage, version: 1}}
gears:
  - {{name: ingress, type: http_in, config: {{listen: '127.0.0.1:{listen}', path: /in, accept_timeout: 200ms}}}}
  - {{name: out, type: http_out, config: {{url: 'http://127.0.0.1:{dest}/in', backoff: 10ms, max_backoff: 200ms, pending: {pending}}}}}
wires:
  - {{from: ingress.out, to: out.in, capacity: 16}}
"
    );
    let ctx = CheckContext {
        base_dir: dir.to_path_buf(),
        data_dir: dir.join("data"),
    };
    Scenario::from_str(&text, &dir.join("s.yaml"), &fluxrig_gears::find, &ctx).unwrap()
}

fn start(
    s: &Scenario,
    dir: &Path,
) -> (
    RackHandle,
    tokio::task::JoinHandle<Vec<fluxrig_rack::GearStatus>>,
) {
    let rack = Rack::build(
        s,
        RackOptions {
            data_dir: dir.join("data"),
            drain_timeout: Duration::from_secs(30),
            compact_every: None,
            ..RackOptions::default()
        },
    )
    .unwrap();
    let handle = rack.handle();
    (handle, tokio::spawn(rack.run()))
}

/// Starts the destination on `port`, logging what it receives to `log`.
fn destination(port: u16, log: &Path) -> ChildGuard {
    let mut cmd = fluxrig_test_support::python_script("http_sink.py");
    cmd.arg("--log")
        .arg(log)
        .arg("--port")
        .arg(port.to_string());
    ChildGuard::spawn_and_wait_for(cmd, "listening ").0
}

/// `(client, seq)` of every request the destination received, in order
/// (complete lines only: the destination may be writing the last one).
fn received(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            let body: serde_json::Value =
                serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
            (
                body["client"].as_u64().unwrap(),
                body["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn post(http: &reqwest::Client, url: &str, client: u64, seq: u64) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", format!("{client}-{seq}"))
        .body(format!("{{\"client\": {client}, \"seq\": {seq}}}"))
        .send()
        .await
        .unwrap()
}

/// Waits until the destination has `n` messages. The backlog drains at
/// the destination's pace, so what fails is a drain that stops: no new
/// message for `stall` (a message lost, or a hang), not a slow one.
async fn wait_for_lines(log: &Path, n: usize, stall: Duration) {
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        let got = received(log).len();
        if got >= n {
            return;
        }
        if got > seen {
            (seen, since) = (got, Instant::now());
        }
        assert!(
            since.elapsed() < stall,
            "the destination got {got} of {n} messages, none new for {stall:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_under_load_gets_every_accepted_message_once_in_order() {
    fluxrig_gears::install_crypto_provider();
    let outage = if std::env::var_os("FLUXRIG_LONG_TESTS").is_some() {
        Duration::from_mins(1)
    } else {
        Duration::from_secs(5)
    };
    let dir = tempfile::tempdir().unwrap();
    let (listen, dest) = (
        fluxrig_test_support::free_port(),
        fluxrig_test_support::free_port(),
    );
    let s = scenario(dir.path(), listen, dest, "{max_bytes: 100000000}");
    let (handle, running) = start(&s, dir.path());
    let url = format!("http://127.0.0.1:{listen}/in");

    // Clients post one request at a time each, each retrying a request
    // until it is accepted (same Idempotency-Key), for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut accepted = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post(&http, &url, c, accepted + 1).await;
                if r.status().as_u16() == 202 {
                    accepted += 1;
                } else {
                    assert_eq!(r.status().as_u16(), 503, "only back-pressure may refuse");
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(outage).await;
    let log = dir.path().join("got.jsonl");
    assert!(received(&log).is_empty());
    // The destination returns while the clients keep posting.
    let _dest = destination(dest, &log);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = BTreeMap::new();
    for (c, t) in clients.into_iter().enumerate() {
        accepted.insert(c as u64, t.await.unwrap());
    }
    let total: u64 = accepted.values().sum();
    assert!(
        total >= 1000,
        "the load was too light to mean anything: {total} messages"
    );
    wait_for_lines(
        &log,
        usize::try_from(total).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    handle.stop().await;
    let summary = running.await.unwrap();

    // Each client's messages arrived once each, in the order it sent them.
    let mut per_client: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (c, seq) in received(&log) {
        per_client.entry(c).or_default().push(seq);
    }
    for (c, n) in &accepted {
        assert_eq!(
            per_client.remove(c).unwrap_or_default(),
            (1..=*n).collect::<Vec<_>>(),
            "client {c}"
        );
    }
    assert!(per_client.is_empty());
    let out = summary.iter().find(|g| g.name == "out").unwrap();
    assert_eq!((out.stats.messages_out, out.stats.errors), (total, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pending_file_under_reject_refuses_at_ingress_and_loses_nothing() {
    fluxrig_gears::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (listen, dest) = (
        fluxrig_test_support::free_port(),
        fluxrig_test_support::free_port(),
    );
    let s = scenario(
        dir.path(),
        listen,
        dest,
        "{max_bytes: 20000, when_full: reject}",
    );
    let (handle, running) = start(&s, dir.path());
    let url = format!("http://127.0.0.1:{listen}/in");
    let http = reqwest::Client::new();

    // Posting into a down destination fills the pending file; then
    // requests are refused at once, with Retry-After.
    let mut accepted = 0;
    let refused = loop {
        let t = Instant::now();
        let r = post(&http, &url, 0, accepted + 1).await;
        match r.status().as_u16() {
            202 => accepted += 1,
            503 => break (r, t.elapsed()),
            other => panic!("unexpected status {other}"),
        }
        assert!(accepted < 10_000, "never refused");
    };
    let (r, took) = refused;
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "a destination is full; retry later");
    assert!(
        took < Duration::from_millis(200),
        "refused without waiting for accept_timeout (took {took:?})"
    );
    // Still refused, and counted.
    for _ in 0..5 {
        assert_eq!(post(&http, &url, 0, accepted + 1).await.status(), 503);
    }
    let ingress = handle
        .status()
        .into_iter()
        .find(|g| g.name == "ingress")
        .unwrap();
    assert!(
        ingress.stats.rejected >= 6,
        "rejected {}",
        ingress.stats.rejected
    );
    assert!(
        accepted > 20,
        "the file held only {accepted} messages before refusing"
    );

    // The destination returns: everything accepted arrives, and new
    // requests are accepted again once the file has drained.
    let log = dir.path().join("got.jsonl");
    let _dest = destination(dest, &log);
    wait_for_lines(
        &log,
        usize::try_from(accepted).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if post(&http, &url, 0, accepted + 1).await.status() == 202 {
            accepted += 1;
            break;
        }
        assert!(Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_lines(
        &log,
        usize::try_from(accepted).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    handle.stop().await;
    running.await.unwrap();
    let got: Vec<u64> = received(&log).into_iter().map(|(_, s)| s).collect();
    assert_eq!(got, (1..=accepted).collect::<Vec<_>>());
}
