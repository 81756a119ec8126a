//! Builds data directories with a real WAL holding Rack records, and the
//! rows the archive must hold for them — derived from the messages written,
//! not from the code under test.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};

use fluxrig_audit::records;
use fluxrig_msg::{FluxId, FluxMsg, Meta};
use fluxrig_wal::{Lsn, Wal, WalOptions};
use serde_json::{Value as Json, json};

/// 2026-01-01T00:00:00Z in Unix ns.
pub(crate) const T0: u64 = 1_767_225_600_000_000_000;
pub(crate) const SECOND: u64 = 1_000_000_000;

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

pub(crate) fn open_wal(data: &Path, segment_size: u64) -> Wal {
    Wal::open(
        data.join("wal"),
        WalOptions::default().segment_size(segment_size),
    )
    .unwrap()
    .0
}

/// One record as written, with the row it must become (`None`: no row).
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) lsn: u64,
    pub(crate) kind: u8,
    pub(crate) row: Option<Json>,
}

fn data_of(i: u64) -> Json {
    match i % 3 {
        0 => json!({
            "mti": "0100",
            "amount": {"transaction": format!("{:012}", i * 100)},
            "currency": {"transaction": "978"},
            "trace": {"stan": format!("{:06}", i % 1_000_000)},
            "card": {"pan": "411111******1111"},
        }),
        1 => {
            json!({"uns": {"path": format!("acme/plant1/line{}/temp", i % 4)}, "value": f64::from(u32::try_from(i).unwrap()) / 2.0})
        }
        _ => json!({"note": format!("message {i}"), "tags": ["a", "b"], "n": i}),
    }
}

/// Message `i`: ts = T0 + i seconds; ISO 8583, UNS or plain by `i % 3`.
pub(crate) fn message(i: u64) -> FluxMsg {
    let data = fluxrig_msg::json::value(&data_of(i), "data").unwrap();
    let mut m = FluxMsg::new(FluxId::from_raw(1_000_000 + i), data);
    m.ts = T0 + i * SECOND;
    m.meta = [("conn", format!("c{}", i % 5))]
        .into_iter()
        .collect::<Meta>();
    if i.is_multiple_of(3) {
        m.meta.insert("iso8583.spec", "abc123");
    }
    if i.is_multiple_of(2) {
        m.reference = Some(FluxId::from_raw(i));
    }
    m
}

fn row(
    i: u64,
    lsn: u64,
    kind: u8,
    direction: &str,
    gear: &str,
    port: Option<&str>,
    reason: Option<&str>,
) -> Json {
    let d = data_of(i);
    let iso = i.is_multiple_of(3);
    let uns = i % 3 == 1;
    let mut meta = json!({"conn": format!("c{}", i % 5)});
    if iso {
        meta["iso8583.spec"] = json!("abc123");
    }
    json!({
        "flux_id": 1_000_000 + i,
        "ts": T0 + i * SECOND,
        "rack": "edge-1",
        "gear": gear,
        "port": port,
        "direction": direction,
        "protocol": if iso { json!("iso8583") } else if uns { json!("uns") } else { Json::Null },
        "mti": if iso { json!("0100") } else { Json::Null },
        "response_code": Json::Null,
        "amount": if iso { json!(i * 100) } else { Json::Null },
        "currency": if iso { json!("978") } else { Json::Null },
        "uns_path": if uns { d["uns"]["path"].clone() } else { Json::Null },
        "value": if uns { d["value"].clone() } else { Json::Null },
        "ref": if i.is_multiple_of(2) { json!(i) } else { Json::Null },
        "meta": meta,
        "data": d,
        "wal_lsn": lsn,
        "kind": kind,
        "reason": reason,
    })
}

/// Appends records for messages `from..from + n`, cycling through every
/// kind the archive knows plus Rack bookkeeping (kind 9): per message an
/// ingress; then an egress, a completion, a dead letter or a bookkeeping
/// record. Every append is durable when this returns.
pub(crate) fn write_mix(
    rt: &tokio::runtime::Runtime,
    wal: &Wal,
    from: u64,
    n: u64,
) -> Vec<Written> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for i in from..from + n {
        let m = message(i);
        let mut recs = vec![(
            records::INGRESS,
            records::encode_ingress("http_in", "out", &m),
            Some(("in", "http_in", Some("out"), None)),
        )];
        match i % 4 {
            0 => recs.push((
                records::EGRESS,
                records::encode_egress("file_out", &m),
                Some(("out", "file_out", None, None)),
            )),
            1 => recs.push((
                records::COMPLETED,
                records::encode_completed("file_out", m.id, m.ts + 1),
                None,
            )),
            2 => recs.push((
                records::DEAD_LETTER,
                records::encode_dead_letter("map", "VRL runtime error", &m),
                Some(("dead", "map", None, Some("VRL runtime error"))),
            )),
            _ => recs.push((9, b"sink offset".to_vec(), None)),
        }
        for (kind, body, shape) in recs {
            // Submitted without waiting, acknowledged below: the appends
            // share syncs (group commit), as a busy Rack's do.
            let p = rt.block_on(wal.submit(kind, body)).unwrap();
            let lsn = p.lsn().0;
            pending.push(p);
            // Acknowledged in small groups, so batches (and segments) stay small.
            if pending.len() == 16 {
                for p in pending.drain(..) {
                    rt.block_on(p).unwrap();
                }
            }
            let row = match (kind, shape) {
                (records::COMPLETED, _) => Some(json!({
                    "flux_id": 1_000_000 + i, "ts": T0 + i * SECOND + 1, "rack": "edge-1",
                    "gear": "file_out", "port": null, "direction": "done", "protocol": null,
                    "mti": null, "response_code": null, "amount": null, "currency": null,
                    "uns_path": null, "value": null, "ref": null, "meta": null, "data": null,
                    "wal_lsn": lsn, "kind": 3, "reason": null,
                })),
                (_, Some((dir, gear, port, reason))) => {
                    Some(row(i, lsn, kind, dir, gear, port, reason))
                }
                _ => None,
            };
            out.push(Written { lsn, kind, row });
        }
    }
    for p in pending {
        rt.block_on(p).unwrap();
    }
    out
}

/// The rows written, in LSN order, within an LSN range.
pub(crate) fn expected_rows(written: &[Written], lsns: std::ops::RangeInclusive<u64>) -> Vec<Json> {
    written
        .iter()
        .filter(|w| lsns.contains(&w.lsn))
        .filter_map(|w| w.row.clone())
        .collect()
}

/// Normalises a row read back (JSON text columns parsed; `wal_segment`
/// dropped: which segment a record landed in depends on batching).
pub(crate) fn normalise(mut row: Json) -> Json {
    let obj = row.as_object_mut().unwrap();
    for k in ["meta", "data"] {
        if let Some(Json::String(s)) = obj.get(k) {
            let parsed: Json = serde_json::from_str(s).unwrap();
            obj.insert(k.into(), parsed);
        }
    }
    obj.remove("wal_segment");
    row
}

/// Rows of Parquet files as pyarrow reads them, with the schema and the
/// compression codecs seen.
pub(crate) fn pyarrow_read(files: &[PathBuf]) -> (Json, Vec<String>, Vec<Json>) {
    let out = fluxrig_test_support::python_script("audit_read.py")
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    let compression = v["compression"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(normalise)
        .collect();
    (v["schema"].clone(), compression, rows)
}

pub(crate) fn first_lsn() -> Lsn {
    Lsn::FIRST
}
