//! `fluxrig run`, `fluxrig scenario`, `fluxrig gears` as a user runs them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn fluxrig() -> Command {
    Command::cargo_bin("fluxrig").unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

const QUICKSTART: &str = "meta: {name: quickstart, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 1000, interval: 1ms}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: file_out, config: {path: out/quickstart.jsonl, format: jsonl}}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

#[test]
fn the_quickstart_runs_to_completion_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q.yaml"), QUICKSTART).unwrap();
    let out = fluxrig()
        .current_dir(dir.path())
        .args(["run", "q.yaml", "--data", "state"])
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    let summary = String::from_utf8(out).unwrap();
    let sink: Vec<&str> = summary
        .lines()
        .find(|l| l.trim_start().starts_with("sink "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        sink,
        ["sink", "file_out", "1000", "1000", "0", "0", "0"],
        "{summary}"
    );
    let out = std::fs::read_to_string(dir.path().join("out/quickstart.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[999], serde_json::json!({"seq": 1000, "double": 2000}));
    assert!(dir.path().join("state/ids.state").exists());
}

#[test]
fn run_for_keeps_running_then_stops_an_endless_source() {
    let dir = tempfile::tempdir().unwrap();
    let s = QUICKSTART.replace("count: 1000, interval: 1ms", "interval: 5ms");
    std::fs::write(dir.path().join("q.yaml"), s).unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["run", "q.yaml", "--for", "600ms", "--quiet"])
        .assert()
        .success()
        .stderr(predicate::str::contains("rack stopped after").not());
    let n = std::fs::read_to_string(dir.path().join("out/quickstart.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(n > 10, "{n} messages in 600 ms at one per 5 ms");
}

#[test]
fn an_invalid_scenario_exits_2_with_every_problem_located() {
    let dir = tempfile::tempdir().unwrap();
    let bad = QUICKSTART
        .replace("type: map", "type: mapp")
        .replace("format: jsonl}", "format: jsonl, extra: 1}");
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    for cmd in [
        vec!["scenario", "validate", "bad.yaml"],
        vec!["run", "bad.yaml"],
    ] {
        let out = fluxrig()
            .current_dir(dir.path())
            .args(&cmd)
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("bad.yaml:"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("bad.yaml:4:26: gear `enrich`: unknown gear type `mapp`"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("bad.yaml:5:86: gear `sink`: unknown field `extra`"),
            "{text}"
        );
    }
}

#[test]
fn malformed_yaml_and_bad_vrl_exit_2_naming_the_gear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), "meta: {name: [\n").unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "validate", "m.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with("m.yaml:"));
    std::fs::write(
        dir.path().join("v.yaml"),
        QUICKSTART.replace(".double = int!(.seq) * 2", ".double = int!(.seq) *"),
    )
    .unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["run", "v.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "gear `enrich`: source: VRL error at line 1, column",
        ));
}

#[test]
fn a_gear_that_cannot_start_exits_2_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out/quickstart.jsonl")).unwrap();
    std::fs::write(dir.path().join("q.yaml"), QUICKSTART).unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["run", "q.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("gear `sink`: cannot open"));
}

#[test]
fn missing_input_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.yaml"),
        "meta: {name: f, version: 1}\ngears:\n  - {name: in, type: file_in, config: {path: nope.jsonl}}\n  - {name: out, type: discard}\nwires:\n  - {from: in.out, to: out.in}\n",
    )
    .unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "validate", "f.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "f.yaml:3:46: gear `in`: path: cannot read",
        ));
}

#[test]
fn validate_graph_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q.yaml"), QUICKSTART).unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        format!(
            "# same scenario, other layout\n{}",
            QUICKSTART.replace(
                "{name: source, type: generate,",
                "{type: generate, name: source,"
            )
        ),
    )
    .unwrap();
    fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "validate", "q.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "valid: quickstart 1.0.0 (3 gears, 2 wires",
        ));
    let h1 = fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "hash", "q.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let h2 = fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "hash", "r.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(h1, h2);
    assert_eq!(String::from_utf8(h1).unwrap().trim().len(), 64);
    fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "graph", "q.yaml", "--format", "dot"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"source\" -> \"enrich\""));
    fluxrig()
        .current_dir(dir.path())
        .args(["scenario", "graph", "q.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("flowchart LR"));
}

#[test]
fn gears_lists_and_documents_every_type() {
    let list = fluxrig()
        .arg("gears")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let list = String::from_utf8(list).unwrap();
    for name in [
        "generate", "map", "route", "file_in", "file_out", "stdin", "stdout", "discard", "log",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{list}"
        );
        fluxrig()
            .args(["gears", "doc", name])
            .assert()
            .success()
            .stdout(predicate::str::starts_with(format!("# `{name}`")));
        fluxrig()
            .args(["gears", "schema", name])
            .assert()
            .success()
            .stdout(predicate::str::contains("\"$schema\""));
    }
    fluxrig().args(["gears", "doc", "nope"]).assert().code(2);
}

/// `docs/gears/` is generated; this fails when it is stale, with the command to fix it.
#[test]
fn the_gear_reference_in_docs_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    fluxrig()
        .args(["gears", "doc", "--write"])
        .arg(dir.path())
        .assert()
        .success();
    let committed = repo().join("docs/gears");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in &names {
        let fresh = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let old = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        assert!(
            fresh == old,
            "docs/gears/{} is stale: run `cargo run -p fluxrig -- gears doc --write docs/gears`",
            name.to_string_lossy()
        );
    }
    let committed_count = std::fs::read_dir(&committed).unwrap().count();
    assert_eq!(
        committed_count,
        names.len(),
        "docs/gears has pages for gears that no longer exist: regenerate it"
    );
}

/// `docs/cli.md` is generated from the argument definitions; this fails
/// when it is stale, with the command to fix it.
#[test]
fn the_cli_reference_in_docs_is_up_to_date() {
    let fresh = fluxrig()
        .arg("cli-reference")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let committed = std::fs::read(repo().join("docs/cli.md")).unwrap_or_default();
    assert!(
        fresh == committed,
        "docs/cli.md is stale: run `cargo run -p fluxrig -- cli-reference --write docs/cli.md`"
    );
}

#[test]
fn sigterm_stops_the_rack_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("q.yaml"),
        QUICKSTART.replace("count: 1000, interval: 1ms", "interval: 1ms"),
    )
    .unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fluxrig"))
        .current_dir(dir.path())
        .args(["run", "q.yaml", "--quiet"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = i32::try_from(child.id()).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let n = std::fs::read_to_string(dir.path().join("out/quickstart.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(n > 0);
}
