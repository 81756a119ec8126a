//! SQL over a data directory with an embedded DuckDB (feature `duckdb`).
//!
//! The table `messages` is a view over the archive's Parquet files and the
//! WAL tail not yet compacted (decoded into the same columns and written to
//! a temporary Parquet file for the query's lifetime), so every record is
//! in it exactly once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use duckdb::Connection;
use duckdb::arrow::array::{Array, ArrayRef};
use duckdb::arrow::datatypes::DataType;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as Json;

use crate::error::{AuditError, Result};
use crate::parquet_io::{ParquetFile, WriteOptions};
use crate::snapshot::snapshot;

/// A query's result: column names and rows of JSON values (numbers and
/// booleans as such, everything else as text; timestamps in RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Whether each column is numeric (right-aligned in the table).
    pub numeric: Vec<bool>,
    /// The rows.
    pub rows: Vec<Vec<Json>>,
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("fluxrig-audit-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| AuditError::io("create", &p, e))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn db_err(e: &duckdb::Error) -> AuditError {
    AuditError::Database(e.to_string())
}

/// Runs `sql` over the data directory's `messages`.
pub fn query(data_dir: &Path, sql: &str) -> Result<QueryOutput> {
    let snap = snapshot(data_dir)?;
    let tmp = TempDir::new()?;
    let tail_path = tmp.0.join("tail.parquet");
    let mut tail = ParquetFile::create(
        &tmp.0.join("tail.parquet.tmp"),
        WriteOptions {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
        },
    )?;
    for b in &snap.tail {
        tail.write(b)?;
    }
    tail.finish(&tail_path)?;

    let mut files: Vec<String> = snap
        .files
        .iter()
        .map(|p| sql_string(&p.to_string_lossy()))
        .collect();
    files.push(sql_string(&tail_path.to_string_lossy()));
    let conn = Connection::open_in_memory().map_err(|e| db_err(&e))?;
    conn.execute_batch(&format!(
        "SET autoinstall_known_extensions = false;\n\
         SET autoload_known_extensions = false;\n\
         SET TimeZone = 'UTC';\n\
         CREATE VIEW messages AS SELECT * FROM read_parquet([{}]);",
        files.join(", ")
    ))
    .map_err(|e| db_err(&e))?;

    // Errors from here on are about the caller's SQL (parse, bind,
    // conversion at run time), except the database's own I/O.
    let classify = |e: duckdb::Error| {
        let msg = e.to_string();
        if msg.starts_with("IO Error") {
            AuditError::Database(msg)
        } else {
            AuditError::Sql(msg)
        }
    };
    let mut stmt = conn.prepare(sql).map_err(classify)?;
    let arrow = stmt.query_arrow([]).map_err(classify)?;
    let schema = arrow.get_schema();
    let batches: Vec<_> = arrow.collect();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let numeric = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let mut rows = Vec::new();
    let options = FormatOptions::default().with_display_error(true);
    for batch in &batches {
        let cols: Vec<Vec<Json>> = batch
            .columns()
            .iter()
            .map(|c| column_json(c, &options))
            .collect::<Result<_>>()?;
        for i in 0..batch.num_rows() {
            rows.push(cols.iter().map(|c| c[i].clone()).collect());
        }
    }
    Ok(QueryOutput {
        columns,
        numeric,
        rows,
    })
}

fn column_json(col: &ArrayRef, options: &FormatOptions<'_>) -> Result<Vec<Json>> {
    use duckdb::arrow::array::AsArray as _;
    use duckdb::arrow::datatypes as t;
    let n = col.len();
    let nulls = |i: usize| col.is_null(i);
    macro_rules! prim {
        ($ty:ty) => {{
            let a = col.as_primitive::<$ty>();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Json::Null
                    } else {
                        Json::from(a.value(i))
                    }
                })
                .collect()
        }};
    }
    Ok(match col.data_type() {
        DataType::Boolean => {
            let a = col.as_boolean();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Json::Null
                    } else {
                        Json::Bool(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Int8 => prim!(t::Int8Type),
        DataType::Int16 => prim!(t::Int16Type),
        DataType::Int32 => prim!(t::Int32Type),
        DataType::Int64 => prim!(t::Int64Type),
        DataType::UInt8 => prim!(t::UInt8Type),
        DataType::UInt16 => prim!(t::UInt16Type),
        DataType::UInt32 => prim!(t::UInt32Type),
        DataType::UInt64 => prim!(t::UInt64Type),
        DataType::Float32 => prim!(t::Float32Type),
        DataType::Float64 => prim!(t::Float64Type),
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Json::Null
                    } else {
                        Json::from(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Timestamp(unit, tz) => {
            let a: Vec<Option<i64>> = match unit {
                t::TimeUnit::Second => col
                    .as_primitive::<t::TimestampSecondType>()
                    .iter()
                    .collect(),
                t::TimeUnit::Millisecond => col
                    .as_primitive::<t::TimestampMillisecondType>()
                    .iter()
                    .collect(),
                t::TimeUnit::Microsecond => col
                    .as_primitive::<t::TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                t::TimeUnit::Nanosecond => col
                    .as_primitive::<t::TimestampNanosecondType>()
                    .iter()
                    .collect(),
            };
            a.into_iter()
                .map(|v| {
                    v.map_or(Json::Null, |v| {
                        Json::String(rfc3339(*unit, v, tz.is_some()))
                    })
                })
                .collect()
        }
        dt => {
            // Everything else as DuckDB/Arrow display it; exact decimals
            // (HUGEINT sums, DECIMAL) become JSON numbers when they are.
            let decimal = matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..));
            let f = ArrayFormatter::try_new(col.as_ref(), options)
                .map_err(|e| AuditError::Database(e.to_string()))?;
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        return Json::Null;
                    }
                    let s = f.value(i).to_string();
                    if decimal
                        && let Some(v) = s
                            .parse::<i64>()
                            .ok()
                            .map(Json::from)
                            .or_else(|| s.parse::<u64>().ok().map(Json::from))
                            .or_else(|| s.parse::<f64>().ok().map(Json::from))
                    {
                        return v;
                    }
                    Json::String(s)
                })
                .collect()
        }
    })
}

/// An instant (time zone-aware column) in UTC with `Z`; a naive timestamp
/// in the same form without the `Z`.
fn rfc3339(unit: duckdb::arrow::datatypes::TimeUnit, v: i64, aware: bool) -> String {
    use duckdb::arrow::datatypes::TimeUnit as U;
    use std::time::{Duration, UNIX_EPOCH};
    let (per_sec, nanos_per) = match unit {
        U::Second => (1, 1_000_000_000),
        U::Millisecond => (1_000, 1_000_000),
        U::Microsecond => (1_000_000, 1_000),
        U::Nanosecond => (1_000_000_000, 1),
    };
    let secs = v.div_euclid(per_sec);
    let sub = u32::try_from(v.rem_euclid(per_sec) * nanos_per).unwrap_or(0);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), sub))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(sub))))
    };
    let Some(t) = t else {
        return v.to_string();
    };
    let text = match unit {
        U::Second => humantime::format_rfc3339_seconds(t).to_string(),
        U::Millisecond => humantime::format_rfc3339_millis(t).to_string(),
        U::Microsecond => humantime::format_rfc3339_micros(t).to_string(),
        U::Nanosecond => humantime::format_rfc3339_nanos(t).to_string(),
    };
    if aware {
        text
    } else {
        text.trim_end_matches('Z').to_owned()
    }
}

fn display(v: &Json, null: &str) -> String {
    match v {
        Json::Null => null.to_owned(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl QueryOutput {
    /// An aligned text table with a header, `NULL` for nulls and a row count.
    pub fn to_table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| display(v, "NULL").replace(['\n', '\r', '\t'], " "))
                    .collect()
            })
            .collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.columns[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let mut out = String::new();
        let line = |out: &mut String, items: &[String]| {
            let parts: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let pad = widths[i].saturating_sub(s.chars().count());
                    if self.numeric[i] {
                        format!("{}{s}", " ".repeat(pad))
                    } else {
                        format!("{s}{}", " ".repeat(pad))
                    }
                })
                .collect();
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&mut out, &self.columns);
        line(
            &mut out,
            &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
        );
        for r in &cells {
            line(&mut out, r);
        }
        let n = self.rows.len();
        let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
        out
    }

    /// A JSON array of objects, keys in column order.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (n, r) in self.rows.iter().enumerate() {
            out.push_str(if n == 0 { "\n  {" } else { ",\n  {" });
            for (i, v) in r.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::from(self.columns[i].as_str()).to_string());
                out.push_str(": ");
                out.push_str(&v.to_string());
            }
            out.push('}');
        }
        out.push_str(if self.rows.is_empty() { "]\n" } else { "\n]\n" });
        out
    }

    /// CSV (RFC 4180): a header line, then one line per row; nulls are empty.
    pub fn to_csv(&self) -> String {
        fn field(s: &str) -> String {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| field(c)).collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for r in &self.rows {
            let line: Vec<String> = r.iter().map(|v| field(&display(v, ""))).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> QueryOutput {
        QueryOutput {
            columns: vec!["gear".into(), "n".into()],
            numeric: vec![false, true],
            rows: vec![
                vec![Json::from("in"), Json::from(12)],
                vec![Json::from("a,\"b\""), Json::Null],
            ],
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            out().to_table(),
            "gear      n\n-----  ----\nin       12\na,\"b\"  NULL\n(2 rows)\n"
        );
        assert_eq!(out().to_csv(), "gear,n\r\nin,12\r\n\"a,\"\"b\"\"\",\r\n");
        let j: Json = serde_json::from_str(&out().to_json()).unwrap();
        assert_eq!(
            j,
            serde_json::json!([{"gear":"in","n":12},{"gear":"a,\"b\"","n":null}])
        );
        let empty = QueryOutput {
            rows: vec![],
            ..out()
        };
        assert_eq!(empty.to_json(), "[]\n");
    }
}
