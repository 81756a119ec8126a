//! SQL over the archive and the WAL tail with the embedded DuckDB.

#![cfg(feature = "duckdb")]
#![allow(clippy::unwrap_used)]

mod common;

use common::{SECOND, T0, open_wal, rt, write_mix};
use fluxrig_audit::{AuditError, CompactOptions, archive_dir, compact_now, query, wal_dir};
use serde_json::json;

#[test]
fn messages_holds_archive_and_tail_each_record_once() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    let written = write_mix(&rt, &wal, 0, 200);
    let report = compact_now(
        &wal_dir(data.path()),
        &archive_dir(data.path()),
        &CompactOptions::default().rack("edge-1"),
    )
    .unwrap();
    let through = report.archived_through.unwrap().0;
    let rows = written.iter().filter(|w| w.row.is_some()).count();
    let out = query(
        data.path(),
        "SELECT count(*) AS n, count(DISTINCT wal_lsn) AS lsns, \
                sum(CASE WHEN wal_lsn <= 0 THEN 0 ELSE 1 END) AS ok, \
                max(wal_lsn) AS last FROM messages",
    )
    .unwrap();
    assert_eq!(out.columns, ["n", "lsns", "ok", "last"]);
    let last = written.iter().rev().find(|w| w.row.is_some()).unwrap().lsn;
    assert_eq!(
        out.rows,
        [[json!(rows), json!(rows), json!(rows), json!(last)]]
    );
    // Both parts are there.
    let parts = query(
        data.path(),
        &format!(
            "SELECT wal_lsn <= {through} AS archived, count(*) AS n FROM messages GROUP BY 1 ORDER BY 1"
        ),
    )
    .unwrap();
    assert_eq!(parts.rows.len(), 2, "{parts:?}");
    // Typed columns: timestamps compare with literals, promoted fields group.
    let since = query(
        data.path(),
        "SELECT count(*) FROM messages WHERE ts >= TIMESTAMPTZ '2026-01-01 00:01:40+00' AND direction = 'in'",
    )
    .unwrap();
    assert_eq!(since.rows, [[json!(100)]]); // messages 100..199
    let by_gear = query(
        data.path(),
        "SELECT gear, direction, count(*) AS n FROM messages GROUP BY ALL ORDER BY gear, direction",
    )
    .unwrap();
    assert_eq!(
        by_gear.rows,
        [
            [json!("file_out"), json!("done"), json!(50)],
            [json!("file_out"), json!("out"), json!(50)],
            [json!("http_in"), json!("in"), json!(200)],
            [json!("map"), json!("dead"), json!(50)],
        ]
    );
    let iso = query(
        data.path(),
        "SELECT sum(amount) AS total, any_value(currency) AS cur, json_extract_string(data, '$.trace.stan') AS stan \
         FROM messages WHERE mti = '0100' AND flux_id = 1000012 GROUP BY stan",
    )
    .unwrap();
    assert_eq!(iso.rows, [[json!(1200 * 2), json!("978"), json!("000012")]]); // ingress + egress
    let ts = query(
        data.path(),
        "SELECT ts FROM messages WHERE flux_id = 1000001 AND direction = 'in'",
    )
    .unwrap();
    let text = ts.rows[0][0].as_str().unwrap().to_owned();
    assert!(text.starts_with("2026-01-01T00:00:01"), "{text}");
    let _ = (T0, SECOND);
    rt.block_on(wal.close()).unwrap();
}

#[test]
fn bad_sql_is_the_callers_error_with_duckdbs_message() {
    let rt = rt();
    let data = tempfile::tempdir().unwrap();
    let wal = open_wal(data.path(), 4 * 1024);
    write_mix(&rt, &wal, 0, 10);
    for sql in [
        "SELEC 1",
        "SELECT nope FROM messages",
        "SELECT * FROM no_such_table",
    ] {
        let err = query(data.path(), sql).unwrap_err();
        assert!(matches!(err, AuditError::Sql(_)), "{sql}: {err:?}");
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains("Error"), "{err}");
    }
    // An empty data directory (no WAL yet) still has the table.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(wal_dir(empty.path())).unwrap();
    let out = query(empty.path(), "SELECT count(*) FROM messages").unwrap();
    assert_eq!(out.rows, [[json!(0)]]);
    rt.block_on(wal.close()).unwrap();
}
