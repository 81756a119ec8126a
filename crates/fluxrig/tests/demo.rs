//! `fluxrig demo` end to end: the demo binary starts its two issuer
//! simulators and the example switch on free loopback ports, runs a short
//! load and prints its summary and the audit query.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use fluxrig_test_support::free_port;

/// The number after `word ` in `line`.
fn number_after(line: &str, word: &str) -> u64 {
    let rest = &line[line.find(&format!("{word} ")).unwrap() + word.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_demo_runs_on_free_ports_and_prints_its_summary_and_audit_query() {
    let dir = tempfile::tempdir().unwrap();
    let addr = || format!("127.0.0.1:{}", free_port());
    let (acquirer, a, b) = (addr(), addr(), addr());
    let out = Command::new(env!("CARGO_BIN_EXE_fluxrig"))
        .args([
            "demo",
            "--duration",
            "3s",
            "--tps",
            "200",
            "--concurrency",
            "4",
        ])
        .args(["--acquirer", &acquirer, "--issuer-a", &a, "--issuer-b", &b])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "terminals -> {acquirer} -> PAN 4… issuer A {a}, PAN 5… issuer B {b}"
        )),
        "{stdout}"
    );

    // The summary: everything sent was answered, nothing cross-wired.
    let summary = stdout
        .lines()
        .skip_while(|l| *l != "summary")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    let (sent, received) = (
        number_after(summary, "sent"),
        number_after(summary, "received"),
    );
    assert!(sent >= 300, "{summary}");
    assert_eq!(sent, received, "{summary}");
    assert!(summary.ends_with(" 0 mismatches"), "{summary}");
    assert!(summary.contains(" 0 timeouts"), "{summary}");
    assert!(summary.contains(" 0 errors"), "{summary}");

    // Both issuers got their share, on the ports asked for.
    for (name, addr) in [("A", &a), ("B", &b)] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("issuer {name} ({addr}): ")))
            .unwrap_or_else(|| panic!("no line for issuer {name}: {stdout}"));
        assert!(number_after(line, ":") > 50, "{line}");
    }

    // The audit query is printed, and it ran.
    assert!(
        stdout.contains("audit trail: fluxrig audit query --data "),
        "{stdout}"
    );
    assert!(
        !stdout.contains("the audit query did not run"),
        "{stdout}\n{stderr}"
    );
    // Its table counts every request the switch took from the terminals.
    let sent = sent.to_string();
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["terminals", "in", sent.as_str()])),
        "{stdout}"
    );
}
