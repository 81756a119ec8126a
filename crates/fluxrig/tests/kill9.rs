//! The kill -9 test: `fluxrig run` with `http_in → file_out` under a steady
//! stream of HTTP posts, killed with SIGKILL at random moments and started
//! again each time. Clients retry (with the same `Idempotency-Key`) every
//! request that got no 2xx. At the end every id that got a 2xx is in the
//! output file exactly once, and nothing else is.
//!
//! `make test` runs 5 kills; `FLUXRIG_LONG_TESTS=1` runs 20.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fluxrig_test_support::{ChildGuard, free_port};

/// Concurrent clients.
const CLIENTS: usize = 128;

fn scenario(port: u16) -> String {
    format!(
        "meta: {{name: kill9, version: 1}}
gears:
  - {{name: ingress, type: http_in, config: {{listen: '127.0.0.1:{port}', path: /in}}}}
  - {{name: sink, type: file_out, config: {{path: out.jsonl}}}}
wires:
  - {{from: ingress.out, to: sink.in}}
"
    )
}

/// A small deterministic generator (xorshift64*), seeded from the clock;
/// the seed is printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn start(dir: &Path, run: usize) -> ChildGuard {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("fluxrig"));
    cmd.current_dir(dir)
        .args(["run", "s.yaml", "--quiet", "--data", "state"])
        .env("FLUXRIG_LOG", "info")
        .stderr(std::fs::File::create(dir.join(format!("rack-{run}.log"))).unwrap());
    ChildGuard(cmd.spawn().unwrap())
}

/// Waits until the Rack's listener accepts connections.
async fn wait_ready(port: u16, dir: &Path, run: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the Rack did not start listening:\n{}",
            std::fs::read_to_string(dir.join(format!("rack-{run}.log"))).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Default)]
struct Load {
    /// Stop taking new ids (retries go on).
    draining: AtomicBool,
    next: AtomicU64,
    retry: Mutex<Vec<u64>>,
    acked: Mutex<Vec<u64>>,
    attempts: AtomicU64,
    failures: AtomicU64,
}

async fn client(load: Arc<Load>, http: reqwest::Client, url: String) {
    loop {
        let retried = load.retry.lock().unwrap().pop();
        let id = match retried {
            Some(id) => id,
            None if load.draining.load(Ordering::Relaxed) => return,
            None => load.next.fetch_add(1, Ordering::Relaxed) + 1,
        };
        load.attempts.fetch_add(1, Ordering::Relaxed);
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", id.to_string())
            .body(format!("{{\"id\": {id}}}"))
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status().is_success()) {
            load.acked.lock().unwrap().push(id);
        } else {
            load.failures.fetch_add(1, Ordering::Relaxed);
            load.retry.lock().unwrap().push(id);
            // The Rack is down or restarting: do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_post_is_in_the_file_exactly_once_across_kill_9() {
    fluxrig_gears::install_crypto_provider();
    let kills = if std::env::var_os("FLUXRIG_LONG_TESTS").is_some() {
        20
    } else {
        5
    };
    let seed = u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    ) | 1;
    println!("kill -9 test: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("s.yaml"), scenario(port)).unwrap();
    let url = format!("http://127.0.0.1:{port}/in");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    let load = Arc::new(Load::default());
    let mut rack = start(dir.path(), 0);
    wait_ready(port, dir.path(), 0).await;
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(Arc::clone(&load), http.clone(), url.clone())))
        .collect();

    for run in 1..=kills {
        // Kill at a random moment of the run: 200 ms to 1.2 s after start.
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
        rack.0.kill().unwrap(); // SIGKILL
        rack.0.wait().unwrap();
        rack = start(dir.path(), run);
        wait_ready(port, dir.path(), run).await;
    }
    let loaded = began.elapsed();

    // Let every request that got no 2xx be retried until it gets one.
    load.draining.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let pid = rack.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = rack.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("rack-{kills}.log"))).unwrap();
    assert!(status.success(), "{status}\n{log}");

    let acked = load.acked.lock().unwrap().clone();
    let sent = load.next.load(Ordering::Relaxed);
    let attempts = load.attempts.load(Ordering::Relaxed);
    println!(
        "{} ids acknowledged, {attempts} attempts ({} without a 2xx), {:.0} acknowledged/s while killing",
        acked.len(),
        load.failures.load(Ordering::Relaxed),
        f64::from(u32::try_from(acked.len()).unwrap()) / loaded.as_secs_f64()
    );
    let mut logs = String::new();
    for run in 0..=kills {
        let l = std::fs::read_to_string(dir.path().join(format!("rack-{run}.log"))).unwrap();
        for line in l
            .lines()
            .filter(|l| l.contains("replay") || l.contains("cut back"))
        {
            logs.push_str(line);
            logs.push('\n');
        }
    }
    println!("{logs}");

    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for (n, line) in out.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("out.jsonl line {}: {e}: {line:?}", n + 1));
        *count.entry(v["id"].as_u64().unwrap()).or_default() += 1;
    }
    let doubled: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} ids in the file more than once, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    let missing: Vec<_> = acked.iter().filter(|id| !count.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged ids not in the file, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Every id sent was retried until acknowledged: the file holds exactly those.
    assert_eq!(acked.len() as u64, sent, "every id was acknowledged once");
    assert_eq!(count.len() as u64, sent, "nothing else is in the file");

    audit_matches(dir.path(), &acked);
}

/// The log survived 5 (or 20) kills intact, and an independent Parquet
/// reader (pyarrow) finds in the audit export one ingress per acknowledged
/// id and one completion per ingress.
fn audit_matches(dir: &Path, acked: &[u64]) {
    let fluxrig = assert_cmd::cargo::cargo_bin("fluxrig");
    let verify = std::process::Command::new(&fluxrig)
        .current_dir(dir)
        .args(["audit", "verify", "--data", "state"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = std::process::Command::new(&fluxrig)
        .current_dir(dir)
        .args(["audit", "export", "--data", "state", "--out", "export"])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "audit export: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let out = fluxrig_test_support::python_script("audit_read.py")
        .arg(dir.join("export/messages.parquet"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit_read.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ingress: BTreeMap<u64, u64> = BTreeMap::new(); // client id -> fluxID
    let mut done: BTreeMap<u64, u32> = BTreeMap::new(); // fluxID -> completions
    for r in v["rows"].as_array().unwrap() {
        let flux_id = r["flux_id"].as_u64().unwrap();
        match r["direction"].as_str().unwrap() {
            "in" => {
                assert_eq!(r["gear"], "ingress");
                let data: serde_json::Value =
                    serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
                let id = data["id"].as_u64().unwrap();
                assert!(
                    ingress.insert(id, flux_id).is_none(),
                    "id {id} entered the Rack twice"
                );
            }
            "done" => {
                assert_eq!(r["gear"], "sink");
                *done.entry(flux_id).or_default() += 1;
            }
            "out" => assert_eq!(r["gear"], "sink"),
            other => panic!("unexpected row direction {other}: {r}"),
        }
    }
    let mut acked = acked.to_vec();
    acked.sort_unstable();
    assert_eq!(ingress.keys().copied().collect::<Vec<_>>(), acked);
    for (id, flux_id) in &ingress {
        assert_eq!(done.get(flux_id), Some(&1), "id {id} completed once");
    }
    assert_eq!(done.len(), ingress.len());
}
