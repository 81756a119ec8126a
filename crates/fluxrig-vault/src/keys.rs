//! The master key and the keyring.
//!
//! - The **master key** (32 bytes, 64 hex characters) comes from the
//!   environment variable [`MASTER_KEY_ENV`] when it is set, else from the
//!   file named by [`MASTER_KEY_FILE_ENV`], else from `<vault>/master.key`.
//!   A key file must be readable by its owner only (mode 0600); when the
//!   default file does not exist it is created, 0600, with a random key.
//! - The **keyring** (`<vault>/keyring.json`, 0600) lists the vault's key
//!   ids, each with a random 32-byte salt, and which id is active. Key `n`
//!   is `HKDF-SHA256(salt = salt_n, ikm = master)`, expanded into an
//!   AES-256-GCM key, a token key and a fingerprint key. **Rotating** adds a
//!   key and makes it active; **retiring** deletes a key's salt: without it
//!   the key cannot be derived again, so whatever was encrypted under it is
//!   unreadable for good (crypto-shredding), even with the master key.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use aes_gcm::{Aes256Gcm, KeyInit as _};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::VaultError;

/// Environment variable holding the master key (64 hex characters).
pub const MASTER_KEY_ENV: &str = "FLUXRIG_VAULT_KEY";
/// Environment variable naming the master key file.
pub const MASTER_KEY_FILE_ENV: &str = "FLUXRIG_VAULT_KEY_FILE";

const KEYRING: &str = "keyring.json";
const MASTER_FILE: &str = "master.key";

/// A 32-byte secret that never prints.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0_u8; N];
    getrandom::fill(&mut b).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(b)
}

pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(char::from(D[usize::from(c >> 4)]));
        s.push(char::from(D[usize::from(c & 15)]));
    }
    s
}

pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0_u8; N];
    for (i, p) in s.chunks_exact(2).enumerate() {
        let h = char::from(p[0]).to_digit(16)?;
        let l = char::from(p[1]).to_digit(16)?;
        out[i] = u8::try_from(h << 4 | l).ok()?;
    }
    Some(out)
}

/// Where the master key of a vault directory comes from.
fn master_file(dir: &Path) -> (PathBuf, bool) {
    match std::env::var_os(MASTER_KEY_FILE_ENV) {
        Some(p) => (PathBuf::from(p), false),
        None => (dir.join(MASTER_FILE), true),
    }
}

/// Reads the master key (see the module docs); creates the default file
/// when it is missing.
pub(crate) fn load_master(dir: &Path) -> Result<Secret, VaultError> {
    if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
        return unhex::<32>(&v)
            .map(Secret)
            .ok_or_else(|| VaultError::Key(format!("{MASTER_KEY_ENV} is not 64 hex characters")));
    }
    let (path, default) = master_file(dir);
    if !path.exists() && default {
        let key = random::<32>()?;
        write_private(&path, format!("{}\n", hex(&key)).as_bytes())?;
        tracing::warn!(path = %path.display(), "created a new vault master key; keep it (and a copy) where the data is not, or set {MASTER_KEY_ENV}");
        return Ok(Secret(key));
    }
    check_private(&path)?;
    let mut text = String::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| VaultError::io(format!("reading the master key {}", path.display()), e))?;
    unhex::<32>(&text).map(Secret).ok_or_else(|| {
        VaultError::Key(format!(
            "master key file {} does not hold 64 hex characters",
            path.display()
        ))
    })
}

/// Refuses a key file others can read or write.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Key(format!(
            "{} has mode {mode:o}; a key file must be 0600 (chmod 600 it)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), VaultError> {
    Ok(())
}

/// Writes a file readable by its owner only: a temporary file, fsync,
/// rename over `path`, fsync of the directory.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| VaultError::io(ctx("creating the directory of"), e))?;
    let tmp = path.with_extension("tmp");
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| VaultError::io(ctx("writing"), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| VaultError::io(ctx("writing"), e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| VaultError::io(ctx("replacing"), e))?;
    sync_dir(dir);
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// One key of the keyring file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The key id entries record.
    pub id: u32,
    /// When the key was created (Unix ns).
    pub created_ns: u64,
    /// The HKDF salt (hex); absent once the key is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    /// When the key was retired (Unix ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_ns: Option<u64>,
}

impl KeyEntry {
    /// True once retired (its salt is gone).
    pub fn is_retired(&self) -> bool {
        self.salt.is_none()
    }
}

/// The keyring file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Format version (1).
    pub version: u32,
    /// The vault's random id (hex), bound into every entry's associated data.
    pub vault_id: String,
    /// The key new entries are written under.
    pub active: u32,
    /// Every key ever created, retired ones included.
    pub keys: Vec<KeyEntry>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Keyring {
    fn new() -> Result<Keyring, VaultError> {
        Ok(Keyring {
            version: 1,
            vault_id: hex(&random::<16>()?),
            active: 1,
            keys: vec![KeyEntry {
                id: 1,
                created_ns: now_ns(),
                salt: Some(hex(&random::<32>()?)),
                retired_ns: None,
            }],
        })
    }

    /// The keyring of vault directory `dir` (created, with key 1, when the
    /// vault is new).
    pub fn load_or_create(dir: &Path) -> Result<Keyring, VaultError> {
        if let Some(k) = Keyring::load(dir)? {
            return Ok(k);
        }
        let k = Keyring::new()?;
        k.save(dir)?;
        Ok(k)
    }

    /// The keyring of `dir`, `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Keyring>, VaultError> {
        let path = dir.join(KEYRING);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VaultError::io(format!("reading {}", path.display()), e)),
        };
        let k: Keyring = serde_json::from_str(&text)
            .map_err(|e| VaultError::Key(format!("{}: {e}", path.display())))?;
        if k.version != 1 || unhex::<16>(&k.vault_id).is_none() {
            return Err(VaultError::Key(format!(
                "{}: unknown version or bad vault id",
                path.display()
            )));
        }
        Ok(Some(k))
    }

    /// Writes the keyring (atomically, 0600).
    pub fn save(&self, dir: &Path) -> Result<(), VaultError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| VaultError::Key(format!("keyring: {e}")))?;
        write_private(&dir.join(KEYRING), text.as_bytes())
    }

    /// Adds a key and makes it active; returns its id. Entries under older
    /// keys stay readable until they expire or their key is retired.
    pub fn rotate(&mut self) -> Result<u32, VaultError> {
        let id = self.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        self.keys.push(KeyEntry {
            id,
            created_ns: now_ns(),
            salt: Some(hex(&random::<32>()?)),
            retired_ns: None,
        });
        self.active = id;
        Ok(id)
    }

    /// Retires key `id`: its salt is deleted, and with it every value
    /// encrypted under it. The active key cannot be retired (rotate first).
    pub fn retire(&mut self, id: u32) -> Result<(), VaultError> {
        if id == self.active {
            return Err(VaultError::Key(format!(
                "key {id} is the active key; rotate first"
            )));
        }
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| VaultError::Key(format!("no key {id}")))?;
        if k.salt.take().is_some() {
            k.retired_ns = Some(now_ns());
        }
        Ok(())
    }

    pub(crate) fn vault_id(&self) -> [u8; 16] {
        unhex::<16>(&self.vault_id).unwrap_or_default()
    }

    /// The derived keys of every key not retired.
    pub(crate) fn derive(&self, master: &Secret) -> Result<Vec<(u32, DataKey)>, VaultError> {
        self.keys
            .iter()
            .filter_map(|k| Some((k.id, k.salt.as_deref()?)))
            .map(|(id, salt)| {
                let salt = unhex::<32>(salt)
                    .ok_or_else(|| VaultError::Key(format!("key {id}: bad salt")))?;
                Ok((id, DataKey::derive(master, &salt, id)))
            })
            .collect()
    }
}

/// The keys derived for one key id.
pub(crate) struct DataKey {
    pub(crate) aead: Aes256Gcm,
    pub(crate) token: Secret,
    pub(crate) fingerprint: Secret,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub(crate) fn derive(master: &Secret, salt: &[u8; 32], id: u32) -> DataKey {
        let hk = Hkdf::<Sha256>::new(Some(salt), &master.0);
        let expand = |what: &str| {
            let mut okm = [0_u8; 32];
            let info = format!("fluxrig vault v1 key {id} {what}");
            // 32 bytes is far below HKDF-SHA256's limit of 8160.
            let _ = hk.expand(info.as_bytes(), &mut okm);
            okm
        };
        let enc = expand("aes-256-gcm");
        DataKey {
            aead: Aes256Gcm::new(&enc.into()),
            token: Secret(expand("token")),
            fingerprint: Secret(expand("fingerprint")),
        }
    }
}
