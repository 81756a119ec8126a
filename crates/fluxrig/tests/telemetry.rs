//! Telemetry of a running Rack as an operator sees it: `/metrics` scraped
//! and parsed, `fluxrig tail` on a port, `fluxrig top --once`.

#![allow(clippy::unwrap_used)]
// Counters are integers carried as f64 by the text format: exact.
#![allow(clippy::float_cmp)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxrig_test_support::free_port;

fn bin() -> String {
    env!("CARGO_BIN_EXE_fluxrig").to_owned()
}

/// A `fluxrig run` child, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(dir: &Path, scenario: &str, extra: &[&str]) -> Running {
    run_logging(dir, scenario, extra, "warn", Stdio::null())
}

fn run_logging(dir: &Path, scenario: &str, extra: &[&str], level: &str, log: Stdio) -> Running {
    std::fs::write(dir.join("s.yaml"), scenario).unwrap();
    let child = Command::new(bin())
        .current_dir(dir)
        .args(["run", "s.yaml", "--data", "state", "--quiet"])
        .args(extra)
        .env("FLUXRIG_LOG", level)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

/// One sample: metric name with its labels → value.
type Samples = HashMap<String, f64>;

/// Parses the Prometheus text format (what a scraper does).
fn parse(text: &str) -> Samples {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        out.insert(key.to_owned(), value.parse::<f64>().unwrap());
    }
    out
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("text/plain; version=0.0.4"),
        "{head}"
    );
    Some(body.to_owned())
}

const COUNTED: &str = "meta: {name: counted, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 2500}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: file_out, config: {path: out.jsonl, format: jsonl}}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

#[test]
fn metrics_count_exactly_the_messages_processed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _rack = run(
        dir.path(),
        COUNTED,
        &["--metrics-listen", &addr, "--for", "6s"],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        if let Some(body) = scrape(port) {
            let s = parse(&body);
            if s.get("fluxrig_gear_messages_out_total{gear=\"sink\"}") == Some(&2500.0) {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "the sink never reported 2500");
        std::thread::sleep(Duration::from_millis(100));
    };
    let written = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(written, 2500);
    let get = |k: &str| *samples.get(k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(
        get("fluxrig_gear_messages_out_total{gear=\"source\"}"),
        2500.0
    );
    assert_eq!(
        get("fluxrig_gear_messages_in_total{gear=\"enrich\"}"),
        2500.0
    );
    assert_eq!(
        get("fluxrig_gear_messages_out_total{gear=\"enrich\"}"),
        2500.0
    );
    assert_eq!(get("fluxrig_gear_messages_in_total{gear=\"sink\"}"), 2500.0);
    assert_eq!(
        get("fluxrig_port_messages_out_total{gear=\"enrich\",port=\"out\"}"),
        2500.0
    );
    assert_eq!(
        get("fluxrig_port_messages_out_total{gear=\"enrich\",port=\"error\"}"),
        0.0
    );
    for g in ["source", "enrich", "sink"] {
        assert_eq!(
            get(&format!("fluxrig_gear_errors_total{{gear=\"{g}\"}}")),
            0.0
        );
    }
    // Every message emitted by enrich had a previous hop: one latency each.
    assert_eq!(
        get("fluxrig_gear_latency_seconds_count{gear=\"enrich\"}"),
        2500.0
    );
    assert_eq!(
        get("fluxrig_gear_latency_seconds_bucket{gear=\"enrich\",le=\"+Inf\"}"),
        2500.0
    );
    // The WAL synced (policy `always`) and its histogram is cumulative.
    let syncs = get("fluxrig_wal_fsync_seconds_count");
    assert!(syncs > 0.0);
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("fluxrig_wal_fsync_seconds_bucket{le=\"")?;
            let le = le.strip_suffix("\"}")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 10);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, syncs));
    // Records: ingress of each message plus the sink's deliveries.
    assert!(get("fluxrig_wal_records_total") >= 2500.0);
    assert!(get("fluxrig_wal_batch_records_count") > 0.0);
}

const CARDS: &str = "meta: {name: cards, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 1000000, interval: 2ms}}
  - {name: enrich, type: map, config: {source: '.card = \"4111111111111111\"'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

fn wait_for_admin(dir: &Path) {
    let file = dir.join("state/admin.addr");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(Instant::now() < deadline, "no admin.addr");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tail_prints_live_messages_masked_and_stops_after_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("rack.log")).unwrap();
    let rack = run_logging(
        dir.path(),
        CARDS,
        &["--for", "20s", "--log-format", "json"],
        "debug",
        Stdio::from(log),
    );
    wait_for_admin(dir.path());
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["tail", "enrich.out", "--count", "5", "--data", "state"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(!text.contains("4111111111111111"), "{text}");
    for l in &lines {
        assert_eq!(l["data"]["card"], "411111******1111", "{l}");
        assert!(l["data"]["seq"].is_number(), "{l}");
    }
    // Consecutive messages of one wire, in order.
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| l["data"]["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // A port that does not exist: exit 2, naming the ports there are.
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["tail", "enrich.nope", "--data", "state"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no output port `nope`") && err.contains("out"),
        "{err}"
    );

    // `fluxrig top --once` renders the same Rack.
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["top", "--once", "--interval", "500ms", "--data", "state"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8(out.stdout).unwrap();
    assert!(screen.contains("rack cards"), "{screen}");
    assert!(screen.contains("source.out -> enrich.in"), "{screen}");

    // No card number in the metrics or the logs (debug level, JSON).
    let addr = std::fs::read_to_string(dir.path().join("state/admin.addr")).unwrap();
    let port: u16 = addr.trim().rsplit_once(':').unwrap().1.parse().unwrap();
    let metrics = scrape(port).unwrap();
    assert!(metrics.contains("fluxrig_gear_messages_out_total{gear=\"enrich\"}"));
    assert!(!metrics.contains("4111111111111111"));
    drop(rack);
    let logs = std::fs::read_to_string(dir.path().join("rack.log")).unwrap();
    assert!(logs.contains("admin endpoint"), "{logs}");
    assert!(!logs.contains("4111111111111111"));
    assert!(!logs.contains("111111111111"));
}

#[test]
fn tail_without_a_running_rack_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["tail", "a.out", "--data", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running Rack uses nowhere"), "{err}");
}
