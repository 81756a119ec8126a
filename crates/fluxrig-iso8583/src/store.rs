//! The content-addressed spec store: `<data dir>/specs/sha256/<hex>.yaml`.
//!
//! A stored file is the dialect's YAML as imported; its name is the SHA-256
//! of the dialect's canonical form ([`Spec::canonical_cbor`]), so
//! reformatting a file does not change its identity. Every load re-parses
//! the file and re-computes the hash: a file whose content no longer matches
//! its name is refused.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::sdl::{LoadError, load_str};
use crate::spec::{Spec, SpecHash};

/// Why the store cannot do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The dialect does not load.
    #[error("{0}")]
    Invalid(#[from] LoadError),
    /// A stored file's content does not hash to its name.
    #[error("{path}: content hashes to {actual}, not to its name {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// The hash in the file name.
        expected: SpecHash,
        /// The hash of its content.
        actual: SpecHash,
    },
    /// No stored dialect matches.
    #[error("no stored spec matches `{0}`")]
    NotFound(String),
    /// Several stored dialects match a hash prefix or name.
    #[error("`{0}` matches several stored specs: give more of the hash")]
    Ambiguous(String),
}

/// One stored dialect.
#[derive(Debug, Clone)]
pub struct StoredSpec {
    /// Its hash.
    pub hash: SpecHash,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where the file is.
    pub path: PathBuf,
}

/// A spec store rooted in a data directory.
#[derive(Debug, Clone)]
pub struct SpecStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SpecStore {
    /// The store of data directory `data_dir` (created on first import).
    pub fn new(data_dir: &Path) -> SpecStore {
        SpecStore {
            dir: data_dir.join("specs").join("sha256"),
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path a dialect with this hash is stored at.
    pub fn path_of(&self, hash: &SpecHash) -> PathBuf {
        self.dir.join(format!("{}.yaml", hash.to_hex()))
    }

    /// Validates and stores a dialect; idempotent. `file` names it in errors.
    pub fn import(&self, file: &str, yaml: &str) -> Result<StoredSpec, StoreError> {
        let spec = load_str(file, yaml)?;
        let path = self.path_of(&spec.hash());
        if !path.exists() {
            fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            let tmp = self.dir.join(format!(".{}.tmp", spec.hash().to_hex()));
            let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(yaml.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(StoredSpec {
            hash: spec.hash(),
            name: spec.name().to_owned(),
            version: spec.version().to_owned(),
            path,
        })
    }

    /// Loads the dialect with this hash, re-verifying it.
    pub fn load(&self, hash: &SpecHash) -> Result<Spec, StoreError> {
        let path = self.path_of(hash);
        let yaml = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(hash.to_hex())
            } else {
                io(&path)(e)
            }
        })?;
        let spec = load_str(&path.display().to_string(), &yaml)?;
        if spec.hash() != *hash {
            return Err(StoreError::HashMismatch {
                path,
                expected: *hash,
                actual: spec.hash(),
            });
        }
        Ok(spec)
    }

    /// Every stored dialect, verified, sorted by name then version.
    pub fn list(&self) -> Result<Vec<StoredSpec>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".yaml")) else {
                continue;
            };
            let Some(hash) = SpecHash::from_hex(hex) else {
                continue;
            };
            let spec = self.load(&hash)?;
            out.push(StoredSpec {
                hash,
                name: spec.name().to_owned(),
                version: spec.version().to_owned(),
                path: entry.path(),
            });
        }
        out.sort_by(|a, b| (&a.name, &a.version, a.hash).cmp(&(&b.name, &b.version, b.hash)));
        Ok(out)
    }

    /// Finds a stored dialect by hash, unique hash prefix (at least 8 hex
    /// digits) or name (the newest import wins only when unambiguous).
    pub fn find(&self, key: &str) -> Result<Spec, StoreError> {
        if let Some(h) = SpecHash::from_hex(key) {
            return self.load(&h);
        }
        let all = self.list()?;
        let is_prefix = key.len() >= 8 && key.bytes().all(|c| c.is_ascii_hexdigit());
        let hits: Vec<&StoredSpec> = all
            .iter()
            .filter(|s| {
                s.name == key
                    || (is_prefix && s.hash.to_hex().starts_with(&key.to_ascii_lowercase()))
            })
            .collect();
        match hits.as_slice() {
            [] => Err(StoreError::NotFound(key.to_owned())),
            [one] => self.load(&one.hash),
            _ => Err(StoreError::Ambiguous(key.to_owned())),
        }
    }
}
