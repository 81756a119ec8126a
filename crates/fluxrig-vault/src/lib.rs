//! The coat check's vault: sensitive values parked under a token,
//! encrypted, Rack-local, with a time to live.
//!
//! A vault is a directory (`<data>/vault/`, 0700) holding:
//!
//! - `master.key` — the master key, unless it comes from the environment
//!   (see [`keys`]); 0600;
//! - `keyring.json` — key ids and their HKDF salts; 0600;
//! - `entries.log` — an append-only log of entries; 0600.
//!
//! Every value is encrypted with AES-256-GCM under the active key (derived
//! by HKDF-SHA256 from the master key and the key's salt) with a fresh
//! random 96-bit nonce; the associated data binds the vault id, the token,
//! the key id, the expiry and the label, so a value cannot be moved to
//! another token or have its expiry extended, and a changed byte fails
//! authentication instead of decrypting into garbage.
//!
//! ## The log
//!
//! Records are `len: u32 LE | crc32c(body): u32 LE | body`. A `PUT` body is
//! `1 | token | key id | expiry | label | fingerprint? | nonce | ciphertext`;
//! a `DEL` body is `2 | token`. At open the log is read from the start: a
//! record cut short or failing its CRC at the very end is a torn write and
//! is cut off; anywhere else the vault refuses to open and names the offset.
//! Appends are buffered and synced by [`Vault::sweep`] (once a second in
//! the coat check gear) and [`Vault::sync`]: a crash loses at most the
//! entries parked since the last sync, whose messages had not left the Rack
//! yet (see `docs/adr/0005-coat-check.md`). When the log grows past
//! [`COMPACT_AT`] bytes and three times its live entries it is rewritten
//! (temporary file, fsync, rename); the copy is written and synced without
//! the lock, so parks and restores go on, and what they append meanwhile
//! is added to its end before the rename.
//!
//! ## Capacity
//!
//! [`ParkOptions::max_entries`] bounds the entries; when the vault is full a
//! park either fails ([`WhenFull::Reject`], the default: the message goes to
//! the gear's `error` port, its card data never in clear on the way on) or
//! evicts the entry closest to expiry ([`WhenFull::EvictOldest`]), reported
//! like an expiry.

pub mod keys;
pub mod token;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use parking_lot::MutexGuard;
use std::time::Duration;

use aes_gcm::aead::{Aead as _, Payload};

use crate::keys::{DataKey, Keyring, Secret};

pub use keys::{KeyEntry, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV};

/// Removals kept for [`Vault::take_removed`] at most.
pub const MAX_REMOVED: usize = 100_000;

/// Log size from which the vault compacts it (when mostly dead records).
pub const COMPACT_AT: u64 = 8 << 20;

/// Entries a compaction copies per hold of the lock.
const COMPACT_CHUNK: usize = 4096;

/// Table capacity from which a sweep shrinks the table when at most a
/// quarter of it is used.
const SHRINK_FROM: usize = 4096;

const LOG: &str = "entries.log";
const PUT: u8 = 1;
const DEL: u8 = 2;
const SEAL_MAGIC: &[u8; 4] = b"FRS1";

/// Why a vault operation failed. Messages never contain values, tokens or
/// keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the vault was doing.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The master key or the keyring is missing or unusable.
    #[error("vault key: {0}")]
    Key(String),
    /// The operating system gave no random bytes.
    #[error("no random bytes: {0}")]
    Random(String),
    /// The vault holds its maximum of entries (policy `reject`).
    #[error("vault full ({0} entries)")]
    Full(usize),
    /// No entry has this token (never parked here, or expired and swept).
    #[error("unknown token")]
    Unknown,
    /// The entry's time to live is over.
    #[error("token expired")]
    Expired,
    /// The entry's key was retired: the value is gone for good.
    #[error("token's key {0} was retired")]
    KeyRetired(u32),
    /// The stored bytes fail authentication: they were changed.
    #[error("vault entry failed authentication (tampered or corrupt)")]
    Tampered,
    /// The log is damaged before its end.
    #[error("vault log {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// No format-preserving token was free after [`token::MAX_ATTEMPTS`].
    #[error("no free format-preserving token")]
    NoToken,
    /// An earlier write failed; nothing more is parked until reopened.
    #[error("vault stopped after a write failure: {0}")]
    Poisoned(String),
}

impl VaultError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> VaultError {
        VaultError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a park does when the vault is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// The park fails.
    #[default]
    Reject,
    /// The entry closest to expiry is removed (and reported as evicted).
    EvictOldest,
}

/// How to park one value.
#[derive(Debug, Clone)]
pub struct ParkOptions<'a> {
    /// How long the entry lives.
    pub ttl: Duration,
    /// Give a format-preserving token when the value is a PAN of 13 to 19
    /// digits (`pan` holds its digits); an opaque one otherwise.
    pub format_preserving: Option<&'a str>,
    /// What the value is (e.g. the field path): kept with the entry and in
    /// expiry events; never a value.
    pub label: &'a str,
    /// The most entries the vault may hold.
    pub max_entries: usize,
    /// What happens when it is full.
    pub when_full: WhenFull,
}

/// Why an entry left the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Its time to live ended.
    Expired,
    /// Its key was retired.
    KeyRetired,
    /// The vault was full (policy `evict_oldest`).
    Evicted,
}

impl Removal {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Expired => "expired",
            Removal::KeyRetired => "key_retired",
            Removal::Evicted => "evicted",
        }
    }
}

/// An entry that left the vault (an expiry event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The token it was parked under.
    pub token: String,
    /// Its label.
    pub label: String,
    /// The key it was encrypted under.
    pub key_id: u32,
    /// When it expired(s), Unix ns.
    pub expires_ns: u64,
    /// Why it left.
    pub reason: Removal,
}

#[derive(Debug)]
struct Entry {
    key_id: u32,
    expires_ns: u64,
    /// Shared by the entries of one label (see [`Inner::intern`]).
    label: Arc<str>,
    fingerprint: Option<[u8; 32]>,
    nonce: [u8; 12],
    ct: Box<[u8]>,
}

impl Entry {
    fn record_len(&self, token: &str) -> u64 {
        (8 + 1 + 1 + token.len() + 4 + 8 + 1 + self.label.len() + 1 + 32 + 12 + self.ct.len())
            as u64
    }
}

struct Inner {
    master: Secret,
    keyring: Keyring,
    keys: HashMap<u32, DataKey>,
    vault_id: [u8; 16],
    /// Entries by token; the token's one allocation is shared with
    /// `by_expiry`. An entry costs about 370 bytes of memory with the
    /// table's slack (`examples/entry_memory.rs`).
    entries: HashMap<Arc<str>, Entry>,
    by_expiry: BTreeSet<(u64, Arc<str>)>,
    /// The labels in use (a few per gear), shared by their entries.
    labels: HashSet<Arc<str>>,
    log: BufWriter<File>,
    log_bytes: u64,
    live_bytes: u64,
    removed: Vec<Removed>,
    poisoned: Option<String>,
    /// Entries may hold a key that is gone: set at open when some do and
    /// when the keyring changes, cleared by the sweep that removes them
    /// (the scan visits every entry under the lock, so it runs only then).
    check_retired: bool,
    /// While a compaction writes its copy of the live entries (without the
    /// lock), the records appended meanwhile, for the end of that copy.
    compacting: Option<Vec<u8>>,
}

/// A vault (see the crate docs). Cheap to share: every operation takes a
/// short lock.
pub struct Vault {
    dir: PathBuf,
    inner: parking_lot::Mutex<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Current time, Unix ns.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn aad(vault_id: &[u8; 16], token: &str, e: &Entry) -> Vec<u8> {
    let mut a = Vec::with_capacity(64 + token.len() + e.label.len());
    a.extend_from_slice(b"fluxrig-vault-v1\0");
    a.extend_from_slice(vault_id);
    push_short(&mut a, token.as_bytes());
    a.extend_from_slice(&e.key_id.to_be_bytes());
    a.extend_from_slice(&e.expires_ns.to_be_bytes());
    push_short(&mut a, e.label.as_bytes());
    if let Some(fp) = &e.fingerprint {
        a.extend_from_slice(fp);
    }
    a
}

fn push_short(out: &mut Vec<u8>, b: &[u8]) {
    out.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&b[..b.len().min(255)]);
}

/// Appends to `out` one record: the length and CRC framing what `body`
/// writes.
fn push_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let len = u32::try_from(out.len() - at - 8).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(&out[at + 8..]);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_record(token: &str, e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(e.record_len(token)).unwrap_or(0));
    push_frame(&mut out, |b| put_body(b, token, e));
    out
}

fn put_body(b: &mut Vec<u8>, token: &str, e: &Entry) {
    b.push(PUT);
    push_short(b, token.as_bytes());
    b.extend_from_slice(&e.key_id.to_be_bytes());
    b.extend_from_slice(&e.expires_ns.to_be_bytes());
    push_short(b, e.label.as_bytes());
    match &e.fingerprint {
        Some(fp) => {
            b.push(1);
            b.extend_from_slice(fp);
        }
        None => b.push(0),
    }
    b.extend_from_slice(&e.nonce);
    b.extend_from_slice(&e.ct);
}

fn del_record(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + token.len());
    push_frame(&mut out, |b| {
        b.push(DEL);
        push_short(b, token.as_bytes());
    });
    out
}

/// A parsed log record.
enum Record {
    Put(String, Entry),
    Del(String),
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn short(&mut self) -> Option<String> {
        let n = usize::from(self.u8()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn parse(body: &[u8]) -> Option<Record> {
    let mut c = Cursor(body);
    match c.u8()? {
        PUT => {
            let token = c.short()?;
            let key_id = u32::from_be_bytes(c.array()?);
            let expires_ns = u64::from_be_bytes(c.array()?);
            let label = Arc::from(c.short()?);
            let fingerprint = match c.u8()? {
                0 => None,
                1 => Some(c.array()?),
                _ => return None,
            };
            let nonce = c.array()?;
            let ct = c.0.into();
            Some(Record::Put(
                token,
                Entry {
                    key_id,
                    expires_ns,
                    label,
                    fingerprint,
                    nonce,
                    ct,
                },
            ))
        }
        DEL => {
            let token = c.short()?;
            c.0.is_empty().then_some(Record::Del(token))
        }
        _ => None,
    }
}

fn open_private_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

static SHARED: Mutex<Vec<(PathBuf, Weak<Vault>)>> = Mutex::new(Vec::new());

impl Vault {
    /// The vault of a Rack data directory (`<data>/vault/`), shared by every
    /// user in this process (the coat check gears and the Rack's journal).
    pub fn shared(data_dir: &Path) -> Result<Arc<Vault>, VaultError> {
        let dir = data_dir.join("vault");
        std::fs::create_dir_all(&dir)
            .map_err(|e| VaultError::io(format!("creating {}", dir.display()), e))?;
        let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        shared.retain(|(_, w)| w.strong_count() > 0);
        if let Some(v) = shared
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(v);
        }
        let v = Arc::new(Vault::open(&dir)?);
        shared.push((key, Arc::downgrade(&v)));
        Ok(v)
    }

    /// Opens (creates) the vault in directory `dir`. Entries that expired
    /// while it was closed are reported by the next [`Vault::sweep`].
    pub fn open(dir: &Path) -> Result<Vault, VaultError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| VaultError::io(format!("creating {}", dir.display()), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let master = keys::load_master(dir)?;
        let keyring = Keyring::load_or_create(dir)?;
        let keys = keyring.derive(&master)?.into_iter().collect();
        let vault_id = keyring.vault_id();
        let path = dir.join(LOG);
        let (entries, log_bytes) = Vault::replay(&path)?;
        let log = open_private_append(&path)
            .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
        let mut inner = Inner {
            master,
            keyring,
            keys,
            vault_id,
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            labels: HashSet::new(),
            log: BufWriter::with_capacity(64 * 1024, log),
            log_bytes,
            live_bytes: 0,
            removed: Vec::new(),
            poisoned: None,
            check_retired: false,
            compacting: None,
        };
        // Entries that expired while the vault was closed stay until the
        // next sweep removes and reports them.
        for (token, mut e) in entries {
            e.label = inner.intern(&e.label);
            inner.insert(token, e);
        }
        // Entries of a key retired while the vault was closed: looked for
        // now, while nobody waits for the lock; the first sweep removes them.
        inner.check_retired = inner
            .entries
            .values()
            .any(|e| !inner.keys.contains_key(&e.key_id));
        Ok(Vault {
            dir: dir.to_path_buf(),
            inner: parking_lot::Mutex::new(inner),
        })
    }

    /// Reads the log: the live entries and the length kept.
    fn replay(path: &Path) -> Result<(HashMap<String, Entry>, u64), VaultError> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VaultError::io(format!("reading {}", path.display()), e)),
        }
        let mut entries = HashMap::new();
        let mut at = 0_usize;
        let corrupt = |offset: usize, reason| VaultError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        while at < bytes.len() {
            let rest = &bytes[at..];
            let torn = |reason| -> Result<Option<()>, VaultError> { Err(corrupt(at, reason)) };
            if rest.len() < 8 {
                break; // torn header
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if rest.len() < 8 + len {
                break; // torn body
            }
            let body = &rest[8..8 + len];
            if crc32c::crc32c(body) != crc {
                if rest.len() == 8 + len {
                    break; // the last record, torn in place
                }
                torn("checksum mismatch")?;
            }
            match parse(body) {
                Some(Record::Put(t, e)) => {
                    entries.insert(t, e);
                }
                Some(Record::Del(t)) => {
                    entries.remove(&t);
                }
                None => {
                    torn("unreadable record")?;
                }
            }
            at += 8 + len;
        }
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), offset = at, bytes = bytes.len() - at, "vault log: cut off a torn tail");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
            f.set_len(at as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| VaultError::io(format!("truncating {}", path.display()), e))?;
        }
        Ok((entries, at as u64))
    }

    /// The vault's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the key new entries are encrypted under.
    pub fn active_key(&self) -> u32 {
        self.inner.lock().keyring.active
    }

    /// True when `token` names an entry (a value that is already a token).
    pub fn contains(&self, token: &str) -> bool {
        self.inner.lock().entries.contains_key(token)
    }

    /// Parks `value`; returns its token.
    pub fn park(
        &self,
        value: &[u8],
        opts: &ParkOptions<'_>,
        now_ns: u64,
    ) -> Result<String, VaultError> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poisoned {
            return Err(VaultError::Poisoned(p.clone()));
        }
        let active = g.keyring.active;
        let ttl = u64::try_from(opts.ttl.as_nanos()).unwrap_or(u64::MAX);
        let expires_ns = now_ns.saturating_add(ttl);
        let (token, fingerprint) = match opts
            .format_preserving
            .filter(|p| token::fits_format_preserving(p))
        {
            Some(pan) => {
                let key = g.keys.get(&active).ok_or(VaultError::KeyRetired(active))?;
                let fp = token::fingerprint(&key.fingerprint, value);
                let mut found = None;
                for attempt in 0..token::MAX_ATTEMPTS {
                    let t = token::format_preserving(&key.token, pan, attempt);
                    if t == pan {
                        continue;
                    }
                    match g.entries.get(t.as_str()) {
                        None => {
                            found = Some(t);
                            break;
                        }
                        // The same value under the same key: refresh it.
                        Some(e) if e.key_id == active && e.fingerprint == Some(fp) => {
                            found = Some(t);
                            break;
                        }
                        Some(_) => {}
                    }
                }
                (found.ok_or(VaultError::NoToken)?, Some(fp))
            }
            None => (token::opaque(&keys::random::<16>()?), None),
        };
        let existing = g.entries.get(token.as_str()).map(|e| e.expires_ns);
        if existing.is_none() && g.entries.len() >= opts.max_entries {
            match opts.when_full {
                WhenFull::Reject => return Err(VaultError::Full(opts.max_entries)),
                WhenFull::EvictOldest => {
                    if let Some((_, t)) = g.by_expiry.iter().next().cloned() {
                        g.remove(&t, Removal::Evicted)?;
                    }
                }
            }
        }
        let mut e = Entry {
            key_id: active,
            expires_ns: expires_ns.max(existing.unwrap_or(0)),
            label: g.intern(opts.label),
            fingerprint,
            nonce: [0; 12],
            ct: Box::default(),
        };
        g.seal_entry(&token, &mut e, value)?;
        g.append(&put_record(&token, &e))?;
        g.insert(token.clone(), e);
        Ok(token)
    }

    /// The value parked under `token`.
    pub fn restore(&self, token: &str, now_ns: u64) -> Result<Vec<u8>, VaultError> {
        let g = self.inner.lock();
        let e = g.entries.get(token).ok_or(VaultError::Unknown)?;
        if e.expires_ns <= now_ns {
            return Err(VaultError::Expired);
        }
        g.open_entry(token, e)
    }

    /// Keeps the entry under `token` until at least `until_ns`: for values
    /// still needed after their time to live, such as the card data of a
    /// reversal waiting for its issuer. The expiry is bound to the
    /// ciphertext, so the value is encrypted again (same key, new nonce) and
    /// recorded. An entry with at least half of that time still to live is
    /// left alone, so a value extended on every use is not rewritten every
    /// time. Fails like [`Vault::restore`] for an unknown or expired token.
    pub fn extend(&self, token: &str, until_ns: u64, now_ns: u64) -> Result<(), VaultError> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poisoned {
            return Err(VaultError::Poisoned(p.clone()));
        }
        let e = g.entries.get(token).ok_or(VaultError::Unknown)?;
        if e.expires_ns <= now_ns {
            return Err(VaultError::Expired);
        }
        if e.expires_ns >= until_ns - until_ns.saturating_sub(now_ns) / 2 {
            return Ok(());
        }
        let plain = g.open_entry(token, e)?;
        let mut longer = Entry {
            key_id: e.key_id,
            expires_ns: until_ns,
            label: Arc::clone(&e.label),
            fingerprint: e.fingerprint,
            nonce: [0; 12],
            ct: Box::default(),
        };
        g.seal_entry(token, &mut longer, &plain)?;
        g.append(&put_record(token, &longer))?;
        g.insert(token.to_owned(), longer);
        Ok(())
    }

    /// Housekeeping, about once a second: picks up a changed keyring
    /// (rotation, retirement), removes expired entries and entries whose
    /// key was retired, syncs the log, compacts it when due. What it removed
    /// (and what evictions removed) is collected for [`Vault::take_removed`].
    pub fn sweep(&self, now_ns: u64) -> Result<(), VaultError> {
        let mut g = self.inner.lock();
        self.reload_keyring(&mut g);
        let mut gone: Vec<(Arc<str>, Removal)> = g
            .by_expiry
            .iter()
            .take_while(|(exp, _)| *exp <= now_ns)
            .map(|(_, t)| (t.clone(), Removal::Expired))
            .collect();
        if std::mem::take(&mut g.check_retired) {
            let retired: Vec<Arc<str>> = g
                .entries
                .iter()
                .filter(|(_, e)| !g.keys.contains_key(&e.key_id) && e.expires_ns > now_ns)
                .map(|(t, _)| t.clone())
                .collect();
            gone.extend(retired.into_iter().map(|t| (t, Removal::KeyRetired)));
        }
        for (t, why) in gone {
            g.remove(&t, why)?;
        }
        g.labels.retain(|l| Arc::strong_count(l) > 1);
        // After a peak, hand back the table's memory (it never shrinks by
        // itself): rehashing what is left is cheap once most is gone.
        let live = g.entries.len();
        if g.entries.capacity() > SHRINK_FROM.max(4 * live) {
            g.entries.shrink_to(2 * live);
        }
        // The fsync runs without the lock: parks and restores go on meanwhile.
        let file = g.flushed_file()?;
        drop(g);
        if let Err(e) = file.sync_data() {
            return Err(self.inner.lock().poison("syncing the vault log", e));
        }
        match self.begin_compaction() {
            Some(copy) => self.finish_compaction(&copy),
            None => Ok(()),
        }
    }

    /// Takes the removals of entries whose label starts with `prefix` (each
    /// is reported once). At most [`MAX_REMOVED`] wait; older ones are
    /// dropped (counted in a warning).
    pub fn take_removed(&self, prefix: &str) -> Vec<Removed> {
        let mut g = self.inner.lock();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut g.removed)
            .into_iter()
            .partition(|r| r.label.starts_with(prefix));
        g.removed = rest;
        mine
    }

    /// Makes every parked entry durable.
    pub fn sync(&self) -> Result<(), VaultError> {
        self.inner.lock().sync()
    }

    fn reload_keyring(&self, g: &mut Inner) {
        match Keyring::load(&self.dir) {
            Ok(Some(k)) if k != g.keyring => {
                if k.vault_id != g.keyring.vault_id {
                    tracing::error!(dir = %self.dir.display(), "vault keyring replaced by another vault's; ignored");
                    return;
                }
                match k.derive(&g.master) {
                    Ok(keys) => {
                        tracing::info!(active = k.active, "vault keyring changed");
                        g.keys = keys.into_iter().collect();
                        g.keyring = k;
                        g.check_retired = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "vault keyring unusable; keeping the previous one");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "vault keyring unreadable; keeping the previous one");
            }
        }
    }

    /// When the log is mostly dead records (past [`COMPACT_AT`] and three
    /// times the live ones) and no compaction runs: the live entries as
    /// records, the start of the log's replacement. From here until
    /// [`Vault::finish_compaction`] appends are also kept aside.
    ///
    /// The copy is taken [`COMPACT_CHUNK`] entries at a time (in expiry
    /// order) under the lock, handed to waiters between chunks (a fair
    /// unlock), so parks and restores wait for one chunk, not for the whole
    /// table. An entry changed or removed between chunks may
    /// be copied twice or missed: its record is among those kept aside,
    /// which come after the copy and decide.
    fn begin_compaction(&self) -> Option<Vec<u8>> {
        let capacity = {
            let mut g = self.inner.lock();
            if g.compacting.is_some()
                || g.poisoned.is_some()
                || g.log_bytes <= COMPACT_AT
                || g.log_bytes <= 3 * g.live_bytes
            {
                return None;
            }
            g.compacting = Some(Vec::new());
            usize::try_from(g.live_bytes).unwrap_or(0)
        };
        let mut copy = Vec::with_capacity(capacity);
        let mut after: Option<(u64, Arc<str>)> = None;
        loop {
            let g = self.inner.lock();
            let chunk = match after.take() {
                Some(last) => g.by_expiry.range((Bound::Excluded(last), Bound::Unbounded)),
                None => g.by_expiry.range(..),
            };
            for (expires, t) in chunk.take(COMPACT_CHUNK) {
                if let Some(e) = g.entries.get(t) {
                    push_frame(&mut copy, |b| put_body(b, t, e));
                }
                after = Some((*expires, Arc::clone(t)));
            }
            if after.is_none() {
                return Some(copy);
            }
            // Whoever waited for the lock gets it before the next chunk.
            MutexGuard::unlock_fair(g);
        }
    }

    /// Writes `copy` to a temporary file and syncs it, without the lock;
    /// then, under the lock, appends what was appended meanwhile and puts
    /// the file in place of the log. A failure before the rename leaves
    /// the old log as it was (it got every append); after it, the vault
    /// stops parking.
    fn finish_compaction(&self, copy: &[u8]) -> Result<(), VaultError> {
        let path = self.dir.join(LOG);
        let tmp = self.dir.join("entries.log.tmp");
        let ctx = |e| VaultError::io(format!("compacting {}", path.display()), e);
        let written = (|| {
            let _ = std::fs::remove_file(&tmp);
            let mut f = open_private_append(&tmp)?;
            f.write_all(copy)?;
            f.sync_data()?;
            Ok::<_, std::io::Error>(f)
        })();
        let mut g = self.inner.lock();
        let tail = g.compacting.take().unwrap_or_default();
        let mut f = match (written, &g.poisoned) {
            (Ok(f), None) => f,
            (Ok(_), Some(p)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(VaultError::Poisoned(p.clone()));
            }
            (Err(e), _) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(ctx(e));
            }
        };
        if let Err(e) = f
            .write_all(&tail)
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(ctx(e));
        }
        keys::sync_dir(&self.dir);
        // The log is now the new file: appends must go there or nowhere.
        let old = match open_private_append(&path) {
            Ok(log) => std::mem::replace(&mut g.log, BufWriter::with_capacity(64 * 1024, log)),
            Err(e) => return Err(g.poison("reopening the compacted vault log", e)),
        };
        g.log_bytes = (copy.len() + tail.len()) as u64;
        tracing::debug!(
            entries = g.entries.len(),
            bytes = g.log_bytes,
            appended_meanwhile = tail.len(),
            "vault log compacted"
        );
        drop(g);
        // Closing the old log frees its blocks, which takes the file system
        // a while for a large one: not under the lock. (What its buffer
        // still holds is in the new log too.)
        drop(old);
        Ok(())
    }

    /// Encrypts `plaintext` under the active key, bound to `aad` (for data
    /// kept elsewhere: the Rack seals raw ISO 8583 frames before its
    /// write-ahead log). Layout: `FRS1 | key id | nonce | ciphertext+tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let g = self.inner.lock();
        let id = g.keyring.active;
        let key = g.keys.get(&id).ok_or(VaultError::KeyRetired(id))?;
        let nonce = keys::random::<12>()?;
        let a = seal_aad(&g.vault_id, aad);
        let ct = key
            .aead
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: &a,
                },
            )
            .map_err(|_| VaultError::Tampered)?;
        let mut out = Vec::with_capacity(4 + 4 + 12 + ct.len());
        out.extend_from_slice(SEAL_MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`Vault::seal`] produced with the same `aad`.
    pub fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < 20 + 16 || &sealed[..4] != SEAL_MAGIC {
            return Err(VaultError::Tampered);
        }
        let id = u32::from_be_bytes([sealed[4], sealed[5], sealed[6], sealed[7]]);
        let nonce: [u8; 12] = sealed[8..20].try_into().map_err(|_| VaultError::Tampered)?;
        let g = self.inner.lock();
        let key = g.keys.get(&id).ok_or(VaultError::KeyRetired(id))?;
        let a = seal_aad(&g.vault_id, aad);
        key.aead
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &sealed[20..],
                    aad: &a,
                },
            )
            .map_err(|_| VaultError::Tampered)
    }
}

/// True when `bytes` look like [`Vault::seal`] output.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 36 && &bytes[..4] == SEAL_MAGIC
}

fn seal_aad(vault_id: &[u8; 16], aad: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + aad.len());
    a.extend_from_slice(b"fluxrig-seal-v1\0");
    a.extend_from_slice(vault_id);
    a.extend_from_slice(aad);
    a
}

impl Inner {
    /// Encrypts `plain` into `e` under its key with a fresh nonce, bound to
    /// the vault, `token` and the entry's key id, expiry, label and
    /// fingerprint.
    fn seal_entry(&self, token: &str, e: &mut Entry, plain: &[u8]) -> Result<(), VaultError> {
        let key = self
            .keys
            .get(&e.key_id)
            .ok_or(VaultError::KeyRetired(e.key_id))?;
        e.nonce = keys::random::<12>()?;
        let a = aad(&self.vault_id, token, e);
        e.ct = key
            .aead
            .encrypt(
                &e.nonce.into(),
                Payload {
                    msg: plain,
                    aad: &a,
                },
            )
            .map_err(|_| VaultError::Tampered)?
            .into_boxed_slice();
        Ok(())
    }

    /// The value in entry `e` of `token`.
    fn open_entry(&self, token: &str, e: &Entry) -> Result<Vec<u8>, VaultError> {
        let key = self
            .keys
            .get(&e.key_id)
            .ok_or(VaultError::KeyRetired(e.key_id))?;
        let a = aad(&self.vault_id, token, e);
        key.aead
            .decrypt(
                &e.nonce.into(),
                Payload {
                    msg: &e.ct,
                    aad: &a,
                },
            )
            .map_err(|_| VaultError::Tampered)
    }

    /// The shared copy of `label` (at most 255 characters, as recorded).
    fn intern(&mut self, label: &str) -> Arc<str> {
        let label = match label.char_indices().nth(255) {
            Some((cut, _)) => &label[..cut],
            None => label,
        };
        if let Some(l) = self.labels.get(label) {
            return Arc::clone(l);
        }
        let l: Arc<str> = Arc::from(label);
        self.labels.insert(Arc::clone(&l));
        l
    }

    fn insert(&mut self, token: String, e: Entry) {
        let token: Arc<str> = match self.entries.get_key_value(token.as_str()) {
            Some((t, old)) => {
                let t = Arc::clone(t);
                self.by_expiry.remove(&(old.expires_ns, Arc::clone(&t)));
                self.live_bytes = self.live_bytes.saturating_sub(old.record_len(&t));
                t
            }
            None => Arc::from(token),
        };
        self.by_expiry.insert((e.expires_ns, Arc::clone(&token)));
        self.live_bytes += e.record_len(&token);
        self.entries.insert(token, e);
    }

    fn remove(&mut self, token: &str, why: Removal) -> Result<(), VaultError> {
        let Some((t, e)) = self.entries.remove_entry(token) else {
            return Ok(());
        };
        self.by_expiry.remove(&(e.expires_ns, t));
        self.live_bytes = self.live_bytes.saturating_sub(e.record_len(token));
        if self.removed.len() >= MAX_REMOVED {
            let n = self.removed.len() / 2;
            self.removed.drain(..n);
            tracing::warn!(dropped = n, "vault removals nobody took; oldest dropped");
        }
        self.removed.push(Removed {
            token: token.to_owned(),
            label: e.label.to_string(),
            key_id: e.key_id,
            expires_ns: e.expires_ns,
            reason: why,
        });
        self.append(&del_record(token))
    }

    fn append(&mut self, rec: &[u8]) -> Result<(), VaultError> {
        if let Some(p) = &self.poisoned {
            return Err(VaultError::Poisoned(p.clone()));
        }
        match self.log.write_all(rec) {
            Ok(()) => {
                self.log_bytes += rec.len() as u64;
                if let Some(tail) = &mut self.compacting {
                    tail.extend_from_slice(rec);
                }
                Ok(())
            }
            Err(e) => Err(self.poison("appending to the vault log", e)),
        }
    }

    /// Flushes the buffer; a handle to the log file to sync.
    fn flushed_file(&mut self) -> Result<File, VaultError> {
        if let Some(p) = &self.poisoned {
            return Err(VaultError::Poisoned(p.clone()));
        }
        match self
            .log
            .flush()
            .and_then(|()| self.log.get_ref().try_clone())
        {
            Ok(f) => Ok(f),
            Err(e) => Err(self.poison("flushing the vault log", e)),
        }
    }

    fn sync(&mut self) -> Result<(), VaultError> {
        if let Some(p) = &self.poisoned {
            return Err(VaultError::Poisoned(p.clone()));
        }
        // A failed sync is never retried and then trusted: poison.
        match self
            .log
            .flush()
            .and_then(|()| self.log.get_ref().sync_data())
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.poison("syncing the vault log", e)),
        }
    }

    fn poison(&mut self, what: &str, e: std::io::Error) -> VaultError {
        let reason = format!("{what}: {e}");
        tracing::error!(error = %reason, "vault stopped parking");
        self.poisoned = Some(reason);
        VaultError::io(what, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn log_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG)).unwrap().len()
    }

    fn opts(ttl: Duration) -> ParkOptions<'static> {
        ParkOptions {
            ttl,
            format_preserving: None,
            label: "card.pan",
            max_entries: 1_000_000,
            when_full: WhenFull::Reject,
        }
    }

    /// A vault whose log is due for compaction at `2 * SEC`: 120,000
    /// entries that expired at `SEC`, and the tokens of `live` that have not.
    fn due_for_compaction(dir: &Path, live: &[&[u8]]) -> (Vault, Vec<String>) {
        let v = Vault::open(dir).unwrap();
        let short = opts(Duration::from_secs(1));
        for i in 0..120_000u32 {
            v.park(&i.to_be_bytes(), &short, 0).unwrap();
        }
        let tokens = live
            .iter()
            .map(|l| v.park(l, &opts(Duration::from_mins(5)), 0).unwrap())
            .collect();
        // Expired entries gone, their records still in the log.
        let g = v.inner.lock();
        assert!(g.log_bytes > COMPACT_AT, "{}", g.log_bytes);
        drop(g);
        (v, tokens)
    }

    #[test]
    fn a_compaction_keeps_what_is_parked_and_removed_while_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (v, tokens) = due_for_compaction(dir.path(), &[b"kept", b"dropped"]);
        {
            // What the sweep does before compacting, then the compaction in
            // its two steps with work in between.
            let mut g = v.inner.lock();
            let expired: Vec<Arc<str>> = g
                .by_expiry
                .iter()
                .take_while(|(exp, _)| *exp <= 2 * SEC)
                .map(|(_, t)| t.clone())
                .collect();
            for t in expired {
                g.remove(&t, Removal::Expired).unwrap();
            }
        }
        let copy = v.begin_compaction().expect("due");
        assert!(v.begin_compaction().is_none(), "one compaction at a time");
        let meanwhile = v
            .park(b"meanwhile", &opts(Duration::from_mins(5)), 2 * SEC)
            .unwrap();
        v.inner.lock().remove(&tokens[1], Removal::Evicted).unwrap();
        v.finish_compaction(&copy).unwrap();
        let after = v
            .park(b"after", &opts(Duration::from_mins(5)), 2 * SEC)
            .unwrap();
        v.sync().unwrap();
        let len = log_len(dir.path());
        assert!(len < 4096, "{len} bytes after compaction");
        drop(v);

        let v = Vault::open(dir.path()).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.restore(&tokens[0], 3 * SEC).unwrap(), b"kept");
        assert_eq!(v.restore(&meanwhile, 3 * SEC).unwrap(), b"meanwhile");
        assert_eq!(v.restore(&after, 3 * SEC).unwrap(), b"after");
        assert!(matches!(
            v.restore(&tokens[1], 3 * SEC),
            Err(VaultError::Unknown)
        ));
        assert!(!dir.path().join("entries.log.tmp").exists());
    }

    #[test]
    fn a_sweep_compacts_a_log_of_mostly_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (v, tokens) = due_for_compaction(dir.path(), &[b"kept"]);
        v.sweep(2 * SEC).unwrap();
        let len = log_len(dir.path());
        assert!(len < 4096, "{len} bytes after the sweep");
        drop(v);
        let v = Vault::open(dir.path()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v.restore(&tokens[0], 3 * SEC).unwrap(), b"kept");
    }

    #[test]
    fn a_sweep_gives_back_the_table_of_a_past_peak() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let short = opts(Duration::from_secs(1));
        for i in 0..20_000u32 {
            v.park(&i.to_be_bytes(), &short, 0).unwrap();
        }
        let kept = v.park(b"kept", &opts(Duration::from_mins(5)), 0).unwrap();
        let peak = v.inner.lock().entries.capacity();
        assert!(peak >= 20_001, "{peak}");

        v.sweep(2 * SEC).unwrap();
        let g = v.inner.lock();
        assert_eq!(g.entries.len(), 1);
        assert!(
            g.entries.capacity() < SHRINK_FROM,
            "{}",
            g.entries.capacity()
        );
        drop(g);
        assert_eq!(v.restore(&kept, 2 * SEC).unwrap(), b"kept");
    }
}
