//! The manifest: the list of an archive's (or an export's) Parquet files,
//! each with its SHA-256, rows and the WAL range it holds. Written
//! atomically (temporary file, fsync, rename, directory fsync), so a reader
//! sees the old manifest or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};
use crate::residency::Residency;

/// The manifest's file name inside an archive or export directory.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The value of [`Manifest::format`].
pub const FORMAT: &str = "fluxrig-audit-manifest";
/// The manifest version this crate writes.
pub const VERSION: u32 = 1;
/// Bytes per block of [`FileEntry::block_sha256`].
pub const BLOCK_SIZE: u64 = 1 << 20;

/// What a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    /// A Rack's archive: files cover the WAL without gaps, in LSN order.
    Archive,
    /// The output of `fluxrig audit export`: selected rows.
    Export,
}

/// The manifest of an archive or export directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Archive or export.
    pub kind: ManifestKind,
    /// The Rack's name (the `rack` column), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// The files, in LSN order.
    pub files: Vec<FileEntry>,
    /// For an export: how its rows were selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportInfo>,
}

/// One Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name, relative to the manifest's directory.
    pub file: String,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// SHA-256 of each [`BLOCK_SIZE`] block of the file, so a check names
    /// the first modified block's offset.
    pub block_sha256: Vec<String>,
    /// File size.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
    /// First and last LSN of the WAL records the file covers (archive: every
    /// record in the range, rows or not; export: of the rows it holds).
    pub first_lsn: u64,
    /// See `first_lsn`.
    pub last_lsn: u64,
    /// Archive: the first and last WAL segment numbers it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<[u64; 2]>,
    /// Archive: the WAL chain head before the file's first record (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_chain_head: Option<String>,
    /// Archive: the WAL chain head after its last record — the hash of that
    /// record, which commits to the whole log before it (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<String>,
    /// Earliest and latest `ts` in the file (Unix ns), when any row has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_range: Option<[i64; 2]>,
    /// Records in the range that made no row, by kind (Rack bookkeeping).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<u8, u64>,
}

/// How an export selected its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportInfo {
    /// Lower bound on `ts` (inclusive), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Upper bound on `ts` (exclusive), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The residency policy applied to the rows.
    #[serde(default, skip_serializing_if = "Residency::is_empty")]
    pub residency: Residency,
    /// The archive's last LSN when the export was taken (rows beyond came
    /// from the WAL tail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_through: Option<u64>,
}

impl Manifest {
    /// An empty manifest.
    pub fn new(kind: ManifestKind, rack: Option<String>) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            kind,
            rack,
            files: Vec::new(),
            export: None,
        }
    }

    /// The manifest in `dir`, or `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io("read", &path, e)),
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            AuditError::manifest(
                &path,
                format!(
                    "not a valid manifest (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(AuditError::manifest(
                &path,
                format!(
                    "unsupported manifest format {} version {} (this build reads {FORMAT} {VERSION})",
                    m.format, m.version
                ),
            ));
        }
        Ok(Some(m))
    }

    /// Writes the manifest into `dir` atomically.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_NAME);
        let tmp = dir.join(format!("{MANIFEST_NAME}.tmp"));
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| AuditError::manifest(&path, e.to_string()))?;
        text.push('\n');
        write_durably(&tmp, text.as_bytes())?;
        fs::rename(&tmp, &path).map_err(|e| AuditError::io("rename", &tmp, e))?;
        sync_dir(dir)
    }

    /// The last LSN the files cover.
    pub fn last_lsn(&self) -> Option<u64> {
        self.files.last().map(|f| f.last_lsn)
    }

    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// SHA-256 of a file, whole and per [`BLOCK_SIZE`] block, and its size.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileHash {
    whole: Sha256,
    block: Sha256,
    in_block: u64,
    blocks: Vec<String>,
    bytes: u64,
}

impl FileHash {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let room = usize::try_from(BLOCK_SIZE - self.in_block).unwrap_or(usize::MAX);
            let n = room.min(data.len());
            self.block.update(&data[..n]);
            self.in_block += n as u64;
            data = &data[n..];
            if self.in_block == BLOCK_SIZE {
                let b = std::mem::take(&mut self.block);
                self.blocks.push(crate::segments::hex(&b.finalize()));
                self.in_block = 0;
            }
        }
    }

    /// (sha256, block hashes, bytes).
    pub(crate) fn finish(mut self) -> (String, Vec<String>, u64) {
        if self.in_block > 0 || self.blocks.is_empty() {
            self.blocks
                .push(crate::segments::hex(&self.block.finalize()));
        }
        (
            crate::segments::hex(&self.whole.finalize()),
            self.blocks,
            self.bytes,
        )
    }
}

/// A `Write` that hashes what passes through.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hash: FileHash,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| AuditError::io("create", path, e))?;
    f.write_all(bytes)
        .map_err(|e| AuditError::io("write", path, e))?;
    f.sync_all().map_err(|e| AuditError::io("fsync", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("fsync directory", dir, e))
}

/// Paths of the files a manifest lists, in order.
pub fn file_paths(dir: &Path, manifest: &Manifest) -> Vec<PathBuf> {
    manifest.files.iter().map(|f| dir.join(&f.file)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hashes_split_at_block_size() {
        let data = vec![7u8; usize::try_from(BLOCK_SIZE).unwrap() * 2 + 5];
        let mut a = FileHash::default();
        a.update(&data);
        let mut b = FileHash::default();
        for chunk in data.chunks(1000) {
            b.update(chunk);
        }
        let (wa, ba, na) = a.finish();
        let (wb, bb, nb) = b.finish();
        assert_eq!((wa.clone(), ba.clone(), na), (wb, bb, nb));
        assert_eq!(ba.len(), 3);
        assert_eq!(ba[0], ba[1]);
        assert_eq!(na, data.len() as u64);
        assert_eq!(wa, crate::segments::hex(&Sha256::digest(&data)));
        let (_, empty_blocks, _) = FileHash::default().finish();
        assert_eq!(empty_blocks.len(), 1);
    }

    #[test]
    fn store_then_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut m = Manifest::new(ManifestKind::Archive, Some("edge".into()));
        m.files.push(FileEntry {
            file: "a.parquet".into(),
            sha256: "00".into(),
            block_sha256: vec!["00".into()],
            bytes: 1,
            rows: 2,
            first_lsn: 1,
            last_lsn: 3,
            segments: Some([0, 0]),
            prev_chain_head: Some("11".into()),
            chain_head: Some("22".into()),
            ts_range: None,
            skipped: [(5, 1)].into_iter().collect(),
        });
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
        assert!(!dir.path().join("manifest.json.tmp").exists());
        fs::write(dir.path().join(MANIFEST_NAME), "{").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a valid manifest"), "{err}");
    }
}
