//! `fluxrig audit verify`: the WAL's CRCs and hash chain, and the archive's
//! manifest (every file's bytes, contiguous LSN ranges, chain heads that
//! link the files to each other and to the WAL).

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};
use crate::manifest::{BLOCK_SIZE, FileEntry, MANIFEST_NAME, Manifest, ManifestKind};
use crate::parquet_io::footer_rows;
use crate::segments::{self, hex};
use crate::snapshot::{archive_dir, wal_dir};

/// What [`verify`] checked in a sound data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The WAL's report (`None` when there is no `wal/`).
    pub wal: Option<fluxrig_wal::VerifyReport>,
    /// Archive files checked.
    pub files: usize,
    /// Rows in them.
    pub rows: u64,
    /// The last archived LSN.
    pub archived_through: Option<u64>,
    /// Parquet files in the archive directory the manifest does not list
    /// (left by an interrupted compaction or put there by hand); reported,
    /// not an error.
    pub unlisted: Vec<PathBuf>,
}

/// Checks the data directory: the WAL (`fluxrig_wal::verify`: headers,
/// CRCs, LSNs, chain links, seals — strict, so the tail a running Rack is
/// writing may be reported) and the archive (each listed file's size,
/// per-block and whole SHA-256 and row count; contiguous LSN ranges; chain
/// heads linking consecutive files and the WAL segments that follow them;
/// no records removed from the WAL before being archived). Returns the
/// first problem, naming the file and byte offset.
pub fn verify(data_dir: &Path) -> Result<VerifyReport> {
    let wal = wal_dir(data_dir);
    let archive = archive_dir(data_dir);
    if !wal.is_dir() && !archive.is_dir() {
        return Err(AuditError::Invalid(format!(
            "{} holds no wal/ or archive/ directory: not a fluxrig data directory",
            data_dir.display()
        )));
    }
    let wal_report = if wal.is_dir() {
        Some(fluxrig_wal::verify(&wal)?)
    } else {
        None
    };
    let manifest = if archive.is_dir() {
        Manifest::load(&archive)?
    } else {
        None
    };
    let mut report = VerifyReport {
        wal: wal_report,
        files: 0,
        rows: 0,
        archived_through: None,
        unlisted: Vec::new(),
    };
    if let Some(m) = &manifest {
        check_manifest(&archive, m)?;
        report.files = m.files.len();
        report.rows = m.rows();
        report.archived_through = m.last_lsn();
        report.unlisted = unlisted(&archive, m)?;
    }
    if let Some(w) = &report.wal
        && w.segments > 0
    {
        check_wal_against_archive(&wal, &archive, manifest.as_ref(), w)?;
    }
    Ok(report)
}

fn check_manifest(archive: &Path, m: &Manifest) -> Result<()> {
    let mpath = archive.join(MANIFEST_NAME);
    if m.kind != ManifestKind::Archive {
        return Err(AuditError::manifest(
            &mpath,
            "this is an export's manifest, not an archive's",
        ));
    }
    let mut prev: Option<&FileEntry> = None;
    for f in &m.files {
        if f.file.contains('/') || f.file.contains('\\') || f.file.starts_with('.') {
            return Err(AuditError::manifest(
                &mpath,
                format!(
                    "file name `{}` is not a plain name in the archive directory",
                    f.file
                ),
            ));
        }
        let path = archive.join(&f.file);
        if f.first_lsn > f.last_lsn {
            return Err(AuditError::manifest(
                &path,
                "the manifest's LSN range is empty",
            ));
        }
        if let Some(p) = prev {
            if f.first_lsn != p.last_lsn + 1 {
                return Err(AuditError::manifest(
                    &path,
                    format!(
                        "LSNs {}..={} do not continue the previous file, which ends at LSN {}",
                        f.first_lsn, f.last_lsn, p.last_lsn
                    ),
                ));
            }
            if f.prev_chain_head.is_none() || f.prev_chain_head != p.chain_head {
                return Err(AuditError::manifest(
                    &path,
                    "its starting chain head is not the previous file's ending chain head",
                ));
            }
        }
        check_file(&path, f)?;
        prev = Some(f);
    }
    Ok(())
}

/// Size, per-block SHA-256, whole SHA-256 and footer row count.
pub(crate) fn check_file(path: &Path, f: &FileEntry) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AuditError::manifest(
                path,
                "listed in the manifest but missing",
            ));
        }
        Err(e) => return Err(AuditError::io("open", path, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| AuditError::io("stat", path, e))?
        .len();
    let mut whole = Sha256::new();
    let block_len = usize::try_from(BLOCK_SIZE).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; block_len];
    let mut offset = 0u64;
    for (i, expected) in f.block_sha256.iter().enumerate() {
        let want = usize::try_from(f.bytes.saturating_sub(offset).min(BLOCK_SIZE)).unwrap_or(0);
        let got =
            read_up_to(&mut file, &mut buf[..want]).map_err(|e| AuditError::io("read", path, e))?;
        let block = &buf[..got];
        whole.update(block);
        if hex(&Sha256::digest(block)) != *expected {
            return Err(AuditError::Damaged {
                path: path.to_path_buf(),
                offset,
                reason: format!(
                    "the {} block at this offset does not match the manifest's SHA-256",
                    if i == 0 && f.block_sha256.len() == 1 {
                        "file's only"
                    } else {
                        "1 MiB"
                    }
                ),
            });
        }
        offset += got as u64;
    }
    if size != f.bytes {
        return Err(AuditError::Damaged {
            path: path.to_path_buf(),
            offset: size.min(f.bytes),
            reason: format!("the file is {size} bytes, the manifest says {}", f.bytes),
        });
    }
    if hex(&whole.finalize()) != f.sha256 {
        return Err(AuditError::Damaged {
            path: path.to_path_buf(),
            offset: 0,
            reason: "the file's SHA-256 does not match the manifest".into(),
        });
    }
    let rows = footer_rows(path)?;
    if rows != f.rows {
        return Err(AuditError::manifest(
            path,
            format!("the file holds {rows} rows, the manifest says {}", f.rows),
        ));
    }
    Ok(())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn unlisted(archive: &Path, m: &Manifest) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(archive).map_err(|e| AuditError::io("read", archive, e))? {
        let entry = entry.map_err(|e| AuditError::io("read", archive, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".parquet") && !m.files.iter().any(|f| f.file == name) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn check_wal_against_archive(
    wal: &Path,
    archive: &Path,
    manifest: Option<&Manifest>,
    w: &fluxrig_wal::VerifyReport,
) -> Result<()> {
    let segs = segments::list(wal)?;
    let files = manifest.map_or(&[][..], |m| &m.files[..]);
    let archived_next = files.last().map_or(1, |f| f.last_lsn + 1);
    if w.first_lsn.0 > archived_next {
        return Err(AuditError::Gap {
            archived_next,
            wal_first: w.first_lsn.0,
        });
    }
    if let Some(last) = files.last()
        && w.next_lsn.0 <= last.last_lsn
    {
        return Err(AuditError::manifest(
            &archive.join(&last.file),
            format!(
                "the archive holds LSNs up to {} but the WAL ends before LSN {}: they are not the same log",
                last.last_lsn, w.next_lsn
            ),
        ));
    }
    for s in &segs {
        let head = hex(&s.prev_head);
        for f in files {
            let links = (f.last_lsn + 1 == s.first_lsn.0 && f.chain_head.as_ref() != Some(&head))
                || (f.first_lsn == s.first_lsn.0 && f.prev_chain_head.as_ref() != Some(&head));
            if links {
                return Err(AuditError::Manifest {
                    path: s.path.clone(),
                    reason: format!(
                        "the chain head in this segment's header (byte 40) does not match archive file {}",
                        f.file
                    ),
                });
            }
        }
    }
    Ok(())
}
