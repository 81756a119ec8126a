//! The coat check end to end: the example switch (`examples/payment-switch.yaml`,
//! which parks card data after decoding) with two real issuer simulators.
//!
//! - The scan test: 1,000 distinct Luhn-valid test PANs with track 2 and
//!   PIN blocks go through the switch; then every file under the Rack's data
//!   dir, the Rack's output, the simulators' logs and output, and the audit
//!   archive as `fluxrig audit query` reads it, are searched for each PAN
//!   (as digits, and grouped by 4 with spaces and with dashes), each track
//!   and each PIN block: no hit. Each terminal got its own PAN back in the
//!   response's DE 2, which the issuer echoes: the issuers saw the real PANs.
//! - Key rotation under load: `fluxrig keys rotate` every second during a
//!   10 s load run (every 10 s for 2 minutes with `FLUXRIG_LONG_TESTS=1`)
//!   fails no park or restore.
//!
//! No card value is ever printed: failures name counts and files only.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fluxrig_iso8583::MessageBuilder;
use fluxrig_test_support::{ChildGuard, free_port};
use serde_json::Value as Json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fluxrig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fluxrig"))
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_lines(path: &Path, mti: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|l| l["mti"] == mti)
        .count()
}

struct Switch {
    rack: Option<ChildGuard>,
    _issuers: Vec<ChildGuard>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Switch {
    fn start() -> Switch {
        let dir = tempfile::tempdir().unwrap();
        let mut issuers = Vec::new();
        let mut ports = Vec::new();
        for name in ["a", "b"] {
            let mut cmd = fluxrig();
            cmd.args(["iso8583", "issuer", "--listen", "127.0.0.1:0", "--log"])
                .arg(dir.path().join(format!("issuer-{name}.jsonl")))
                .stderr(
                    std::fs::File::create(dir.path().join(format!("issuer-{name}.err"))).unwrap(),
                );
            let (g, rest) = ChildGuard::spawn_and_wait_for(cmd, "listening on ");
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            ports.push(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
            issuers.push(g);
        }
        let port = free_port();
        let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
        assert!(
            example.contains("type: coatcheck"),
            "the example parks card data"
        );
        let scenario = example
            .replace("127.0.0.1:8583", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9583", &format!("127.0.0.1:{}", ports[0]))
            .replace("127.0.0.1:9584", &format!("127.0.0.1:{}", ports[1]));
        let file = dir.path().join("switch.yaml");
        std::fs::write(&file, scenario).unwrap();
        let rack = fluxrig()
            .arg("run")
            .arg(&file)
            .arg("--data")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(dir.path().join("rack.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("rack.err")).unwrap())
            .spawn()
            .unwrap();
        let rack = ChildGuard(rack);
        wait_until("the switch to listen", Duration::from_mins(1), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        for name in ["a", "b"] {
            let log = dir.path().join(format!("issuer-{name}.jsonl"));
            wait_until("issuer sign-ons", Duration::from_secs(30), || {
                count_lines(&log, "0800") >= 2
            });
        }
        Switch {
            rack: Some(rack),
            _issuers: issuers,
            port,
            dir,
        }
    }

    /// SIGTERM, and wait for the Rack to drain and close its log.
    fn stop(&mut self) {
        if let Some(mut g) = self.rack.take() {
            let pid = g.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if g.0.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = g.0.kill();
        }
    }
}

fn luhn_complete(body: &str) -> String {
    for d in 0..10 {
        let c = format!("{body}{d}");
        let sum: u32 = c
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 {
                    if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                } else {
                    d
                }
            })
            .sum();
        if sum.is_multiple_of(10) {
            return c;
        }
    }
    unreachable!()
}

struct Card {
    pan: String,
    track2: String,
    pin: String,
}

/// `n` distinct test cards, half under 4…, half under 5…, with middle
/// digits spread so tokens and PANs do not share a pattern.
fn cards(n: usize) -> Vec<Card> {
    (0..n)
        .map(|i| {
            let bin = if i % 2 == 0 { "476173" } else { "529999" };
            let mid = (i as u64).wrapping_mul(7_919_393) % 1_000_000_000;
            let pan = luhn_complete(&format!("{bin}{mid:09}"));
            let track2 = format!("{pan}=2912101{:012}", i * 37);
            let pin = format!(
                "{:016X}",
                (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            );
            Card { pan, track2, pin }
        })
        .collect()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Sends every card's 0100 over `conns` connections; returns, per card
/// index, DE 39 and whether DE 2 of the response equals the card's PAN.
fn authorize(port: u16, cards: &[Card], conns: usize) -> Vec<(String, bool)> {
    let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
        .unwrap()
        .unwrap();
    let mut results = vec![(String::new(), false); cards.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                s.spawn(move || {
                    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let terminal = format!("TSCAN{c:03}");
                    let mine: Vec<usize> = (c..cards.len()).step_by(conns).collect();
                    let mut out = Vec::new();
                    for &i in &mine {
                        let card = &cards[i];
                        let (de4, de11, de37) = (
                            format!("{:012}", 1000 + 10 * i),
                            format!("{:06}", i + 1),
                            format!("{:012}", i + 1),
                        );
                        let mut b = MessageBuilder::new();
                        b.set_mti("0100")
                            .set(2, &card.pan)
                            .set(3, "000000")
                            .set(4, &de4)
                            .set(7, "1127101530")
                            .set(11, &de11)
                            .set(12, "101530")
                            .set(13, "1127")
                            .set(22, "051")
                            .set(25, "00")
                            .set(35, &card.track2)
                            .set(37, &de37)
                            .set(41, &terminal)
                            .set(42, "FLUXRIGSCAN0001")
                            .set(49, "978")
                            .set(52, &card.pin);
                        out.extend(frame(&spec.encode_to_vec(&b).unwrap()));
                    }
                    stream.write_all(&out).unwrap();
                    let mut got = Vec::new();
                    let mut buf = Vec::new();
                    while got.len() < mine.len() {
                        let mut len = [0_u8; 2];
                        stream.read_exact(&mut len).unwrap();
                        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
                        stream.read_exact(&mut buf).unwrap();
                        let m = spec.decode(&buf).unwrap();
                        let stan: usize = m.field(11).unwrap().text().parse().unwrap();
                        let i = stan - 1;
                        let code = m
                            .field(39)
                            .map(|f| f.text().into_owned())
                            .unwrap_or_default();
                        let echoed = m
                            .field(2)
                            .is_some_and(|f| f.text() == cards[i].pan.as_str());
                        got.push((i, code, echoed));
                    }
                    got
                })
            })
            .collect();
        for h in handles {
            for (i, code, echoed) in h.join().unwrap() {
                results[i] = (code, echoed);
            }
        }
    });
    results
}

/// The needles: each PAN as digits, spaced and dashed by 4; each track 2
/// and PIN block.
fn needles(cards: &[Card]) -> HashMap<usize, HashSet<Vec<u8>>> {
    let mut by_len: HashMap<usize, HashSet<Vec<u8>>> = HashMap::new();
    let mut add = |s: String| {
        by_len.entry(s.len()).or_default().insert(s.into_bytes());
    };
    for c in cards {
        let groups: Vec<&str> = c
            .pan
            .as_bytes()
            .chunks(4)
            .map(|g| std::str::from_utf8(g).unwrap())
            .collect();
        add(c.pan.clone());
        add(groups.join(" "));
        add(groups.join("-"));
        add(c.track2.clone());
        // The PIN block as the dialect carries it (hex text), either case.
        add(c.pin.clone());
        add(c.pin.to_ascii_lowercase());
    }
    by_len
}

fn hits(bytes: &[u8], needles: &HashMap<usize, HashSet<Vec<u8>>>) -> usize {
    needles
        .iter()
        .map(|(len, set)| bytes.windows(*len).filter(|w| set.contains(*w)).count())
        .sum()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_card_data_at_rest_after_a_thousand_cards_through_the_switch() {
    let mut sw = Switch::start();
    let cards = cards(1_000);
    assert_eq!(
        cards.iter().map(|c| &c.pan).collect::<HashSet<_>>().len(),
        1_000
    );
    let results = authorize(sw.port, &cards, 8);
    let approved = results.iter().filter(|(c, _)| c == "00").count();
    let echoed = results.iter().filter(|(_, e)| *e).count();
    assert_eq!(approved, 1_000, "approvals");
    // The issuer echoes DE 2: the terminal getting its own PAN back means
    // the issuer received the real PAN, and the reply was restored.
    assert_eq!(echoed, 1_000, "responses carrying the terminal's own PAN");
    // Both issuers took their share.
    let a = count_lines(&sw.dir.path().join("issuer-a.jsonl"), "0100");
    let b = count_lines(&sw.dir.path().join("issuer-b.jsonl"), "0100");
    assert_eq!((a, b), (500, 500));

    sw.stop();
    let data = sw.dir.path().join("data");
    // The audit archive as a reader sees it (Parquet is compressed: read it
    // through DuckDB rather than as bytes).
    let out = fluxrig()
        .args(["audit", "compact", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = fluxrig()
        .args(["audit", "query", "--csv", "--data"])
        .arg(&data)
        .arg("SELECT * FROM messages")
        .output()
        .unwrap();
    assert!(
        query.status.success(),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    let rows = String::from_utf8_lossy(&query.stdout).lines().count();
    assert!(rows >= 2_000, "the archive holds the run ({rows} rows)");
    std::fs::write(sw.dir.path().join("audit-query.csv"), &query.stdout).unwrap();

    let needles = needles(&cards);
    // The scanner finds what it looks for (each form of a PAN, a track, a
    // PIN block), so a clean result means something.
    let c = &cards[7];
    let probe = format!("x{}y{}z{}", c.pan, c.track2, c.pin);
    // The PAN, the track (which holds the PAN again) and the PIN block.
    assert_eq!(hits(probe.as_bytes(), &needles), 4);
    let spaced: Vec<String> = c
        .pan
        .as_bytes()
        .chunks(4)
        .map(|g| String::from_utf8(g.to_vec()).unwrap())
        .collect();
    assert_eq!(hits(spaced.join(" ").as_bytes(), &needles), 1);
    assert_eq!(hits(spaced.join("-").as_bytes(), &needles), 1);
    let mut files = Vec::new();
    files_under(sw.dir.path(), &mut files);
    assert!(files.iter().any(|f| f.to_string_lossy().contains("/wal/")));
    assert!(files.iter().any(|f| f.ends_with("vault/entries.log")));
    let mut bad = Vec::new();
    for f in &files {
        if f.extension().is_some_and(|e| e == "yaml") {
            continue; // the scenario
        }
        let n = hits(&std::fs::read(f).unwrap(), &needles);
        if n > 0 {
            bad.push(format!(
                "{}: {n}",
                f.strip_prefix(sw.dir.path()).unwrap().display()
            ));
        }
    }
    assert!(bad.is_empty(), "card data found in: {bad:?}");
}

#[test]
fn rotating_the_key_under_load_fails_no_park_or_restore() {
    let long = std::env::var_os("FLUXRIG_LONG_TESTS").is_some();
    let (every, total) = if long {
        (Duration::from_secs(10), Duration::from_mins(2))
    } else {
        (Duration::from_secs(1), Duration::from_secs(10))
    };
    let mut sw = Switch::start();
    let data = sw.dir.path().join("data");
    let load = fluxrig()
        .args(["iso8583", "load", "--target"])
        .arg(format!("127.0.0.1:{}", sw.port))
        .args([
            "--tps",
            "300",
            "--concurrency",
            "20",
            "--json",
            "--duration",
        ])
        .arg(format!("{}s", total.as_secs()))
        .args(["--pan-prefixes", "411111,555555"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut rotations = 0;
    while start.elapsed() + every < total {
        std::thread::sleep(every);
        let out = fluxrig()
            .args(["keys", "rotate", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rotations += 1;
    }
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    assert!(n("sent") > 1_000, "{r}");
    assert_eq!(n("received"), n("sent"), "{r}");
    assert_eq!(n("errors") + n("timeouts") + n("mismatches"), 0, "{r}");
    assert_eq!(n("approved") + n("declined"), n("sent"), "{r}");
    sw.stop();
    // No park or restore failed: nothing went to the dead-letter log, and
    // entries were written under many keys.
    let dead = std::fs::read_to_string(data.join("dead-letters.jsonl")).unwrap_or_default();
    assert_eq!(
        dead.lines().count(),
        0,
        "dead letters after {rotations} rotations"
    );
    let ring: Json =
        serde_json::from_str(&std::fs::read_to_string(data.join("vault/keyring.json")).unwrap())
            .unwrap();
    assert_eq!(ring["active"].as_u64().unwrap(), rotations + 1);
    let rack_err = std::fs::read_to_string(sw.dir.path().join("rack.err")).unwrap();
    assert!(
        !rack_err.contains("coatcheck") || !rack_err.contains("ERROR"),
        "{rack_err}"
    );
}
