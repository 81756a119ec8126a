//! A fault-injecting, in-memory [`Storage`] for crash and error tests.
//!
//! [`FaultStorage`] models a directory on a disk the way a crash sees it:
//! every file has its *current* bytes (what reads return) and its *durable*
//! bytes (what survives power loss). `sync_data` makes a file's current bytes
//! durable; `sync_dir` makes the directory's current entries durable. A
//! created, renamed or removed file is only durably so after `sync_dir`.
//! [`FaultStorage::crash`] returns the post-crash image: durable entries with
//! their durable bytes, nothing else.
//!
//! On top of that a [`FaultPlan`] injects faults at chosen operations: a
//! crash at the n-th sync (the disk freezes: that sync and everything after
//! it fail), a failed sync (reported once, after which the file's unsynced
//! bytes are not persisted by later syncs unless written again — Linux's
//! behaviour after a writeback error),
//! a failed write, short writes, and a full disk. [`FaultStorage::flip_bit`]
//! corrupts bytes in place.
//!
//! Clones share the same disk, so a test keeps a handle while the WAL owns
//! another.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile, StorageLock};

/// Which faults to inject. Counters are 1-based and count from the last
/// [`FaultStorage::set_plan`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultPlan {
    /// The disk dies at this sync (file or directory): that sync fails, does
    /// not take effect, and every later operation fails too.
    pub crash_at_sync: Option<u64>,
    /// This sync fails (EIO) without taking effect; the file's unsynced
    /// bytes are then never persisted by a later sync unless rewritten.
    pub fail_sync_at: Option<u64>,
    /// This write fails (EIO) after writing the first half of its bytes.
    pub fail_write_at: Option<u64>,
    /// Every write writes at most half of what it is given (at least one byte).
    pub short_writes: bool,
    /// Writes that would make the files' total size exceed this many bytes
    /// fail with "no space left on device".
    pub capacity: Option<u64>,
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Crash at the n-th sync.
    #[must_use]
    pub fn crash_at_sync(mut self, n: u64) -> FaultPlan {
        self.crash_at_sync = Some(n);
        self
    }

    /// Fail the n-th sync.
    #[must_use]
    pub fn fail_sync_at(mut self, n: u64) -> FaultPlan {
        self.fail_sync_at = Some(n);
        self
    }

    /// Fail the n-th write.
    #[must_use]
    pub fn fail_write_at(mut self, n: u64) -> FaultPlan {
        self.fail_write_at = Some(n);
        self
    }

    /// Make every write short.
    #[must_use]
    pub fn short_writes(mut self) -> FaultPlan {
        self.short_writes = true;
        self
    }

    /// Limit the disk to `bytes`.
    #[must_use]
    pub fn capacity(mut self, bytes: u64) -> FaultPlan {
        self.capacity = Some(bytes);
        self
    }
}

/// Operation counts since the last [`FaultStorage::set_plan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// `write_at` calls.
    pub writes: u64,
    /// `sync_data` and `sync_dir` calls.
    pub syncs: u64,
    /// Whether the disk has frozen (a planned crash happened).
    pub crashed: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges whose write-back failed: like Linux after a failed
    /// fsync, the pages are marked clean, so no later sync persists them
    /// unless they are written again. Reads still see the new bytes.
    lost: Vec<(usize, usize)>,
}

impl Inode {
    /// A successful sync: everything current becomes durable, except the
    /// lost ranges, which keep what the disk had (zeros past its end).
    fn persist(&mut self) {
        let mut durable = self.data.clone();
        for &(start, end) in &self.lost {
            for (i, b) in durable.iter_mut().enumerate().take(end).skip(start) {
                *b = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        self.durable = durable;
    }

    /// A failed sync: whatever differs from the disk is lost.
    fn fail_sync(&mut self) {
        let first_diff = self
            .data
            .iter()
            .zip(&self.durable)
            .position(|(a, b)| a != b)
            .unwrap_or(self.durable.len().min(self.data.len()));
        if first_diff < self.data.len() {
            self.lost.push((first_diff, self.data.len()));
        }
    }

    /// New bytes written over `[start, end)` are dirty again.
    fn rewritten(&mut self, start: usize, end: usize) {
        let mut kept = Vec::new();
        for &(s, e) in &self.lost {
            if e <= start || s >= end {
                kept.push((s, e));
            } else {
                if s < start {
                    kept.push((s, start));
                }
                if e > end {
                    kept.push((end, e));
                }
            }
        }
        self.lost = kept;
    }
}

#[derive(Debug, Default)]
struct Disk {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    locked: bool,
    plan: FaultPlan,
    stats: FaultStats,
}

impl Disk {
    fn frozen(&self) -> io::Result<()> {
        if self.stats.crashed {
            Err(io::Error::other("simulated crash: the disk is gone"))
        } else {
            Ok(())
        }
    }

    /// Counts a sync and decides whether it takes effect.
    fn sync_point(&mut self) -> io::Result<SyncOutcome> {
        self.frozen()?;
        self.stats.syncs += 1;
        let n = self.stats.syncs;
        if self.plan.crash_at_sync == Some(n) {
            self.stats.crashed = true;
            return Err(io::Error::other("simulated crash at this sync"));
        }
        if self.plan.fail_sync_at == Some(n) {
            return Ok(SyncOutcome::Fail);
        }
        Ok(SyncOutcome::Persist)
    }

    fn total_len(&self) -> u64 {
        self.names
            .values()
            .map(|&i| self.inodes[i].data.len() as u64)
            .sum()
    }
}

enum SyncOutcome {
    Persist,
    Fail,
}

/// An in-memory directory that can crash, fail and corrupt on command.
#[derive(Debug, Clone)]
pub struct FaultStorage {
    disk: Arc<Mutex<Disk>>,
    dir: PathBuf,
}

impl Default for FaultStorage {
    fn default() -> Self {
        FaultStorage::new()
    }
}

impl FaultStorage {
    /// An empty directory, named `/fault-storage` in error messages.
    pub fn new() -> FaultStorage {
        FaultStorage {
            disk: Arc::default(),
            dir: PathBuf::from("/fault-storage"),
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock can only come from a bug in this
        // module; the data is still consistent enough for a test to report.
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the fault plan and resets the operation counters.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut d = self.disk();
        d.plan = plan;
        let crashed = d.stats.crashed;
        d.stats = FaultStats {
            crashed,
            ..FaultStats::default()
        };
    }

    /// Operation counts since the last plan.
    pub fn stats(&self) -> FaultStats {
        self.disk().stats
    }

    /// The post-crash image: a new, unlocked storage holding only durable
    /// directory entries with their durable bytes. This storage is left as
    /// it is (a writer still using it keeps failing if it froze).
    #[must_use]
    pub fn crash(&self) -> FaultStorage {
        let d = self.disk();
        let mut inodes = Vec::new();
        let mut names = BTreeMap::new();
        for (name, &i) in &d.durable_names {
            let bytes = d.inodes[i].durable.clone();
            inodes.push(Inode {
                data: bytes.clone(),
                durable: bytes,
                lost: Vec::new(),
            });
            names.insert(name.clone(), inodes.len() - 1);
        }
        FaultStorage {
            disk: Arc::new(Mutex::new(Disk {
                inodes,
                durable_names: names.clone(),
                names,
                ..Disk::default()
            })),
            dir: self.dir.clone(),
        }
    }

    /// The current names in the directory, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.disk().names.keys().cloned().collect()
    }

    /// The current bytes of a file.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let d = self.disk();
        d.names.get(name).map(|&i| d.inodes[i].data.clone())
    }

    /// Creates or replaces a file with `bytes`, durably (as if it had been
    /// there before the WAL started).
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        let mut d = self.disk();
        d.inodes.push(Inode {
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            lost: Vec::new(),
        });
        let i = d.inodes.len() - 1;
        d.names.insert(name.to_owned(), i);
        d.durable_names.insert(name.to_owned(), i);
    }

    /// Flips one bit of a file, in its current and durable bytes.
    /// Returns false when the file or the offset does not exist.
    pub fn flip_bit(&self, name: &str, offset: u64, bit: u8) -> bool {
        let mut d = self.disk();
        let Some(&i) = d.names.get(name) else {
            return false;
        };
        let Ok(at) = usize::try_from(offset) else {
            return false;
        };
        let inode = &mut d.inodes[i];
        let mut hit = false;
        for bytes in [&mut inode.data, &mut inode.durable] {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << (bit % 8);
                hit = true;
            }
        }
        hit
    }

    /// Truncates a file, current and durable bytes alike.
    pub fn truncate_file(&self, name: &str, len: u64) -> bool {
        let mut d = self.disk();
        let Some(&i) = d.names.get(name) else {
            return false;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let inode = &mut d.inodes[i];
        inode.data.truncate(len);
        inode.durable.truncate(len);
        true
    }
}

impl Storage for FaultStorage {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let d = self.disk();
        d.frozen()?;
        Ok(d.names.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let d = self.disk();
        d.frozen()?;
        let &inode = d
            .names
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))?;
        Ok(Box::new(FaultFile {
            disk: Arc::clone(&self.disk),
            inode,
        }))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut d = self.disk();
        d.frozen()?;
        if d.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        d.inodes.push(Inode::default());
        let inode = d.inodes.len() - 1;
        d.names.insert(name.to_owned(), inode);
        Ok(Box::new(FaultFile {
            disk: Arc::clone(&self.disk),
            inode,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.frozen()?;
        let inode = d
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))?;
        d.names.insert(to.to_owned(), inode);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.frozen()?;
        d.names
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut d = self.disk();
        match d.sync_point()? {
            SyncOutcome::Persist => {
                d.durable_names = d.names.clone();
                Ok(())
            }
            SyncOutcome::Fail => Err(io::Error::other("simulated directory fsync failure")),
        }
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn StorageLock>>> {
        let mut d = self.disk();
        d.frozen()?;
        if d.locked {
            return Ok(None);
        }
        d.locked = true;
        Ok(Some(Box::new(FaultLock {
            disk: Arc::clone(&self.disk),
        })))
    }
}

#[derive(Debug)]
struct FaultFile {
    disk: Arc<Mutex<Disk>>,
    inode: usize,
}

impl FaultFile {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StorageFile for FaultFile {
    fn size(&self) -> io::Result<u64> {
        let d = self.disk();
        d.frozen()?;
        Ok(d.inodes[self.inode].data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let d = self.disk();
        d.frozen()?;
        let data = &d.inodes[self.inode].data;
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut d = self.disk();
        d.frozen()?;
        d.stats.writes += 1;
        let nth = d.stats.writes;
        let mut n = buf.len();
        if d.plan.short_writes && n > 1 {
            n /= 2;
        }
        let fail = d.plan.fail_write_at == Some(nth);
        if fail {
            n /= 2;
        }
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        let grows = (at + n).saturating_sub(d.inodes[self.inode].data.len()) as u64;
        if let Some(cap) = d.plan.capacity
            && d.total_len() + grows > cap
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        let inode = &mut d.inodes[self.inode];
        if inode.data.len() < at + n {
            inode.data.resize(at + n, 0);
        }
        inode.data[at..at + n].copy_from_slice(&buf[..n]);
        inode.rewritten(at, at + n);
        if fail {
            return Err(io::Error::other("simulated write failure"));
        }
        Ok(n)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.disk();
        d.frozen()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let inode = &mut d.inodes[self.inode];
        inode.data.resize(len, 0);
        for r in &mut inode.lost {
            r.1 = r.1.min(len);
        }
        inode.lost.retain(|r| r.0 < r.1);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.disk();
        let outcome = d.sync_point()?;
        let inode = &mut d.inodes[self.inode];
        match outcome {
            SyncOutcome::Persist => {
                inode.persist();
                Ok(())
            }
            SyncOutcome::Fail => {
                inode.fail_sync();
                Err(io::Error::other("simulated fsync failure"))
            }
        }
    }
}

#[derive(Debug)]
struct FaultLock {
    disk: Arc<Mutex<Disk>>,
}

impl StorageLock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .locked = false;
    }
}
