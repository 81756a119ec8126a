//! Live scenario swap under load, as a user runs it: `fluxrig run --watch`
//! with HTTP clients posting continuously while the `map` program changes
//! three times.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fluxrig_test_support::{ChildGuard, free_port};

fn scenario(port: u16, tag: &str) -> String {
    format!(
        "meta: {{name: swap, version: 1}}
gears:
  - {{name: ingress, type: http_in, config: {{listen: '127.0.0.1:{port}', path: /in}}}}
  - {{name: stamp, type: map, config: {{source: '.v = \"{tag}\"'}}}}
  - {{name: sink, type: file_out, config: {{path: out.jsonl}}}}
wires:
  - {{from: ingress.out, to: stamp.in}}
  - {{from: stamp.out, to: sink.in}}
"
    )
}

/// Replaces the file in one step, as editors that save atomically do.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_map_under_http_load_loses_nothing_and_switches_once_per_swap() {
    fluxrig_gears::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("s.yaml");
    write_atomically(&file, &scenario(port, "v1"));
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("fluxrig"));
    cmd.current_dir(dir.path())
        .args(["run", "s.yaml", "--watch", "--quiet", "--data", "state"]);
    cmd.env("FLUXRIG_LOG", "info")
        .stderr(std::fs::File::create(dir.path().join("rack.log")).unwrap());
    let mut rack = ChildGuard(cmd.spawn().unwrap());

    let url = format!("http://127.0.0.1:{port}/in");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..100 {
        if client.post(&url).body("warm-up").send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8_u32 {
        let (client, url, stop) = (client.clone(), url.clone(), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let (mut accepted, mut failed) = (Vec::new(), Vec::new());
            let mut n = 0_u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!("{{\"client\": {c}, \"n\": {n}}}");
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => accepted.push((c, n)),
                    Ok(r) => failed.push(format!("HTTP {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (accepted, failed)
        }));
    }
    for tag in ["v2", "v3", "v4"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        write_atomically(&file, &scenario(port, tag));
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = BTreeSet::new();
    let mut failed = Vec::new();
    for c in clients {
        let (a, f) = c.await.unwrap();
        accepted.extend(a);
        failed.extend(f);
    }
    let pid = rack.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = rack.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("rack.log")).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}\n{log}",
        failed.len(),
        failed.first()
    );
    assert_eq!(log.matches("scenario change applied").count(), 3, "{log}");

    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keyed: Vec<(u32, u32)> = rows
        .iter()
        .filter(|r| r.get("client").is_some())
        .map(|r| {
            (
                u32::try_from(r["client"].as_u64().unwrap()).unwrap(),
                u32::try_from(r["n"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect();
    let unique: BTreeSet<_> = keyed.iter().copied().collect();
    assert_eq!(unique.len(), keyed.len(), "no message doubled");
    assert_eq!(
        unique, accepted,
        "every accepted request is in the output, nothing else"
    );
    assert!(
        accepted.len() > 200,
        "only {} requests under load",
        accepted.len()
    );
    let mut tags: Vec<&str> = rows
        .iter()
        .filter(|r| r.get("client").is_some())
        .map(|r| r["v"].as_str().unwrap())
        .collect();
    tags.dedup();
    assert_eq!(
        tags,
        ["v1", "v2", "v3", "v4"],
        "the output switches once per swap"
    );
}
