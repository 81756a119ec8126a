//! `fluxrig spec …` and `fluxrig iso8583 …` end to end: exit codes, error
//! positions, masking, the issuer simulator against a pyiso8583 terminal,
//! and the load generator against the issuer simulator.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fluxrig_test_support::{python_script, workspace_root};
use serde_json::Value as Json;

fn fluxrig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fluxrig"))
}

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = fluxrig()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spec_file(name: &str) -> String {
    workspace_root()
        .join("specs")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

/// An issuer simulator on a free loopback port, killed on drop.
struct Issuer {
    child: Child,
    port: u16,
}

impl Issuer {
    fn start(extra: &[&str]) -> Issuer {
        let mut child = fluxrig()
            .args(["iso8583", "issuer", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Issuer { child, port }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn spec_validate_reports_positions_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "sdl: 1\nname: t\nversion: '1'\nmti: ascii\nbitmap: hex\nelements:\n  2: { name: PAN, type: n, var: LL, max: 190 }\n  4: { name: A, type: n, fixed: 12, alias: mti.x }\n",
    )
    .unwrap();
    let file = bad.display().to_string();
    let (code, _, err) = run(&["spec", "validate", &file], b"");
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!("{file}:7:42: element 2: max must be 1..=99 for a LL prefix in ascii")
    );
    assert_eq!(
        lines[1],
        format!("{file}:8:44: alias `mti.x` starts with a reserved key (`mti`, `de<n>`)")
    );
    assert_eq!(lines[2], format!("error: {file}: 2 problems"));

    let (code, out, _) = run(&["spec", "validate", &spec_file("iso8583-1987-ascii")], b"");
    assert_eq!(code, 0);
    assert!(out.contains(": ok (iso8583-1987-ascii 1.0.0"), "{out}");
    let (code, _, err) = run(&["spec", "validate", "no-such-dialect"], b"");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn spec_hash_import_ls_and_doc() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let file = spec_file("iso8583-1987-binary");
    let (code, out, _) = run(&["spec", "hash", &file, "--json"], b"");
    assert_eq!(code, 0);
    let h: Json = serde_json::from_str(&out).unwrap();
    let hash = h["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    // The bundled name gives the same hash.
    let (_, out, _) = run(&["spec", "hash", "iso8583-1987-binary"], b"");
    assert!(out.starts_with(&hash), "{out}");

    let (code, out, err) = run(&["spec", "import", &file, "--data", data], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&hash));
    assert!(
        Path::new(data)
            .join(format!("specs/sha256/{hash}.yaml"))
            .exists()
    );
    let (code, out, _) = run(&["spec", "ls", "--json", "--data", data], b"");
    assert_eq!(code, 0);
    let ls: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(ls[0]["hash"], hash.as_str());
    assert_eq!(ls[0]["name"], "iso8583-1987-binary");

    let (code, md, _) = run(&["spec", "doc", &file], b"");
    assert_eq!(code, 0);
    assert!(md.contains("| 2 | Primary Account Number (PAN) | n | LLVAR ..19 (ascii prefix) | ascii | left '0' | card.pan | pan |"), "{md}");
    let (code, html, _) = run(&["spec", "doc", &file, "--format", "html"], b"");
    assert_eq!(code, 0);
    assert!(html.starts_with("<!doctype html>") && html.contains("<td>card.pan</td>"));
}

#[test]
fn decode_masks_card_data() {
    // 0100 with DE 2 (test PAN), DE 4, DE 35 (track 2), DE 41.
    let msg = concat!(
        "0100",
        "5000000020800000",
        "16",
        "4111111111111111",
        "000000010000",
        "33",
        "4111111111111111=2812101123456789",
        "TERM0001"
    )
    .as_bytes();
    let (code, out, err) = run(&["iso8583", "decode"], msg);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("4111111111111111"), "{out}");
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["card"]["pan"], "411111******1111");
    assert_eq!(v["data"]["card"]["track2"], "*".repeat(33));
    assert_eq!(v["data"]["amount"]["transaction"], "000000010000");
    assert_eq!(v["data"]["terminal"]["id"], "TERM0001");
    assert_eq!(v["meta"]["iso8583.dialect"], "iso8583-1987-ascii");

    // Framed hex on stdin, another dialect.
    let hex = "0012 30383030 0020000000000000 303030303031";
    let (code, out, err) = run(
        &[
            "iso8583",
            "decode",
            "--hex",
            "--framed",
            "--spec",
            "iso8583-1987-binary",
        ],
        hex.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["mti"], "0800");
    assert_eq!(v["data"]["trace"]["stan"], "000001");

    // Garbage: exit 2, an error naming the element, no content.
    let (code, _, err) = run(
        &["iso8583", "decode"],
        b"0100400000000000000016411111111111",
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "error: element 2 at byte 22: truncated: needs 16 bytes, 12 left"
    );
}

#[test]
fn issuer_answers_a_pyiso8583_terminal_and_logs_masked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("issuer.jsonl");
    let issuer = Issuer::start(&["--log", log.to_str().unwrap()]);
    let out = python_script("iso8583_client.py")
        .args(["127.0.0.1", &issuer.port.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        9,
        "{stdout}"
    );
    // One log line per received message (9), flushed as they arrive.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 9 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(!text.contains("4111111111111111"), "clear PAN in the log");
    let first: Json = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["mti"], "0100");
    assert_eq!(first["stan"], "000001");
    assert_eq!(first["rrn"], "733110000001");
    assert_eq!(first["terminal"], "TERM0042");
    assert_eq!(first["pan_masked"], "411111******1111");
    assert_eq!(first["amount"], "000000010000");
}

#[test]
fn load_against_the_issuer_has_no_mismatch_and_counts_timeouts() {
    let issuer = Issuer::start(&[]);
    let target = format!("127.0.0.1:{}", issuer.port);
    let (code, out, err) = run(
        &[
            "iso8583",
            "load",
            "--target",
            &target,
            "--tps",
            "400",
            "--duration",
            "2s",
            "--concurrency",
            "3",
            "--timeout",
            "500ms",
            "--no-answer-every",
            "10",
            "--json",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let r: Json = serde_json::from_str(&out).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {out}"));
    assert_eq!(n("mismatches"), 0, "{out}");
    assert_eq!(n("errors"), 0, "{out}");
    let sent = n("sent");
    assert!(sent > 0, "{out}");
    // Every tenth request ends in 999 and goes unanswered.
    assert_eq!(n("timeouts"), sent / 10, "{out}");
    assert_eq!(n("received"), sent - sent / 10, "{out}");
    assert_eq!(n("approved") + n("declined"), n("received"), "{out}");
    assert!(n("approved") > 0 && n("declined") > 0, "{out}");
    for k in ["tps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(r[k].is_number(), "{k} in {out}");
    }
    assert!(!out.contains("411111"), "no PAN in the report");
}

#[test]
fn a_garbage_frame_closes_only_its_connection() {
    use std::io::Read as _;
    use std::net::TcpStream;
    let issuer = Issuer::start(&[]);
    let mut bad = TcpStream::connect(("127.0.0.1", issuer.port)).unwrap();
    bad.write_all(b"\x00\x05hello").unwrap();
    let mut buf = [0_u8; 16];
    // The issuer closes the bad connection: read sees EOF (or a reset).
    bad.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(bad.read(&mut buf), Ok(0) | Err(_)));
    // Others are served.
    let mut good = TcpStream::connect(("127.0.0.1", issuer.port)).unwrap();
    let msg = b"08008220000000000000040000000000000011271015300000013010";
    let body = &msg[..msg.len() - 1];
    let mut frame = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    good.write_all(&frame).unwrap();
    good.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut head = [0_u8; 2];
    good.read_exact(&mut head).unwrap();
    let mut resp = vec![0_u8; usize::from(u16::from_be_bytes(head))];
    good.read_exact(&mut resp).unwrap();
    assert!(resp.starts_with(b"0810"));
}
