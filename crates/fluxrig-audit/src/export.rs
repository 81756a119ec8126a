//! `fluxrig audit export`: the rows of a time range (archive and WAL tail),
//! optionally filtered by a residency policy, into a new directory of
//! Parquet + manifest that any Parquet reader takes.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray as _;
use arrow_array::types::{TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, new_null_array};
use arrow_select::filter::filter_record_batch;

use crate::error::{AuditError, Result};
use crate::manifest::{ExportInfo, FileEntry, Manifest, ManifestKind};
use crate::parquet_io::{ParquetFile, WriteOptions, read_file};
use crate::residency::Residency;
use crate::schema::{COLUMNS, schema};
use crate::snapshot::snapshot;

/// The file an export writes its rows to.
pub const EXPORT_FILE: &str = "messages.parquet";

/// What to export.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Rows with `ts` at or after this time.
    pub since: Option<SystemTime>,
    /// Rows with `ts` before this time.
    pub until: Option<SystemTime>,
    /// What must not leave the Rack.
    pub residency: Residency,
}

impl ExportOptions {
    /// Sets the lower bound (inclusive).
    #[must_use]
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Sets the upper bound (exclusive).
    #[must_use]
    pub fn until(mut self, t: SystemTime) -> Self {
        self.until = Some(t);
        self
    }

    /// Sets the residency policy.
    #[must_use]
    pub fn residency(mut self, r: Residency) -> Self {
        self.residency = r;
        self
    }
}

/// How an export is going: rows looked at out of all rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportProgress {
    /// Rows read so far.
    pub scanned: u64,
    /// Rows in the archive and the tail.
    pub total: u64,
    /// Rows written so far.
    pub written: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Rows written.
    pub rows: u64,
    /// Rows looked at.
    pub scanned: u64,
    /// The export's manifest.
    pub manifest: Manifest,
}

fn unix_ns(t: SystemTime) -> Result<i64> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AuditError::Invalid("times before 1970 are not supported".into()))?;
    i64::try_from(d.as_nanos())
        .map_err(|_| AuditError::Invalid("time is too far in the future".into()))
}

/// Exports the rows of `data_dir` selected by `options` into `out_dir`
/// (created; must be empty if it exists): `messages.parquet` and a
/// `manifest.json` of kind `export`. `progress` is called after each batch.
pub fn export(
    data_dir: &Path,
    out_dir: &Path,
    options: &ExportOptions,
    progress: &mut dyn FnMut(ExportProgress),
) -> Result<ExportReport> {
    options.residency.validate()?;
    let since = options.since.map(unix_ns).transpose()?;
    let until = options.until.map(unix_ns).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(AuditError::Invalid("--since must be before --until".into()));
    }
    if out_dir.exists() {
        let mut entries =
            std::fs::read_dir(out_dir).map_err(|e| AuditError::io("read", out_dir, e))?;
        if entries.next().is_some() {
            return Err(AuditError::Invalid(format!(
                "{} is not empty: an export never overwrites",
                out_dir.display()
            )));
        }
    }
    let snap = snapshot(data_dir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| AuditError::io("create", out_dir, e))?;

    let total = snap.archived_rows() + snap.tail_rows();
    let tmp = out_dir.join(format!("{EXPORT_FILE}.tmp"));
    let mut file = ParquetFile::create(
        &tmp,
        WriteOptions {
            zstd_level: 3,
            row_group_rows: 128 * 1024,
        },
    )?;
    let mut state = ExportProgress {
        scanned: 0,
        total,
        written: 0,
    };
    let mut lsn_range: Option<[u64; 2]> = None;
    let mut step = |batch: RecordBatch, file: &mut ParquetFile| -> Result<()> {
        state.scanned += batch.num_rows() as u64;
        let selected = select(&batch, since, until)?;
        let out = apply_residency(selected, &options.residency)?;
        if out.num_rows() > 0 {
            let lsns = out
                .column_by_name("wal_lsn")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .map(|a| (a.iter().flatten().min(), a.iter().flatten().max()));
            if let Some((Some(lo), Some(hi))) = lsns {
                lsn_range = Some(lsn_range.map_or([lo, hi], |[a, b]| [a.min(lo), b.max(hi)]));
            }
            file.write(&out)?;
            state.written += out.num_rows() as u64;
        }
        progress(state);
        Ok(())
    };
    let result = (|| -> Result<()> {
        for path in &snap.files {
            for batch in read_file(path)? {
                step(batch?, &mut file)?;
            }
        }
        for batch in &snap.tail {
            step(batch.clone(), &mut file)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        file.abandon();
        return Err(e);
    }
    let written = file.finish(&out_dir.join(EXPORT_FILE))?;
    let [first_lsn, last_lsn] = lsn_range.unwrap_or([0, 0]);
    let mut manifest = Manifest::new(ManifestKind::Export, snap.rack.clone());
    manifest.files.push(FileEntry {
        file: EXPORT_FILE.into(),
        sha256: written.sha256,
        block_sha256: written.blocks,
        bytes: written.bytes,
        rows: written.rows,
        first_lsn,
        last_lsn,
        segments: None,
        prev_chain_head: None,
        chain_head: None,
        ts_range: written.ts_range,
        skipped: std::collections::BTreeMap::new(),
    });
    manifest.export = Some(ExportInfo {
        since: options
            .since
            .map(|t| humantime::format_rfc3339_nanos(t).to_string()),
        until: options
            .until
            .map(|t| humantime::format_rfc3339_nanos(t).to_string()),
        residency: options.residency.clone(),
        archived_through: snap.manifest.as_ref().and_then(Manifest::last_lsn),
    });
    manifest.store(out_dir)?;
    Ok(ExportReport {
        rows: written.rows,
        scanned: state.scanned,
        manifest,
    })
}

/// The rows whose `ts` is in `[since, until)`; all rows when unbounded.
/// Rows without a `ts` are selected only when neither bound is given.
fn select(batch: &RecordBatch, since: Option<i64>, until: Option<i64>) -> Result<RecordBatch> {
    if since.is_none() && until.is_none() {
        return Ok(batch.clone());
    }
    let ts = batch
        .column_by_name("ts")
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| AuditError::Invalid("rows have no ts column".into()))?;
    let mask: BooleanArray = ts
        .iter()
        .map(|t| {
            Some(t.is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)))
        })
        .collect();
    filter_record_batch(batch, &mask).map_err(|e| AuditError::Invalid(e.to_string()))
}

fn apply_residency(batch: RecordBatch, policy: &Residency) -> Result<RecordBatch> {
    if policy.is_empty() || batch.num_rows() == 0 {
        return Ok(batch);
    }
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .cloned()
    };
    let (Some(data), Some(meta)) = (text("data"), text("meta")) else {
        return Err(AuditError::Invalid("rows have no data/meta columns".into()));
    };
    let mut new_data = Vec::with_capacity(batch.num_rows());
    let mut new_meta = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let d = (!data.is_null(i)).then(|| data.value(i));
        let m = (!meta.is_null(i)).then(|| meta.value(i));
        let (d, m) = policy.apply_to_row(d, m);
        new_data.push(d);
        new_meta.push(m);
    }
    let columns: Vec<ArrayRef> = COLUMNS
        .iter()
        .zip(batch.columns())
        .map(|(name, col)| match *name {
            "data" => Arc::new(StringArray::from(new_data.clone())) as ArrayRef,
            "meta" => Arc::new(StringArray::from(new_meta.clone())) as ArrayRef,
            n if policy.hides_column(n) => new_null_array(col.data_type(), col.len()),
            _ => Arc::clone(col),
        })
        .collect();
    RecordBatch::try_new(schema(), columns).map_err(|e| AuditError::Invalid(e.to_string()))
}
