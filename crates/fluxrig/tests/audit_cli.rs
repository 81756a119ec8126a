//! `fluxrig audit query|verify|export|compact` as a user runs them, over a
//! data directory written by a real WAL with the Rack's records.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use fluxrig_audit::{CompactOptions, Manifest, archive_dir, compact_now, records, wal_dir};
use fluxrig_msg::{FluxId, FluxMsg, Meta};
use fluxrig_wal::{Wal, WalOptions};
use predicates::prelude::*;
use serde_json::{Value as Json, json};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn fluxrig() -> Command {
    Command::cargo_bin("fluxrig").unwrap()
}

/// Message `i` at T0 + i minutes: an ISO 8583 authorisation.
fn message(i: u64) -> FluxMsg {
    let data = json!({
        "mti": "0100",
        "amount": {"transaction": format!("{:012}", 100 * i)},
        "currency": {"transaction": "978"},
        "card": {"pan": "411111******1111"},
    });
    let mut m = FluxMsg::new(
        FluxId::from_raw(5_000 + i),
        fluxrig_msg::json::value(&data, "data").unwrap(),
    );
    m.ts = T0 + i * 60 * SECOND;
    m.meta = [("conn", "7")].into_iter().collect::<Meta>();
    m
}

/// A data directory: `n` messages, each an ingress and an egress record,
/// small segments, the closed ones archived, the WAL closed cleanly.
/// Returns the number of rows (2 per message).
fn data_dir(dir: &Path, n: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (wal, _) = Wal::open(wal_dir(dir), WalOptions::default().segment_size(2048)).unwrap();
    for i in 0..n {
        let m = message(i);
        rt.block_on(wal.append(records::INGRESS, records::encode_ingress("pos", "out", &m)))
            .unwrap();
        rt.block_on(wal.append(records::EGRESS, records::encode_egress("issuer", &m)))
            .unwrap();
    }
    rt.block_on(wal.append(9, &b"bookkeeping"[..])).unwrap();
    let report = compact_now(
        &wal_dir(dir),
        &archive_dir(dir),
        &CompactOptions::default().rack("edge-1"),
    )
    .unwrap();
    assert!(!report.files.is_empty(), "part of the log is archived");
    rt.block_on(wal.close()).unwrap();
    2 * n
}

fn run_json(args: &[&str]) -> Json {
    let out = fluxrig()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn query_covers_archive_and_tail_once_in_three_formats() {
    let dir = tempfile::tempdir().unwrap();
    let rows = data_dir(dir.path(), 40);
    let d = dir.path().to_str().unwrap();
    let v = run_json(&[
        "audit",
        "query",
        "--data",
        d,
        "--json",
        "SELECT count(*) AS n, count(DISTINCT wal_lsn) AS lsns, min(wal_lsn) AS first FROM messages",
    ]);
    assert_eq!(v, json!([{"n": rows, "lsns": rows, "first": 1}]));
    let v = run_json(&[
        "audit",
        "query",
        "--data",
        d,
        "--json",
        "SELECT gear, direction, count(*) AS n, sum(amount) AS total FROM messages GROUP BY ALL ORDER BY gear",
    ]);
    let total: u64 = (0..40).map(|i| 100 * i).sum();
    assert_eq!(
        v,
        json!([
            {"gear": "issuer", "direction": "out", "n": 40, "total": total},
            {"gear": "pos", "direction": "in", "n": 40, "total": total},
        ])
    );
    fluxrig()
        .args([
            "audit",
            "query",
            "--data",
            d,
            "--csv",
            "SELECT gear, count(*) AS n FROM messages GROUP BY gear ORDER BY gear",
        ])
        .assert()
        .success()
        .stdout("gear,n\r\nissuer,40\r\npos,40\r\n");
    fluxrig()
        .args([
            "audit",
            "query",
            "--data",
            d,
            "SELECT gear, count(*) AS n FROM messages GROUP BY gear ORDER BY gear",
        ])
        .assert()
        .success()
        .stdout("gear     n\n------  --\nissuer  40\npos     40\n(2 rows)\n");
    // --data defaults to $FLUXRIG_DATA.
    fluxrig()
        .env("FLUXRIG_DATA", d)
        .args([
            "audit",
            "query",
            "--csv",
            "SELECT count(*) AS n FROM messages WHERE rack = 'edge-1'",
        ])
        .assert()
        .success()
        .stdout(format!("n\r\n{rows}\r\n"));
}

#[test]
fn bad_sql_exits_2_with_duckdbs_message() {
    let dir = tempfile::tempdir().unwrap();
    data_dir(dir.path(), 30);
    let d = dir.path().to_str().unwrap();
    fluxrig()
        .args(["audit", "query", "--data", d, "SELEC gear FROM messages"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Parser Error"));
    fluxrig()
        .args([
            "audit",
            "query",
            "--data",
            d,
            "SELECT no_such_column FROM messages",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no_such_column"));
}

fn closed_segment(dir: &Path) -> PathBuf {
    let segs = fluxrig_audit::segments::list(&wal_dir(dir)).unwrap();
    segs.iter()
        .find(|s| s.closed.is_some())
        .unwrap()
        .path
        .clone()
}

#[test]
fn verify_accepts_a_sound_directory_and_names_what_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    data_dir(dir.path(), 30);
    let d = dir.path().to_str().unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", d])
        .assert()
        .success()
        .stdout(predicate::str::contains("wal: ok").and(predicate::str::contains("archive: ok")));
    let v = run_json(&["audit", "verify", "--data", d, "--json"]);
    assert_eq!(v["ok"], true);

    // A flipped bit in a WAL segment: exit 1, the segment and offset named.
    let seg = closed_segment(dir.path());
    let pristine = std::fs::read(&seg).unwrap();
    let mut bytes = pristine.clone();
    bytes[300] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", d])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(seg.file_name().unwrap().to_str().unwrap())
                .and(predicate::str::contains("at byte")),
        );
    std::fs::write(&seg, &pristine).unwrap();

    // A modified Parquet file.
    let m = Manifest::load(&archive_dir(dir.path())).unwrap().unwrap();
    let file = archive_dir(dir.path()).join(&m.files[0].file);
    let pristine = std::fs::read(&file).unwrap();
    let mut bytes = pristine.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", d])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(m.files[0].file.as_str())
                .and(predicate::str::contains("damaged at byte 0")),
        );
    std::fs::write(&file, &pristine).unwrap();

    // A manifest entry naming a missing file.
    std::fs::rename(&file, dir.path().join("moved.parquet")).unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", d])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(m.files[0].file.as_str())
                .and(predicate::str::contains("missing")),
        );
    std::fs::rename(dir.path().join("moved.parquet"), &file).unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", d])
        .assert()
        .success();

    // Not a data directory at all: invalid input.
    let empty = tempfile::tempdir().unwrap();
    fluxrig()
        .args(["audit", "verify", "--data", empty.path().to_str().unwrap()])
        .assert()
        .code(2);
}

fn pyarrow_rows(file: &Path) -> Vec<Json> {
    let out = fluxrig_test_support::python_script("audit_read.py")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    v["rows"].as_array().unwrap().clone()
}

#[test]
fn export_selects_the_time_range_and_applies_residency() {
    let dir = tempfile::tempdir().unwrap();
    data_dir(dir.path(), 30); // message i at T0 + i minutes
    let d = dir.path().to_str().unwrap();
    let out = dir.path().join("export");
    let v = run_json(&[
        "audit",
        "export",
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--since",
        "2026-01-01T00:10:00Z",
        "--until",
        "2026-01-01T01:20:00+01:00",
        "--local-only",
        "card",
        "--local-only",
        "meta.conn",
    ]);
    // Messages 10..19 (00:10 inclusive to 00:20 exclusive), two rows each.
    assert_eq!(v["rows"], 20);
    assert_eq!(v["scanned"], 60);
    let rows = pyarrow_rows(&out.join("messages.parquet"));
    let mut ids: Vec<u64> = rows
        .iter()
        .map(|r| r["flux_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (5_010..5_020).collect::<Vec<u64>>());
    for r in &rows {
        let data: Json = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
        assert!(data.get("card").is_none(), "{data}");
        assert_eq!(data["mti"], "0100");
        assert_eq!(r["meta"], "{}");
        assert!(r["amount"].is_u64(), "amount is not local-only: {r}");
    }
    let m = Manifest::load(&out).unwrap().unwrap();
    assert_eq!(m.kind, fluxrig_audit::ManifestKind::Export);
    assert_eq!(m.files[0].rows, 20);
    let info = m.export.unwrap();
    assert_eq!(
        info.since.as_deref(),
        Some("2026-01-01T00:10:00.000000000Z")
    );
    assert_eq!(info.residency.local_only, ["card", "meta.conn"]);

    // The output directory must be new or empty; bad times are bad input.
    fluxrig()
        .args([
            "audit",
            "export",
            "--data",
            d,
            "--out",
            out.to_str().unwrap(),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not empty"));
    fluxrig()
        .args([
            "audit",
            "export",
            "--data",
            d,
            "--out",
            "/nonexistent-x",
            "--since",
            "yesterday",
        ])
        .assert()
        .code(2);

    // Metadata only: no data, no promoted fields.
    let out2 = dir.path().join("export2");
    fluxrig()
        .args([
            "audit",
            "export",
            "--data",
            d,
            "--out",
            out2.to_str().unwrap(),
            "--metadata-only",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("exported 60 of 60 rows"));
    for r in pyarrow_rows(&out2.join("messages.parquet")) {
        assert!(
            r["data"].is_null() && r["mti"].is_null() && r["amount"].is_null(),
            "{r}"
        );
        assert_eq!(r["meta"], r#"{"conn":"7"}"#);
    }
}

#[test]
fn compact_archives_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (wal, _) = Wal::open(
        wal_dir(dir.path()),
        WalOptions::default().segment_size(1024),
    )
    .unwrap();
    for i in 0..20 {
        rt.block_on(wal.append(
            records::INGRESS,
            records::encode_ingress("pos", "out", &message(i)),
        ))
        .unwrap();
    }
    rt.block_on(wal.close()).unwrap();
    let d = dir.path().to_str().unwrap();
    let v = run_json(&[
        "audit", "compact", "--data", d, "--rack", "edge-9", "--json",
    ]);
    assert!(v["rows"].as_u64().unwrap() > 0);
    let v = run_json(&["audit", "compact", "--data", d, "--json"]);
    assert_eq!(v["rows"], 0, "nothing new");
    let v = run_json(&[
        "audit",
        "query",
        "--data",
        d,
        "--json",
        "SELECT DISTINCT rack FROM messages WHERE wal_lsn = 1",
    ]);
    assert_eq!(v, json!([{"rack": "edge-9"}]));
}
