//! The example payment switch (`examples/payment-switch.yaml`) end to end,
//! with real parts: two `fluxrig iso8583 issuer` simulators, the Rack
//! (`fluxrig run`), a pyiso8583 terminal and `fluxrig iso8583 load`. Every
//! address is moved to a free loopback port.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fluxrig_test_support::{ChildGuard, free_port, python, raise_open_files};
use serde_json::Value as Json;

/// This checkout's root (from this crate, so a shared target directory
/// cannot point it at another checkout).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fluxrig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fluxrig"))
}

/// An issuer simulator logging to `log`, on a free port.
fn issuer(log: &Path) -> (ChildGuard, u16) {
    issuer_on(log, 0)
}

/// An issuer simulator logging to `log` (appending), on `port`.
fn issuer_on(log: &Path, port: u16) -> (ChildGuard, u16) {
    let mut cmd = fluxrig();
    cmd.args([
        "iso8583",
        "issuer",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log",
    ])
    .arg(log)
    .stderr(Stdio::null());
    let (guard, rest) = ChildGuard::spawn_and_wait_for(cmd, "listening on ");
    let addr = rest.split_whitespace().next().unwrap();
    (guard, addr.rsplit(':').next().unwrap().parse().unwrap())
}

/// Lines of a JSON-lines log (an empty list before the file exists).
fn log_lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The example switch with two issuers, all on free ports.
struct Switch {
    _rack: ChildGuard,
    issuers: Vec<Option<ChildGuard>>,
    issuer_ports: [u16; 2],
    port: u16,
    logs: [PathBuf; 2],
    rack_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Switch {
    fn start() -> Switch {
        Switch::start_with(|s| s)
    }

    /// The example with `edit` applied to its text.
    fn start_with(edit: impl FnOnce(String) -> String) -> Switch {
        let dir = tempfile::tempdir().unwrap();
        let logs = [dir.path().join("a.jsonl"), dir.path().join("b.jsonl")];
        let (a, a_port) = issuer(&logs[0]);
        let (b, b_port) = issuer(&logs[1]);
        let port = free_port();
        let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
        for addr in ["127.0.0.1:8583", "127.0.0.1:9583", "127.0.0.1:9584"] {
            assert!(example.contains(addr), "the example no longer uses {addr}");
        }
        let scenario = on_ports(&edit(example), port, a_port, b_port);
        let file = dir.path().join("switch.yaml");
        std::fs::write(&file, scenario).unwrap();
        let rack_log = dir.path().join("rack.log");
        let rack = run_rack(&file, &dir.path().join("data"), &rack_log, port);
        // Both pooled connections of each issuer have signed on (0800).
        for log in &logs {
            wait_until("issuer sign-ons", Duration::from_secs(30), || {
                log_lines(log).iter().filter(|l| l["mti"] == "0800").count() >= 2
            });
        }
        Switch {
            _rack: rack,
            issuers: vec![Some(a), Some(b)],
            issuer_ports: [a_port, b_port],
            port,
            logs,
            rack_log,
            _dir: dir,
        }
    }

    fn terminal(&self, mode: &str) -> String {
        let out = Command::new(python())
            .arg(root().join("tests/python/switch_terminal.py"))
            .args(["127.0.0.1", &self.port.to_string(), mode])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "terminal ({mode}) failed:\n{stdout}\n{}\nrack log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.rack_log).unwrap_or_default()
        );
        stdout
    }

    fn load(&self, args: &[&str]) -> Json {
        let out = self.load_command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn load_command(&self, args: &[&str]) -> Command {
        let mut cmd = fluxrig();
        cmd.args(["iso8583", "load", "--target"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(args)
            .arg("--json");
        cmd
    }

    /// Business messages (not 0800) each issuer received.
    fn received(&self, i: usize) -> Vec<Json> {
        log_lines(&self.logs[i])
            .into_iter()
            .filter(|l| l["mti"] != "0800")
            .collect()
    }
}

#[test]
fn a_pyiso8583_terminal_through_the_switch_and_a_duplicate_storm() {
    let sw = Switch::start();
    let out = sw.terminal("basic");
    assert_eq!(out.matches("ok   ").count(), 7, "{out}");

    // Routing by PAN prefix: 4… to issuer A, 5… to issuer B, 6… to nobody.
    let a = sw.received(0);
    let b = sw.received(1);
    let stans = |l: &[Json], mti: &str| -> Vec<String> {
        l.iter()
            .filter(|m| m["mti"] == mti && m["terminal"] == "TERM0042")
            .map(|m| m["stan"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(stans(&a, "0100"), ["000101", "000102", "000105"]);
    assert_eq!(stans(&b, "0100"), ["000103"]);
    assert!(
        a.iter()
            .chain(&b)
            .all(|m| m["pan_masked"] != "601111******1117")
    );
    // The silent issuer got exactly one reversal for the timed-out request.
    wait_until("the reversal", Duration::from_secs(10), || {
        stans(&sw.received(0), "0420") == ["000105"]
    });

    // Every copy of the storm is answered, and each request reached an issuer once.
    let out = sw.terminal("storm");
    let sent: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("stans "))
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(sent.len(), 40);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sw.received(0).iter().chain(&sw.received(1)) {
        if m["mti"] == "0100" && m["terminal"] == "TERMSTRM" {
            *seen
                .entry(m["stan"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    for stan in sent {
        assert_eq!(seen.get(stan), Some(&1), "stan {stan} forwarded {seen:?}");
    }
}

#[test]
fn two_hundred_terminals_under_load_never_get_a_wrong_reply() {
    // Terminal connections without a complete frame either way for 4 s
    // are closed (above the issuer timeout of 2 s, after which a silent
    // request gets its 91).
    let sw = Switch::start_with(|s| {
        s.replace(
            "length_prefix: 2be}",
            "length_prefix: 2be, idle_timeout: 4s}",
        )
    });

    // A garbage frame (length over the limit) closes only its connection.
    let mut bad = TcpStream::connect(("127.0.0.1", sw.port)).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(&[0xFF, 0xFF, b'0', b'1']).unwrap();
    let mut buf = [0_u8; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap_or(0),
        0,
        "the bad connection is closed"
    );

    // 200 terminal connections; every 50th amount ends in 999 (the issuer
    // stays silent: the switch answers 91 and reverses). 3,000 transactions;
    // 100,000 with FLUXRIG_LONG_TESTS=1, at a rate a debug build sustains
    // (at 2,000 TPS it fell behind and nothing was answered in time) and
    // within the 5-minute limit for both loads.
    let (tps, secs) = if std::env::var_os("FLUXRIG_LONG_TESTS").is_some() {
        ("1000", "100s")
    } else {
        ("1000", "3s")
    };
    let args = [
        "--tps",
        tps,
        "--duration",
        secs,
        "--concurrency",
        "200",
        "--no-answer-every",
        "50",
        "--pan-prefixes",
        "411111,555555",
    ];
    // The same load without hostile connections first: what "its
    // throughput" means on this machine, now.
    let alone = sw.load(&args);

    // 1,000 idle slow connections: every tenth stuck inside a frame (its
    // length prefix promises 100 bytes, 3 arrive), the rest silent. They
    // must not hold anyone up.
    raise_open_files(4096);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", sw.port)).unwrap();
            if i % 10 == 0 {
                c.write_all(&[0x00, 0x64, b'0', b'1', b'0']).unwrap();
            }
            c
        })
        .collect();
    let r = sw.load(&args);
    // Then the switch closes every one of them (idle, or stalled inside a
    // frame) and counts it.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0_u8; 16];
        assert_eq!(c.read(&mut buf).unwrap_or(1), 0, "closed by the switch");
    }
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(n("mismatches"), 0, "{r}");
    assert_eq!(n("errors"), 0, "{r}");
    assert_eq!(n("timeouts"), 0, "{r}");
    assert!(n("sent") >= 2000, "{r}");
    assert_eq!(n("received"), n("sent"), "{r}");
    assert_eq!(n("approved") + n("declined"), n("received"), "{r}");
    // Legitimate traffic keeps at least 95% of its throughput: answers per
    // second with the 1,000 hostile connections held open, against the
    // same load alone.
    let rate = |j: &Json| j["tps"].as_f64().unwrap();
    assert_eq!(alone["mismatches"], 0, "{alone}");
    eprintln!(
        "answers per second: alone {}, with 1,000 hostile connections {}",
        rate(&alone),
        rate(&r)
    );
    assert!(
        rate(&r) >= 0.95 * rate(&alone),
        "with hostile connections {r}, alone {alone}"
    );

    // One reversal per silent request, to the issuer that stayed silent.
    let silent = |l: &[Json]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = l
            .iter()
            .filter(|m| m["mti"] == "0100" && m["amount"].as_str().unwrap().ends_with("999"))
            .map(|m| (m["stan"].to_string(), m["terminal"].to_string()))
            .collect();
        v.sort();
        v
    };
    let reversed = |l: &[Json]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = l
            .iter()
            .filter(|m| m["mti"] == "0420" || m["mti"] == "0421")
            .map(|m| (m["stan"].to_string(), m["terminal"].to_string()))
            .collect();
        v.sort();
        v
    };
    let expected = [silent(&sw.received(0)), silent(&sw.received(1))];
    assert!(!expected[0].is_empty() || !expected[1].is_empty());
    wait_until("every reversal", Duration::from_secs(15), || {
        reversed(&sw.received(0)) == expected[0] && reversed(&sw.received(1)) == expected[1]
    });
    // Both card prefixes were routed: 4… to issuer A, 5… to issuer B.
    for (i, prefix) in [(0, "411111"), (1, "555555")] {
        let got = sw.received(i);
        assert!(got.len() > 100, "issuer {i} got {}", got.len());
        assert!(
            got.iter()
                .all(|m| m["pan_masked"].as_str().unwrap().starts_with(prefix))
        );
    }

    // The rack says it counted the bad connection.
    let log = std::fs::read_to_string(&sw.rack_log).unwrap();
    assert!(
        BufReader::new(log.as_bytes())
            .lines()
            .any(|l| l.unwrap().contains("closed_for_bad_frames=1")),
        "{log}"
    );
    assert!(log.contains("closed_idle=1000"), "{log}");
}

#[test]
fn an_issuer_killed_mid_load_fails_over_and_no_reply_is_lost() {
    // Group A fails over to issuer B's simulator.
    let mut sw = Switch::start_with(|s| {
        s.replace(
            "issuer_a: {targets: [a]}",
            "issuer_a: {targets: [a, b], balance: failover}",
        )
    });
    let load = sw
        .load_command(&["--tps", "300", "--duration", "4s", "--concurrency", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("traffic at issuer A", Duration::from_secs(20), || {
        sw.received(0).len() > 100
    });
    drop(sw.issuers[0].take()); // kill -9 issuer A
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    // Every request got an answer: the issuer's, or 91 for those lost with A.
    assert_eq!(n("mismatches"), 0, "{r}");
    assert_eq!(n("errors"), 0, "{r}");
    assert_eq!(n("timeouts"), 0, "{r}");
    assert_eq!(n("received"), n("sent"), "{r}");
    // After A died, the rest went to B.
    assert!(sw.received(1).len() > 100, "{r}");
}

#[test]
fn tls_with_client_certificates_between_the_switch_and_an_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fluxrig_test_support::certificates(d);

    // The issuer: a Rack that answers every request 00 over TLS, and
    // requires a client certificate (mTLS).
    let issuer_port = free_port();
    let issuer = format!(
        "meta: {{name: tls-issuer, version: 1.0.0}}
gears:
  - name: net
    type: iso8583_io
    config: {{mode: server, listen: '127.0.0.1:{issuer_port}', tls: {{cert: server.pem, key: server.key, ca: ca.pem}}}}
  - {{name: decode, type: iso8583_codec, config: {{direction: decode}}}}
  - name: answer
    type: map
    config: {{source: '.mti = if .mti == \"0800\" {{ \"0810\" }} else {{ \"0110\" }}; .response.code = \"00\"'}}
  - {{name: encode, type: iso8583_codec, config: {{direction: encode}}}}
wires:
  - {{from: net.out, to: decode.in}}
  - {{from: decode.out, to: answer.in}}
  - {{from: answer.out, to: encode.in}}
  - {{from: encode.out, to: net.in, cycle: true}}
"
    );
    std::fs::write(d.join("issuer.yaml"), issuer).unwrap();
    let issuer_log = d.join("issuer.log");
    let _issuer = run_rack(
        &d.join("issuer.yaml"),
        &d.join("issuer-data"),
        &issuer_log,
        issuer_port,
    );

    // A client without a certificate is refused.
    let refused = Command::new(python())
        .arg("-c")
        .arg(
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=10), server_hostname='127.0.0.1')\n\
             try:\n    s.sendall(bytes.fromhex('0004') + b'0800')\n    print('read', len(s.recv(64)))\n\
             except (ssl.SSLError, ConnectionError) as e:\n    print('refused', type(e).__name__)\n",
        )
        .arg(d.join("ca.pem"))
        .arg(issuer_port.to_string())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.starts_with("refused") || said.starts_with("read 0"),
        "{said}{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The example switch, its issuer A over mTLS.
    let port = free_port();
    let tls = format!(
        "      mode: client\n      tls: {{ca: '{0}/ca.pem', cert: '{0}/client.pem', key: '{0}/client.key'}}\n",
        d.display()
    );
    let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
    assert!(example.contains("      mode: client\n"));
    let scenario = example
        .replace("      mode: client\n", &tls)
        .replace("127.0.0.1:8583", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9583", &format!("127.0.0.1:{issuer_port}"))
        .replace("127.0.0.1:9584", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(d.join("switch.yaml"), scenario).unwrap();
    let rack_log = d.join("switch.log");
    let _rack = run_rack(
        &d.join("switch.yaml"),
        &d.join("switch-data"),
        &rack_log,
        port,
    );
    wait_until(
        "the switch's TLS connections",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&rack_log)
                .unwrap_or_default()
                .matches("issuer connection up")
                .count()
                >= 2
        },
    );
    let out = fluxrig()
        .args(["iso8583", "load", "--target"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--tps",
            "200",
            "--duration",
            "2s",
            "--concurrency",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(n("mismatches"), 0, "{r}");
    assert!(n("sent") >= 300, "{r}");
    assert_eq!(
        n("approved"),
        n("sent"),
        "{r}\n{}",
        std::fs::read_to_string(&issuer_log).unwrap_or_default()
    );
}

/// Requests (by STAN and terminal) an issuer log shows with `mti`, sorted:
/// a request seen twice is there twice.
fn by_key(log: &[Json], mti: &str, amount_ends: Option<&str>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = log
        .iter()
        .filter(|m| m["mti"] == mti)
        .filter(|m| amount_ends.is_none_or(|e| m["amount"].as_str().unwrap().ends_with(e)))
        .map(|m| (m["stan"].to_string(), m["terminal"].to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn an_issuer_dropping_five_percent_of_replies_gets_each_of_them_reversed_once() {
    // 10,000 transactions; 100,000 with FLUXRIG_LONG_TESTS=1. The rate is
    // what a debug build keeps up with while other tests share the CPUs:
    // the test is about reversals, not throughput.
    let (tps, secs) = if std::env::var_os("FLUXRIG_LONG_TESTS").is_some() {
        ("500", "200s")
    } else {
        ("500", "20s")
    };
    let sw = Switch::start();
    let r = sw.load(&[
        "--tps",
        tps,
        "--duration",
        secs,
        "--concurrency",
        "100",
        "--no-answer-every",
        "20",
        "--pan-prefixes",
        "411111,555555",
    ]);
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(n("mismatches"), 0, "{r}");
    assert_eq!(n("errors"), 0, "{r}");
    assert_eq!(n("received"), n("sent"), "{r}");
    assert!(n("sent") >= 9000, "{r}");
    let (mut requests, mut silent) = (0, 0);
    for i in 0..2 {
        let log = sw.received(i);
        // Every request reached an issuer exactly once…
        let got = by_key(&log, "0100", None);
        let mut once = got.clone();
        once.dedup();
        assert_eq!(
            once.len(),
            got.len(),
            "issuer {i}: a request was forwarded twice"
        );
        // …and each one left unanswered was reversed exactly once.
        let unanswered = by_key(&log, "0100", Some("999"));
        wait_until("every reversal", Duration::from_secs(30), || {
            by_key(&sw.received(i), "0420", None) == unanswered
        });
        assert!(by_key(&sw.received(i), "0421", None).is_empty());
        requests += got.len();
        silent += unanswered.len();
    }
    // One reply in 20 was dropped.
    assert_eq!(requests, usize::try_from(n("sent")).unwrap());
    assert!(
        silent * 20 >= requests - 20,
        "{silent} of {requests} dropped"
    );
}

#[test]
fn a_restarted_issuer_gets_the_reversals_queued_while_it_was_down() {
    let mut sw = Switch::start_with(|s| {
        s.replace(
            "      timeout: 2s\n",
            "      timeout: 2s\n      reversal_retry: 200ms\n",
        )
    });
    let at_a = |log: &[Json], mti: &str| {
        log.iter()
            .filter(|l| l["mti"] == mti && l["stan"] == "000777")
            .count()
    };
    silent_request_then_kill(sw.port, &sw.logs[0], sw.issuers[0].take().unwrap());
    std::thread::sleep(Duration::from_secs(1));

    // A returns: the queued reversal arrives as a repeat and is acknowledged.
    let (a, _) = issuer_on(&sw.logs[0], sw.issuer_ports[0]);
    sw.issuers[0] = Some(a);
    wait_until("the reversal at A", Duration::from_secs(30), || {
        at_a(&sw.received(0), "0421") >= 1
    });
    assert_eq!(at_a(&sw.received(0), "0420"), 0);
    std::thread::sleep(Duration::from_secs(1));
    let repeats = at_a(&sw.received(0), "0421");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        at_a(&sw.received(0), "0421"),
        repeats,
        "repeated after its 0430"
    );
}

/// The `silent` terminal's request (STAN 000777) through the switch on
/// `port`: once the issuer logging to `log` has it, the issuer is killed
/// (`-9`); the terminal must still get its 91 from the switch.
fn silent_request_then_kill(port: u16, log: &Path, issuer: ChildGuard) {
    let terminal = Command::new(python())
        .arg(root().join("tests/python/switch_terminal.py"))
        .args(["127.0.0.1", &port.to_string(), "silent"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the request at the issuer", Duration::from_secs(20), || {
        log_lines(log)
            .iter()
            .any(|l| l["mti"] == "0100" && l["stan"] == "000777")
    });
    drop(issuer);
    let out = terminal.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `fluxrig run SCENARIO --data DATA`, stderr to `log`, once it listens on `port`.
/// The example switch moved to the acquirer port and the two issuers'.
#[test]
fn an_issuer_that_stops_answering_is_reconnected_after_three_unanswered_echoes() {
    // Issuer A accepts and reads but never answers, not even echoes: the
    // sockets stay open, only the application is gone.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a_port = silent.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn({
        let accepted = std::sync::Arc::clone(&accepted);
        move || {
            for mut s in silent.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_b, b_port) = issuer(&d.join("b.jsonl"));
    let port = free_port();
    let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
    assert!(example.contains("      mode: client\n"));
    let scenario = on_ports(&example, port, a_port, b_port).replace(
        "      mode: client\n",
        "      mode: client\n      echo_interval: 200ms\n",
    );
    let file = d.join("switch.yaml");
    std::fs::write(&file, scenario).unwrap();
    let rack_log = d.join("rack.log");
    let _rack = run_rack(&file, &d.join("data"), &rack_log, port);

    // Two connections to A, each closed after 600 ms of silence and opened
    // again: at least two rounds of that, accepted by A and logged by the
    // Rack (the log line may come just after A's accept: wait for both).
    let a = format!("127.0.0.1:{a_port}");
    let b = format!("127.0.0.1:{b_port}");
    let up = |log: &str, addr: &str| {
        log.lines()
            .filter(|l| l.contains("issuer connection up") && l.contains(addr))
            .count()
    };
    wait_until(
        "reconnections to the silent issuer",
        Duration::from_secs(30),
        || {
            accepted.load(std::sync::atomic::Ordering::SeqCst) >= 6
                && up(&std::fs::read_to_string(&rack_log).unwrap_or_default(), &a) >= 6
        },
    );
    let log = std::fs::read_to_string(&rack_log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("issuer connection closed: idle") && l.contains(&a)),
        "{log}"
    );
    // Issuer B answers its echoes: its two connections stay up.
    assert_eq!(up(&log, &b), 2, "{log}");
    assert!(up(&log, &a) >= 6, "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("connection closed: idle") && l.contains(&b)),
        "{log}"
    );
}

#[test]
fn a_reversal_outlives_the_vaults_ttl_while_its_issuer_stays_silent() {
    // Issuer A takes everything and answers nothing: the request times out,
    // its 0420 and 0421s are never acknowledged. The coat check keeps card
    // data for 3 s only; the reversal must keep going out after that.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a_port = silent.local_addr().unwrap().port();
    let repeats = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn({
        let repeats = std::sync::Arc::clone(&repeats);
        move || {
            for s in silent.incoming().flatten() {
                let repeats = std::sync::Arc::clone(&repeats);
                // Frames: 2-byte big-endian length, then the message (MTI first).
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s);
                    let mut len = [0_u8; 2];
                    while r.read_exact(&mut len).is_ok() {
                        let mut m = vec![0_u8; usize::from(u16::from_be_bytes(len))];
                        if r.read_exact(&mut m).is_err() {
                            break;
                        }
                        if m.starts_with(b"0421") {
                            repeats.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_b, b_port) = issuer(&d.join("b.jsonl"));
    let port = free_port();
    let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
    let park = "format_preserving: [pan],";
    assert!(example.contains(park) && example.contains("      timeout: 2s\n"));
    let scenario = on_ports(&example, port, a_port, b_port)
        .replace(park, "format_preserving: [pan], ttl: 3s,")
        .replace(
            "      timeout: 2s\n",
            "      timeout: 2s\n      reversal_retry: 200ms\n",
        );
    let file = d.join("switch.yaml");
    std::fs::write(&file, scenario).unwrap();
    let rack_log = d.join("rack.log");
    let _rack = run_rack(&file, &d.join("data"), &rack_log, port);

    // The terminal gets its 91 after 2 s; the 0420 leaves then, and the
    // 0421s every 200 ms: 20 of them take the reversal to about 6 s after
    // the request, twice the vault's ttl.
    let out = Command::new(python())
        .arg(root().join("tests/python/switch_terminal.py"))
        .args(["127.0.0.1", &port.to_string(), "silent"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until(
        "20 repeats of the reversal",
        Duration::from_secs(30),
        || repeats.load(std::sync::atomic::Ordering::SeqCst) >= 20,
    );
    let log = std::fs::read_to_string(&rack_log).unwrap();
    assert!(!log.contains("unknown or expired"), "{log}");
}

fn on_ports(example: &str, port: u16, a_port: u16, b_port: u16) -> String {
    example
        .replace("127.0.0.1:8583", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9583", &format!("127.0.0.1:{a_port}"))
        .replace("127.0.0.1:9584", &format!("127.0.0.1:{b_port}"))
}

fn run_rack(scenario: &Path, data: &Path, log: &Path, port: u16) -> ChildGuard {
    let rack = fluxrig()
        .arg("run")
        .arg(scenario)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let rack = ChildGuard(rack);
    wait_until("the switch to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    rack
}

#[test]
fn a_queued_reversal_survives_a_kill_9_of_the_rack_and_goes_out_as_0421() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logs = [d.join("a.jsonl"), d.join("b.jsonl")];
    let (a, a_port) = issuer(&logs[0]);
    let (_b, b_port) = issuer(&logs[1]);
    let port = free_port();
    let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
    assert!(example.contains("      timeout: 2s\n"));
    let scenario = on_ports(&example, port, a_port, b_port).replace(
        "      timeout: 2s\n",
        "      timeout: 2s\n      reversal_retry: 200ms\n",
    );
    let file = d.join("switch.yaml");
    std::fs::write(&file, scenario).unwrap();
    let (data, rack_log) = (d.join("data"), d.join("rack.log"));
    let sign_ons = |log: &Path| log_lines(log).iter().filter(|l| l["mti"] == "0800").count();
    let at_a = |mti: &str| {
        log_lines(&logs[0])
            .iter()
            .filter(|l| l["mti"] == mti && l["stan"] == "000777")
            .count()
    };
    let rack = run_rack(&file, &data, &rack_log, port);
    wait_until("sign-ons at A", Duration::from_secs(30), || {
        sign_ons(&logs[0]) >= 2
    });

    // The request reaches A, which stays silent and then dies: the
    // terminal gets 91, and the reversal cannot be delivered.
    silent_request_then_kill(port, &logs[0], a);
    // A few repeats fail against the dead issuer; then the Rack is killed.
    std::thread::sleep(Duration::from_secs(1));
    drop(rack);
    assert_eq!(at_a("0420") + at_a("0421"), 0);

    // A comes back on its port and the Rack restarts on the same data:
    // the reversal goes out again, as a repeat, until A acknowledges it.
    let (_a, _) = issuer_on(&logs[0], a_port);
    let before = sign_ons(&logs[0]);
    let rack = run_rack(&file, &data, &rack_log, port);
    wait_until(
        "the restored reversal at A",
        Duration::from_secs(30),
        || at_a("0421") >= 1,
    );
    let log = std::fs::read_to_string(&rack_log).unwrap();
    assert!(log.contains("reversal queue restored"), "{log}");
    assert_eq!(at_a("0420"), 0);

    // Acknowledged: the next start has nothing to send.
    std::thread::sleep(Duration::from_secs(1));
    let repeats = at_a("0421");
    drop(rack);
    let _rack = run_rack(&file, &data, &rack_log, port);
    wait_until("sign-ons at A", Duration::from_secs(30), || {
        sign_ons(&logs[0]) >= before + 4
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        at_a("0421"),
        repeats,
        "an acknowledged reversal was sent again"
    );
}

/// The STAN of a correlation key (`CLASS|STAN|…`: DE 11 comes first in the
/// example's key).
fn key_stan(key: &str) -> String {
    key.split('|').nth(1).unwrap_or_default().to_owned()
}

#[test]
fn after_a_kill_9_every_reply_a_terminal_got_is_on_disk_and_the_unanswered_are_reversed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logs = [d.join("a.jsonl"), d.join("b.jsonl")];
    let (_a, a_port) = issuer(&logs[0]);
    let (_b, b_port) = issuer(&logs[1]);
    let port = free_port();
    let example = std::fs::read_to_string(root().join("examples/payment-switch.yaml")).unwrap();
    assert!(example.contains("      timeout: 2s\n"));
    // A long timeout: the silent issuer's requests are still pending when
    // the Rack dies (no 91, no reversal yet).
    let scenario = on_ports(&example, port, a_port, b_port)
        .replace("      timeout: 2s\n", "      timeout: 60s\n");
    let file = d.join("switch.yaml");
    std::fs::write(&file, scenario).unwrap();
    let (data, rack_log) = (d.join("data"), d.join("rack.log"));
    let log_dir = data.join("conductor/conductor/reversals");
    let rack = run_rack(&file, &data, &rack_log, port);
    wait_until("sign-ons at A", Duration::from_secs(30), || {
        log_lines(&logs[0])
            .iter()
            .filter(|l| l["mti"] == "0800")
            .count()
            >= 2
    });

    // A burst on one connection; the Rack is killed (-9) once some replies
    // are in, while others are in flight.
    let mut terminal = Command::new(python())
        .arg(root().join("tests/python/switch_terminal.py"))
        .args(["127.0.0.1", &port.to_string(), "burst", "2000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = terminal.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                lines.lock().unwrap().push(l.unwrap());
            }
        })
    };
    let replies = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("reply "))
            .count()
    };
    wait_until("replies", Duration::from_secs(50), || replies() >= 300);
    drop(rack);
    assert!(terminal.wait().unwrap().success());
    reader.join().unwrap();
    let got: Vec<(String, String)> = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("reply ")?.split(' ');
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect();
    assert!(got.len() >= 300);

    // Every reply the terminal got has its record in the log, with its code.
    let records = fluxrig_gears::read_conductor_log(&log_dir).unwrap();
    let mut answered: HashMap<String, String> = HashMap::new();
    for r in &records {
        if let fluxrig_gears::ConductorLogRecord::Answered(a) = r {
            assert!(a.terminal_key.ends_with("|TERMBRST"), "{a:?}");
            answered.insert(key_stan(&a.terminal_key), a.code.clone());
        }
    }
    for (stan, code) in &got {
        assert_eq!(
            answered.get(stan),
            Some(code),
            "stan {stan}: the terminal got {code} without its record"
        );
    }
    // What the log holds forwarded and not answered: to be reversed.
    let mut unsettled: Vec<String> = Vec::new();
    for r in &records {
        match r {
            fluxrig_gears::ConductorLogRecord::Forwarded { key, .. } => {
                unsettled.push(key_stan(key));
            }
            fluxrig_gears::ConductorLogRecord::Answered(a) => {
                unsettled.retain(|s| *s != key_stan(&a.key));
            }
            _ => {}
        }
    }
    unsettled.sort();
    eprintln!(
        "replies received {}, answered records {}, unsettled forwards {}",
        got.len(),
        answered.len(),
        unsettled.len()
    );
    // At least the silent issuer's requests (every tenth) are among them.
    assert!(!unsettled.is_empty());
    let received: std::collections::HashSet<&String> = got.iter().map(|(s, _)| s).collect();
    assert!(unsettled.iter().all(|s| !received.contains(s)));

    // The restart reverses exactly those, with 0420s, to issuer A.
    let reversed = || -> Vec<String> {
        let mut v: Vec<String> = log_lines(&logs[0])
            .iter()
            .filter(|l| (l["mti"] == "0420" || l["mti"] == "0421") && l["terminal"] == "TERMBRST")
            .map(|l| l["stan"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert!(reversed().is_empty());
    let _rack = run_rack(&file, &data, &rack_log, port);
    wait_until("the reversals at A", Duration::from_secs(30), || {
        reversed() == unsettled
    });
    let log = std::fs::read_to_string(&rack_log).unwrap();
    assert!(
        log.contains("never answered to their terminals: reversing them"),
        "{log}"
    );
}
