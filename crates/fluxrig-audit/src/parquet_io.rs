//! Writing and reading the archive's Parquet files.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray as _;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{RecordBatch, RecordBatchReader as _};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{AuditError, Result};
use crate::manifest::{FileHash, HashingWriter, sync_dir};
use crate::schema::{COLUMNS, schema};

/// Rows per record batch when building or reading files.
pub(crate) const BATCH_ROWS: usize = 8192;

/// How Parquet files are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOptions {
    pub(crate) zstd_level: i32,
    pub(crate) row_group_rows: usize,
}

/// A Parquet file being written under a temporary name.
pub(crate) struct ParquetFile {
    tmp: PathBuf,
    writer: ArrowWriter<HashingWriter<File>>,
    rows: u64,
    ts_range: Option<[i64; 2]>,
}

/// A finished file.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) sha256: String,
    pub(crate) blocks: Vec<String>,
    pub(crate) bytes: u64,
    pub(crate) rows: u64,
    pub(crate) ts_range: Option<[i64; 2]>,
}

impl ParquetFile {
    pub(crate) fn create(tmp: &Path, opts: WriteOptions) -> Result<ParquetFile> {
        let file = File::create(tmp).map_err(|e| AuditError::io("create", tmp, e))?;
        let level = ZstdLevel::try_new(opts.zstd_level).map_err(|e| AuditError::parquet(tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
            .set_created_by(format!("fluxrig-audit {}", env!("CARGO_PKG_VERSION")))
            .build();
        let sink = HashingWriter {
            inner: file,
            hash: FileHash::default(),
        };
        let writer = ArrowWriter::try_new(sink, schema(), Some(props))
            .map_err(|e| AuditError::parquet(tmp, e))?;
        Ok(ParquetFile {
            tmp: tmp.to_path_buf(),
            writer,
            rows: 0,
            ts_range: None,
        })
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer
            .write(batch)
            .map_err(|e| AuditError::parquet(&self.tmp, e))?;
        self.rows += batch.num_rows() as u64;
        if let Some(ts) = batch
            .column_by_name("ts")
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        {
            for t in ts.iter().flatten() {
                self.ts_range = Some(match self.ts_range {
                    None => [t, t],
                    Some([lo, hi]) => [lo.min(t), hi.max(t)],
                });
            }
        }
        Ok(())
    }

    /// Closes the file, syncs it, renames it to `dest` and syncs the directory.
    pub(crate) fn finish(self, dest: &Path) -> Result<Written> {
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| AuditError::parquet(&self.tmp, e))?;
        sink.inner
            .sync_all()
            .map_err(|e| AuditError::io("fsync", &self.tmp, e))?;
        drop(sink.inner);
        fs::rename(&self.tmp, dest).map_err(|e| AuditError::io("rename", &self.tmp, e))?;
        if let Some(dir) = dest.parent() {
            sync_dir(dir)?;
        }
        let (sha256, blocks, bytes) = sink.hash.finish();
        Ok(Written {
            sha256,
            blocks,
            bytes,
            rows: self.rows,
            ts_range: self.ts_range,
        })
    }

    /// Gives up on the file and removes it.
    pub(crate) fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self);
        let _ = fs::remove_file(tmp);
    }
}

/// Reads an archive (or export) file back, checking its columns are the
/// archive's.
pub(crate) fn read_file(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| AuditError::parquet(path, e))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| AuditError::parquet(path, e))?;
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if names != COLUMNS {
        return Err(AuditError::parquet(
            path,
            format!("columns {names:?} are not the archive's"),
        ));
    }
    let path = path.to_path_buf();
    Ok(reader.map(move |b| {
        b.map_err(|e| AuditError::parquet(&path, e))
            // Files written by other tools may differ in nullability or
            // metadata; the rows are taken under the archive's schema.
            .and_then(|b| {
                RecordBatch::try_new(schema(), b.columns().to_vec())
                    .map_err(|e| AuditError::parquet(&path, e))
            })
    }))
}

/// Row count in a file's footer.
pub(crate) fn footer_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let b =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| AuditError::parquet(path, e))?;
    u64::try_from(b.metadata().file_metadata().num_rows())
        .map_err(|_| AuditError::parquet(path, "negative row count"))
}
