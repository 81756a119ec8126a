//! The WAL handle, its writer thread, and recovery at open.
//!
//! One writer thread owns the open segment. Appenders put records on a
//! bounded queue (a byte-counting semaphore gives back-pressure) and get an
//! LSN at once; the writer drains the whole queue, frames and hashes the
//! batch and writes it with one call. A second thread runs `fdatasync` on
//! the writer's request, one at a time, each covering everything written
//! before it started; when it returns, the writer completes each covered
//! append. Appends that arrive during a sync are written meanwhile and share
//! the next one: that is the group commit.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fluxrig_telemetry::{BATCH_BOUNDS, Histogram, WalMetrics};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::error::{Result, WalError};
use crate::format::{
    self, CONTROL_FRAME_LEN, ControlFrame, ControlKind, GENESIS_HASH, Hash, Lsn, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::WalReader;
use crate::scan::{self, ScanEnd};
use crate::storage::{FsStorage, Storage, StorageFile, StorageLock, write_all_at};

/// Under `always`, queued records nobody awaits yet are written once this
/// many bytes wait (or someone awaits one, or `lazy_sync` passes).
const LAZY_BATCH_BYTES: usize = 256 << 10;

/// What `Wal::open` found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The WAL directory.
    pub dir: PathBuf,
    /// The directory held no log: a new one was started.
    pub created: bool,
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// Records in the log after recovery.
    pub records: u64,
    /// The first LSN on disk.
    pub first_lsn: Lsn,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The previous run ended with `close` (not a crash).
    pub clean_close: bool,
    /// Bytes a crash left unfinished at the end of the last segment, which
    /// were cut off. They held no acknowledged record.
    pub torn_tail: Option<TornTail>,
    /// A segment whose seal a crash interrupted, sealed again.
    pub resealed: Option<PathBuf>,
    /// A half-created segment a crash left behind, removed.
    pub removed_temp_segment: Option<PathBuf>,
}

/// A torn tail cut off at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Where the unfinished bytes started (the segment now ends here).
    pub offset: u64,
    /// How many bytes were cut off.
    pub discarded_bytes: u64,
    /// Why the first cut-off frame was unreadable.
    pub reason: String,
}

/// One segment file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Sequence number (in the file name).
    pub number: u64,
    /// The file.
    pub path: PathBuf,
    /// LSN of its first record (or of the next record, while it has none).
    pub first_lsn: Lsn,
    /// LSN of its last record; `None` while it has none.
    pub last_lsn: Option<Lsn>,
    /// Size in bytes.
    pub bytes: u64,
    /// When it was created.
    pub created: SystemTime,
    /// Closed (sealed; no more appends) rather than open.
    pub closed: bool,
    /// When it was closed (the next segment's creation time).
    pub closed_at: Option<SystemTime>,
}

/// Which archived segments [`Wal::apply_retention`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Remove archived segments closed at least this long ago.
    pub max_age: Option<Duration>,
    /// Remove archived segments, oldest first, while the log is larger.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Keep archived segments at most this long.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Retention {
        self.max_age = Some(age);
        self
    }

    /// Keep the log under this many bytes by removing archived segments.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Retention {
        self.max_bytes = Some(bytes);
        self
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// The kind byte given at append.
    pub kind: u8,
    /// The body given at append.
    pub body: Bytes,
}

/// The writer's published progress. LSN fields are exclusive bounds: every
/// LSN below them is in that state.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) written: Lsn,
    pub(crate) synced: Lsn,
    /// What appends may be acknowledged for, under the policy.
    pub(crate) acked: Lsn,
    pub(crate) failure: Option<Arc<str>>,
    pub(crate) closed: bool,
}

#[derive(Debug)]
struct Entry {
    kind: u8,
    body: Bytes,
    /// Completed once the record is acknowledged (or the WAL fails); only
    /// the last entry of a group has one.
    done: Option<oneshot::Sender<Result<Lsn>>>,
}

#[derive(Debug)]
struct Queue {
    entries: Vec<Entry>,
    /// Framed bytes of `entries`.
    bytes: usize,
    /// When the oldest of `entries` was queued.
    since: Option<Instant>,
    next_lsn: Lsn,
    closing: bool,
    sync_requested: bool,
    /// Someone awaits every LSN below this (under `always`): the writer
    /// syncs them without waiting for `lazy_sync`.
    want: Lsn,
    poisoned: Option<Arc<str>>,
    writer_idle: bool,
    /// The sync thread's answer to the writer's last request.
    sync_done: Option<SyncDone>,
}

/// What a data sync covered, and how it went.
#[derive(Debug)]
struct SyncDone {
    /// Every LSN below this was written before the sync started.
    upto: Lsn,
    result: std::io::Result<()>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    opts: WalOptions,
    space: Semaphore,
    queue: Mutex<Queue>,
    wake: Condvar,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) segments: Mutex<Vec<SegmentInfo>>,
    stats: Counters,
}

/// The writer's counters (for telemetry: batch sizes, sync latency).
#[derive(Debug)]
struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    /// Each sync's duration, nanoseconds.
    sync_latency: Histogram,
    /// Records per batch.
    batch_records: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_nanos: AtomicU64::new(0),
            sync_latency: Histogram::latency(),
            batch_records: Histogram::new(BATCH_BOUNDS),
        }
    }
}

/// Counters of the writer since the WAL was opened: enough to derive the
/// mean batch size and the mean `fdatasync` time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Batches written (one `write` each).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// Data syncs (`fdatasync`) of segments.
    pub syncs: u64,
    /// Total time spent in those syncs.
    pub sync_time: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data
    // is still a consistent queue or list.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stopped(&self) -> WalError {
        match &lock(&self.queue).poisoned {
            Some(cause) => WalError::Poisoned {
                cause: Arc::clone(cause),
            },
            None => WalError::Closed,
        }
    }

    /// Someone awaits the LSNs below `end`: the writer syncs them now.
    fn want_synced(&self, end: Lsn) {
        let mut q = lock(&self.queue);
        if end > q.want {
            q.want = end;
            if q.writer_idle {
                q.writer_idle = false;
                self.wake.notify_one();
            }
        }
    }

    /// Queues entries under consecutive LSNs; returns the first.
    fn enqueue(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Lsn> {
        let mut q = lock(&self.queue);
        if let Some(cause) = &q.poisoned {
            return Err(WalError::Poisoned {
                cause: Arc::clone(cause),
            });
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        let first = q.next_lsn;
        let before = q.entries.len();
        if before == 0 {
            q.since = Some(Instant::now());
        }
        q.entries.extend(entries);
        let added: usize = q.entries[before..]
            .iter()
            .map(|e| RECORD_HEADER_LEN + e.body.len())
            .sum();
        q.bytes += added;
        q.next_lsn = Lsn(q.next_lsn.0 + (q.entries.len() - before) as u64);
        // Under `always` a record nobody has asked for yet waits for one
        // who does (`want_synced`), for `lazy_sync`, or for a full batch:
        // the writer is woken for the first of a batch (to set its timer)
        // and for a full one, not for each.
        let wake = self.opts.sync != SyncPolicy::Always
            || before == 0
            || (q.bytes >= LAZY_BATCH_BYTES && q.bytes - added < LAZY_BATCH_BYTES);
        if wake && q.writer_idle {
            q.writer_idle = false;
            self.wake.notify_one();
        }
        Ok(first)
    }

    pub(crate) fn segments_snapshot(&self) -> Vec<SegmentInfo> {
        lock(&self.segments).clone()
    }
}

/// A handle to an open write-ahead log: cheap to clone, shareable between
/// tasks and threads. The log closes when [`Wal::close`] is called or the
/// last handle is dropped (dropping waits for the writer to finish).
#[derive(Debug, Clone)]
pub struct Wal {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            q.closing = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = lock(&self.writer).take() {
            // The writer never panics on I/O (it poisons instead); a panic
            // would be a bug, already printed by the panic hook.
            let _ = t.join();
        }
    }
}

/// Reads a log's telemetry; does not keep the log open (see [`Wal::meter`]).
#[derive(Debug, Clone)]
pub struct WalMeter {
    shared: Arc<Shared>,
}

impl WalMeter {
    /// The writer's counters and histograms since open.
    pub fn metrics(&self) -> WalMetrics {
        let c = &self.shared.stats;
        WalMetrics {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsync: c.sync_latency.snapshot(),
            batch_records: c.batch_records.snapshot(),
        }
    }
}

/// An appended record (or group) that is queued, has its LSN, and may not
/// be durable yet. Await it to learn when it is acknowledged under the sync
/// policy: it resolves to the (last) LSN, or to the error that stopped the
/// WAL before that.
///
/// Each pending append is completed by the writer individually (not by a
/// broadcast), so thousands in flight cost nothing per batch beyond their
/// own wake-up.
#[derive(Debug)]
#[must_use = "a pending append must be awaited before it is acknowledged"]
pub struct Pending {
    first: Lsn,
    last: Lsn,
    rx: oneshot::Receiver<Result<Lsn>>,
    /// Under `always`, until the writer has been told someone waits.
    expedite: Option<Arc<Shared>>,
}

impl Pending {
    /// The LSN of the (first) record.
    pub fn lsn(&self) -> Lsn {
        self.first
    }

    /// The LSN of the last record of a group (the record's own for one).
    pub fn last_lsn(&self) -> Lsn {
        self.last
    }

    /// Waits until the record (every record of the group) is acknowledged;
    /// the same as awaiting the `Pending` itself.
    pub async fn durable(self) -> Result<Lsn> {
        self.await
    }

    /// Asks for the record to be synced now, not within the log's
    /// `lazy_sync`, without waiting here (awaiting does this too): for a
    /// caller that will await it later and wants the sync under way.
    pub fn expedite(&mut self) {
        if let Some(shared) = self.expedite.take() {
            shared.want_synced(self.last.next());
        }
    }
}

impl Future for Pending {
    type Output = Result<Lsn>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The writer always answers before dropping an entry; a dropped
            // sender can only mean the writer thread is gone.
            Poll::Ready(Err(_)) => Poll::Ready(Err(WalError::Closed)),
            Poll::Pending => {
                self.expedite();
                Poll::Pending
            }
        }
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` on the real file system,
    /// recovering it first. See [`Wal::open_with_storage`].
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, RecoveryReport)> {
        let dir = dir.as_ref();
        let storage = FsStorage::new(dir).map_err(|e| WalError::io("create directory", dir, e))?;
        Wal::open_with_storage(Arc::new(storage), options)
    }

    /// Opens (or creates) the WAL in `storage`.
    ///
    /// Takes the directory's lock, checks every segment (headers, CRCs, hash
    /// chain, no gaps), cuts off a torn tail and finishes an interrupted
    /// rotation, then starts the writer. Corruption anywhere a crash cannot
    /// explain is an error naming the segment file and byte offset; nothing
    /// is changed on disk in that case. Blocking: call it from a blocking
    /// context (`spawn_blocking`) in async code.
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        options: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        options.validate().map_err(WalError::InvalidOptions)?;
        let dir = storage.dir().to_path_buf();
        let dir_lock = storage
            .try_lock()
            .map_err(|e| WalError::io("lock", dir.join(format::LOCK_NAME), e))?
            .ok_or_else(|| WalError::Locked { dir: dir.clone() })?;
        let (open, report) = recover(&*storage)?;
        let next = open.next_lsn;
        let initial = Progress {
            written: next,
            synced: next,
            acked: next,
            failure: None,
            closed: false,
        };
        let shared = Arc::new(Shared {
            storage,
            space: Semaphore::new(options.queue_capacity),
            queue: Mutex::new(Queue {
                entries: Vec::new(),
                bytes: 0,
                since: None,
                next_lsn: next,
                closing: false,
                sync_requested: false,
                want: next,
                poisoned: None,
                writer_idle: false,
                sync_done: None,
            }),
            wake: Condvar::new(),
            progress: watch::Sender::new(initial),
            segments: Mutex::new(open.segments),
            stats: Counters::default(),
            opts: options,
        });
        let syncer =
            Syncer::spawn(&shared).map_err(|e| WalError::io("spawn sync thread", &dir, e))?;
        let writer = Writer {
            shared: Arc::clone(&shared),
            file: Arc::from(open.file),
            number: open.number,
            len: open.len,
            records_in_segment: open.records_in_segment,
            head: open.head,
            next_lsn: next,
            synced: next,
            acked_len: open.len,
            written: VecDeque::new(),
            syncing: None,
            want: next,
            unsynced_since: None,
            syncer,
            buf: Vec::new(),
            last_sync: Instant::now(),
            lock: Some(dir_lock),
        };
        let thread = std::thread::Builder::new()
            .name("fluxrig-wal".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("spawn writer thread", &dir, e))?;
        tracing::info!(
            dir = %dir.display(),
            sync = %options.sync,
            segment_size = options.segment_size,
            segments = report.segments,
            next_lsn = %report.next_lsn,
            clean_close = report.clean_close,
            "write-ahead log open, sync policy {}",
            options.sync
        );
        let wal = Wal {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(thread)),
            }),
        };
        Ok((wal, report))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// What a [`Pending`] needs to ask for its sync: only under `always`
    /// (the other policies acknowledge without waiting for a sync).
    fn expedite_handle(&self) -> Option<Arc<Shared>> {
        (self.shared().opts.sync == SyncPolicy::Always).then(|| Arc::clone(self.shared()))
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.shared().opts
    }

    fn check_size(&self, len: usize) -> Result<()> {
        let limit = self.shared().opts.max_record_size;
        if len > limit as usize {
            return Err(WalError::RecordTooLarge { size: len, limit });
        }
        Ok(())
    }

    async fn reserve(&self, bytes: usize) -> Result<()> {
        let n = u32::try_from(bytes).map_err(|_| WalError::GroupTooLarge {
            size: bytes,
            limit: self.shared().opts.queue_capacity,
        })?;
        match self.shared().space.acquire_many(n).await {
            Ok(permit) => {
                // The writer gives the room back once the batch is written.
                permit.forget();
                Ok(())
            }
            Err(_) => Err(self.shared().stopped()),
        }
    }

    /// Queues a record and returns as soon as it has its LSN, without
    /// waiting for it to be durable; waits only while the queue is full.
    /// Await the returned [`Pending`] before acknowledging the record to
    /// anyone.
    pub async fn submit(&self, kind: u8, body: impl Into<Bytes>) -> Result<Pending> {
        let body = body.into();
        self.check_size(body.len())?;
        let bytes = RECORD_HEADER_LEN + body.len();
        self.reserve(bytes).await?;
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            kind,
            body,
            done: Some(tx),
        };
        match self.shared().enqueue([entry]) {
            Ok(lsn) => Ok(Pending {
                first: lsn,
                last: lsn,
                rx,
                expedite: self.expedite_handle(),
            }),
            Err(e) => {
                self.shared().space.add_permits(bytes);
                Err(e)
            }
        }
    }

    /// Appends a record and waits until it is durable under the sync
    /// policy; returns its LSN.
    pub async fn append(&self, kind: u8, body: impl Into<Bytes>) -> Result<Lsn> {
        self.submit(kind, body).await?.await
    }

    /// Queues several records under consecutive LSNs, in one piece: no other
    /// record lands between them and they are written in one batch.
    /// (After a crash, a group that was never acknowledged may survive in
    /// part: a prefix of it.)
    pub async fn submit_group<I, B>(&self, records: I) -> Result<Pending>
    where
        I: IntoIterator<Item = (u8, B)>,
        B: Into<Bytes>,
    {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for (kind, body) in records {
            let body = body.into();
            self.check_size(body.len())?;
            bytes += RECORD_HEADER_LEN + body.len();
            entries.push(Entry {
                kind,
                body,
                done: None,
            });
        }
        let limit = self.shared().opts.queue_capacity;
        if bytes > limit {
            return Err(WalError::GroupTooLarge { size: bytes, limit });
        }
        let count = entries.len() as u64;
        let (tx, rx) = oneshot::channel();
        let Some(last) = entries.last_mut() else {
            // An empty group is durable at once; it points just before `next`.
            let next = lock(&self.shared().queue).next_lsn;
            let at = Lsn(next.0.saturating_sub(1));
            let _ = tx.send(Ok(at));
            return Ok(Pending {
                first: next,
                last: at,
                rx,
                expedite: None,
            });
        };
        last.done = Some(tx);
        self.reserve(bytes).await?;
        match self.shared().enqueue(entries) {
            Ok(first) => Ok(Pending {
                first,
                last: Lsn(first.0 + count - 1),
                rx,
                expedite: self.expedite_handle(),
            }),
            Err(e) => {
                self.shared().space.add_permits(bytes);
                Err(e)
            }
        }
    }

    /// Appends several records as one group (see [`Wal::submit_group`]) and
    /// waits until all are durable; returns the first and last LSN.
    pub async fn append_group<I, B>(&self, records: I) -> Result<(Lsn, Lsn)>
    where
        I: IntoIterator<Item = (u8, B)>,
        B: Into<Bytes>,
    {
        let pending = self.submit_group(records).await?;
        let first = pending.lsn();
        let last = pending.await?;
        Ok((first, last))
    }

    /// Makes everything appended so far durable, whatever the policy (under
    /// `always` it is already, or will be when its append resolves).
    pub async fn sync(&self) -> Result<()> {
        let target = {
            let mut q = lock(&self.shared().queue);
            if let Some(cause) = &q.poisoned {
                return Err(WalError::Poisoned {
                    cause: Arc::clone(cause),
                });
            }
            if q.closing {
                return Err(WalError::Closed);
            }
            q.sync_requested = true;
            if q.writer_idle {
                q.writer_idle = false;
                self.shared().wake.notify_one();
            }
            q.next_lsn
        };
        let mut rx = self.shared().progress.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.synced >= target {
                    return Ok(());
                }
                if let Some(cause) = &p.failure {
                    return Err(WalError::Poisoned {
                        cause: Arc::clone(cause),
                    });
                }
                if p.closed {
                    return Err(WalError::Closed);
                }
            }
            if rx.changed().await.is_err() {
                return Err(WalError::Closed);
            }
        }
    }

    /// Closes the log for every handle: queued records are written and
    /// synced, a clean-close mark is written, the directory lock is
    /// released. Appends after this fail with [`WalError::Closed`].
    pub async fn close(self) -> Result<()> {
        {
            let mut q = lock(&self.shared().queue);
            if let Some(cause) = &q.poisoned {
                return Err(WalError::Poisoned {
                    cause: Arc::clone(cause),
                });
            }
            q.closing = true;
            q.writer_idle = false;
            self.shared().wake.notify_one();
        }
        self.shared().space.close();
        let mut rx = self.shared().progress.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if let Some(cause) = &p.failure {
                    return Err(WalError::Poisoned {
                        cause: Arc::clone(cause),
                    });
                }
                if p.closed {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Whether an I/O failure has poisoned the log (it then refuses appends
    /// until reopened), with the failure.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        lock(&self.shared().queue).poisoned.clone()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        lock(&self.shared().queue).next_lsn
    }

    /// Every LSN below this one is synced to disk.
    pub fn synced_lsn(&self) -> Lsn {
        self.shared().progress.borrow().synced
    }

    /// The first LSN still on disk (older segments may have been removed).
    pub fn first_lsn(&self) -> Lsn {
        lock(&self.shared().segments)
            .first()
            .map_or(Lsn::FIRST, |s| s.first_lsn)
    }

    /// The writer's counters since open.
    pub fn stats(&self) -> WalStats {
        let c = &self.shared().stats;
        WalStats {
            batches: c.batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_time: Duration::from_nanos(c.sync_nanos.load(Ordering::Relaxed)),
        }
    }

    /// The writer's counters and histograms since open, for telemetry.
    pub fn metrics(&self) -> WalMetrics {
        self.meter().metrics()
    }

    /// A handle that reads [`Wal::metrics`] without keeping the log open.
    pub fn meter(&self) -> WalMeter {
        WalMeter {
            shared: Arc::clone(self.shared()),
        }
    }

    /// The segment files, oldest first; the last one is open.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared().segments_snapshot()
    }

    /// Reads acknowledged records from `from` on, through closed segments
    /// and the open one. The iterator ends at the last acknowledged record;
    /// calling `next` again later continues with records acknowledged since.
    pub fn read_from(&self, from: Lsn) -> Result<WalReader> {
        let first = self.first_lsn();
        let next = self.next_lsn();
        if from < first || from > next {
            return Err(WalError::LsnOutOfRange {
                lsn: from,
                first,
                next,
            });
        }
        Ok(WalReader::new(Arc::clone(self.shared()), from))
    }

    /// Removes closed segments whose records all have LSNs up to `lsn`
    /// (typically: everything archived), oldest first. Returns what was
    /// removed. The open segment is never removed.
    pub fn remove_through(&self, lsn: Lsn) -> Result<Vec<SegmentInfo>> {
        self.remove_prefix(|s, _| s.last_lsn.is_some_and(|l| l <= lsn))
    }

    /// Applies a retention policy to segments archived through
    /// `archived_through`: removes, oldest first, those closed longer than
    /// `max_age` ago or while the log exceeds `max_bytes`. Segments not yet
    /// archived are never removed. `now` is the reference time.
    pub fn apply_retention(
        &self,
        archived_through: Lsn,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<Vec<SegmentInfo>> {
        self.remove_prefix(|s, total| {
            let archived = s.last_lsn.is_some_and(|l| l <= archived_through);
            let too_old = retention.max_age.is_some_and(|age| {
                s.closed_at
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d >= age)
            });
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            archived && (too_old || too_big)
        })
    }

    /// Removes the longest prefix of closed segments that `remove(segment,
    /// total bytes before removing it)` accepts.
    fn remove_prefix(
        &self,
        remove: impl Fn(&SegmentInfo, u64) -> bool,
    ) -> Result<Vec<SegmentInfo>> {
        if let Some(cause) = self.poisoned() {
            return Err(WalError::Poisoned { cause });
        }
        let storage = &self.shared().storage;
        let mut segments = lock(&self.shared().segments);
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        let mut removed = Vec::new();
        let mut result = Ok(());
        for s in segments.iter() {
            if !s.closed || !remove(s, total) {
                break;
            }
            let name = format::segment_name(s.number);
            if let Err(e) = storage.remove(&name) {
                result = Err(WalError::io("remove", &s.path, e));
                break;
            }
            total -= s.bytes;
            removed.push(s.clone());
        }
        segments.drain(..removed.len());
        drop(segments);
        result?;
        if !removed.is_empty() {
            storage
                .sync_dir()
                .map_err(|e| WalError::io("fsync directory", storage.dir(), e))?;
            tracing::info!(
                segments = removed.len(),
                through = removed.last().and_then(|s| s.last_lsn).map(|l| l.0),
                "removed WAL segments"
            );
        }
        Ok(removed)
    }
}

/// The state recovery hands to the writer.
struct OpenState {
    file: Box<dyn StorageFile>,
    number: u64,
    len: u64,
    records_in_segment: u64,
    next_lsn: Lsn,
    head: Hash,
    segments: Vec<SegmentInfo>,
}

fn time_of(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Creates a segment durably: written under a temporary name, synced,
/// renamed into place, directory synced. A crash leaves either no segment
/// or a complete header; never a half-written one under a segment's name.
fn create_segment(storage: &dyn Storage, header: &SegmentHeader) -> Result<Box<dyn StorageFile>> {
    let tmp = format::temp_segment_name(header.number);
    let name = format::segment_name(header.number);
    let dir = storage.dir();
    let file = storage
        .create(&tmp)
        .map_err(|e| WalError::io("create", dir.join(&tmp), e))?;
    write_all_at(&*file, &header.encode(), 0)
        .map_err(|e| WalError::io("write", dir.join(&tmp), e))?;
    file.sync_data()
        .map_err(|e| WalError::io("fdatasync", dir.join(&tmp), e))?;
    storage
        .rename(&tmp, &name)
        .map_err(|e| WalError::io("rename", dir.join(&tmp), e))?;
    storage
        .sync_dir()
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    Ok(file)
}

fn recover(storage: &dyn Storage) -> Result<(OpenState, RecoveryReport)> {
    let dir = storage.dir().to_path_buf();
    let scan = scan::scan_dir(storage)?;
    let mut report = RecoveryReport {
        dir: dir.clone(),
        created: false,
        segments: 0,
        records: 0,
        first_lsn: Lsn::FIRST,
        next_lsn: Lsn::FIRST,
        clean_close: false,
        torn_tail: None,
        resealed: None,
        removed_temp_segment: None,
    };
    // Decide everything before changing anything: an error leaves the
    // directory exactly as found.
    let n = scan.segments.len();
    if let Some(last) = scan.segments.last() {
        match &last.end {
            ScanEnd::Sealed => return Err(scan::missing_after(storage, last)),
            ScanEnd::Bad {
                offset,
                reason,
                unreadable: false,
            } => {
                return Err(WalError::Corrupt {
                    path: last.path.clone(),
                    offset: *offset,
                    reason: reason.clone(),
                });
            }
            _ => {}
        }
    }
    let mut last_cursor = scan.last_cursor;
    if let (Some(last), Some(cursor)) = (scan.segments.last(), last_cursor.as_mut())
        && let ScanEnd::Bad {
            offset,
            reason,
            unreadable: true,
        } = &last.end
    {
        let proof = scan::synced_beyond(cursor, *offset, last.next_lsn, last.file_len)
            .map_err(|e| WalError::io("read", &last.path, e))?;
        if let Some(at) = proof {
            return Err(WalError::Corrupt {
                path: last.path.clone(),
                offset: *offset,
                reason: format!(
                    "{reason}; not a torn tail: the frame at byte {at} shows LSN {} had been synced",
                    last.next_lsn
                ),
            });
        }
        report.torn_tail = Some(TornTail {
            segment: last.path.clone(),
            offset: *offset,
            discarded_bytes: last.file_len - offset,
            reason: reason.clone(),
        });
    }

    if let Some(t) = &scan.temp_segment {
        storage
            .remove(t)
            .map_err(|e| WalError::io("remove", dir.join(t), e))?;
        storage
            .sync_dir()
            .map_err(|e| WalError::io("fsync directory", &dir, e))?;
        tracing::warn!(file = %dir.join(t).display(), "removed a half-created WAL segment");
        report.removed_temp_segment = Some(dir.join(t));
    }

    let Some(last_cursor) = last_cursor else {
        let header = SegmentHeader {
            number: 0,
            first_lsn: Lsn::FIRST,
            created_unix_ns: now_ns(),
            prev_hash: GENESIS_HASH,
        };
        let file = create_segment(storage, &header)?;
        report.created = true;
        report.segments = 1;
        let info = SegmentInfo {
            number: 0,
            path: dir.join(format::segment_name(0)),
            first_lsn: Lsn::FIRST,
            last_lsn: None,
            bytes: SEGMENT_HEADER_LEN as u64,
            created: time_of(header.created_unix_ns),
            closed: false,
            closed_at: None,
        };
        let state = OpenState {
            file,
            number: 0,
            len: SEGMENT_HEADER_LEN as u64,
            records_in_segment: 0,
            next_lsn: Lsn::FIRST,
            head: GENESIS_HASH,
            segments: vec![info],
        };
        return Ok((state, report));
    };

    let mut infos = Vec::with_capacity(n);
    for (i, s) in scan.segments.iter().enumerate() {
        let is_last = i + 1 == n;
        let mut bytes = s.file_len;
        if !is_last && scan::needs_seal(s) {
            let file = storage
                .open(&s.name)
                .map_err(|e| WalError::io("open", &s.path, e))?;
            file.set_len(s.valid_end)
                .map_err(|e| WalError::io("truncate", &s.path, e))?;
            write_all_at(&*file, &scan::seal_for(s).encode(), s.valid_end)
                .map_err(|e| WalError::io("write", &s.path, e))?;
            file.sync_data()
                .map_err(|e| WalError::io("fdatasync", &s.path, e))?;
            bytes = s.valid_end + CONTROL_FRAME_LEN as u64;
            tracing::warn!(segment = %s.path.display(), "sealed a segment whose rotation a crash interrupted");
            report.resealed = Some(s.path.clone());
        }
        if is_last {
            bytes = s.valid_end;
        }
        infos.push(SegmentInfo {
            number: s.header.number,
            path: s.path.clone(),
            first_lsn: s.header.first_lsn,
            last_lsn: (s.records > 0).then(|| Lsn(s.next_lsn.0 - 1)),
            bytes,
            created: time_of(s.header.created_unix_ns),
            closed: !is_last,
            closed_at: scan
                .segments
                .get(i + 1)
                .map(|next| time_of(next.header.created_unix_ns)),
        });
        report.records += s.records;
    }
    let last = &scan.segments[n - 1];
    if last.end == ScanEnd::Closed {
        report.clean_close = true;
    }
    let file = last_cursor.into_file();
    if last.file_len != last.valid_end {
        file.set_len(last.valid_end)
            .map_err(|e| WalError::io("truncate", &last.path, e))?;
    }
    // Whatever the previous run left in the page cache is made durable
    // before anyone acts on it: a recovered record must not vanish later.
    file.sync_data()
        .map_err(|e| WalError::io("fdatasync", &last.path, e))?;
    if let Some(t) = &report.torn_tail {
        tracing::warn!(
            segment = %t.segment.display(),
            offset = t.offset,
            discarded_bytes = t.discarded_bytes,
            "cut off a torn tail left by a crash (no acknowledged record was in it)"
        );
    }
    report.segments = n;
    report.first_lsn = scan.segments[0].header.first_lsn;
    report.next_lsn = last.next_lsn;
    let state = OpenState {
        file,
        number: last.header.number,
        len: last.valid_end,
        records_in_segment: last.records,
        next_lsn: last.next_lsn,
        head: last.chain_head,
        segments: infos,
    };
    Ok((state, report))
}

/// The thread that runs `fdatasync` for the writer, so that the writer
/// frames and writes the next batch (and completes the previous one) while
/// the disk syncs: CPU work and the sync's I/O wait overlap instead of
/// adding up. It only ever syncs a file the writer hands it and reports
/// back; all log state stays with the writer.
#[derive(Debug)]
struct Syncer {
    slot: Arc<(Mutex<SyncSlot>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncSlot {
    request: Option<(Arc<dyn StorageFile>, Lsn)>,
    shutdown: bool,
}

impl Syncer {
    fn spawn(shared: &Arc<Shared>) -> std::io::Result<Syncer> {
        let slot: Arc<(Mutex<SyncSlot>, Condvar)> = Arc::default();
        let thread = std::thread::Builder::new()
            .name("fluxrig-wal-sync".into())
            .spawn({
                let slot = Arc::clone(&slot);
                let shared = Arc::clone(shared);
                move || Syncer::run(&slot, &shared)
            })?;
        Ok(Syncer {
            slot,
            thread: Some(thread),
        })
    }

    fn run(slot: &(Mutex<SyncSlot>, Condvar), shared: &Shared) {
        loop {
            let (file, upto) = {
                let mut s = lock(&slot.0);
                loop {
                    if let Some(req) = s.request.take() {
                        break req;
                    }
                    if s.shutdown {
                        return;
                    }
                    s = slot.1.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
            };
            let started = Instant::now();
            let result = file.sync_data();
            shared.stats.record_sync(started.elapsed());
            let mut q = lock(&shared.queue);
            q.sync_done = Some(SyncDone { upto, result });
            q.writer_idle = false;
            shared.wake.notify_one();
        }
    }

    fn request(&self, file: Arc<dyn StorageFile>, upto: Lsn) {
        lock(&self.slot.0).request = Some((file, upto));
        self.slot.1.notify_one();
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        lock(&self.slot.0).shutdown = true;
        self.slot.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Counters {
    fn record_sync(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.sync_latency.record(nanos);
    }
}

/// A batch written to the open segment, waiting for a sync to cover it.
#[derive(Debug)]
struct Written {
    entries: Vec<Entry>,
    first: Lsn,
    /// The LSN after the batch's last record.
    end: Lsn,
    /// Queue bytes to give back once it is acknowledged.
    bytes: usize,
    /// The segment and the offset just past the batch.
    segment: u64,
    end_offset: u64,
}

/// The thread that owns the open segment.
///
/// Its loop: take everything queued, frame and hash it, write it in one
/// call, and — under `always` — ask the sync thread to sync everything
/// written so far whenever no sync is running. When a sync returns, the
/// batches it covers are acknowledged. While one sync runs, later batches
/// are written and wait for the next one: one sync in flight at a time, and
/// each covers all that was written before it started.
struct Writer {
    shared: Arc<Shared>,
    file: Arc<dyn StorageFile>,
    number: u64,
    len: u64,
    records_in_segment: u64,
    head: Hash,
    /// The LSN the next written record gets.
    next_lsn: Lsn,
    /// Every LSN below this is synced.
    synced: Lsn,
    /// The open segment's length at the end of the last acknowledged batch.
    acked_len: u64,
    /// Written batches not yet acknowledged, oldest first.
    written: VecDeque<Written>,
    /// The sync running on the sync thread: everything below this LSN.
    syncing: Option<Lsn>,
    /// Someone awaits every LSN below this: sync them now (`always`).
    want: Lsn,
    /// When the oldest write no sync has started on was made.
    unsynced_since: Option<Instant>,
    syncer: Syncer,
    buf: Vec<u8>,
    last_sync: Instant,
    lock: Option<Box<dyn StorageLock>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("number", &self.number)
            .field("len", &self.len)
            .field("next_lsn", &self.next_lsn)
            .finish_non_exhaustive()
    }
}

/// What woke the writer.
struct Work {
    closing: bool,
    sync_requested: bool,
    timed_out: bool,
    sync_done: Option<SyncDone>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        let mut sync_wanted = false;
        loop {
            let work = self.wait_for_work(&mut batch, sync_wanted);
            sync_wanted |= work.sync_requested || work.timed_out;
            let result = self.step(&mut batch, &work, &mut sync_wanted);
            if let Err(e) = result {
                self.poison(&e, &mut batch);
                return;
            }
            if work.closing {
                match self.finish() {
                    Ok(()) => {
                        // Release the directory before telling anyone the
                        // WAL is closed, so it can be reopened at once.
                        drop(self.lock.take());
                        self.shared.progress.send_modify(|p| p.closed = true);
                    }
                    Err(e) => self.poison(&e, &mut batch),
                }
                return;
            }
        }
    }

    /// One turn of the loop: take in a finished sync, write the new batch,
    /// start the next sync if one is due.
    fn step(&mut self, batch: &mut Vec<Entry>, work: &Work, sync_wanted: &mut bool) -> Result<()> {
        if let Some(done) = &work.sync_done {
            self.sync_finished(done)?;
        }
        // Start the next sync on what is already written before framing the
        // new batch: the disk is never idle while this thread hashes.
        self.maybe_sync(sync_wanted);
        if !batch.is_empty() {
            self.write_batch(batch)?;
            self.maybe_sync(sync_wanted);
        }
        // Publish before acknowledging: a caller that sees its append resolve
        // can read the record back at once.
        self.publish();
        self.acknowledge();
        Ok(())
    }

    /// Asks the sync thread to sync everything written so far, when the
    /// policy (or a caller) wants a sync and none is running.
    fn maybe_sync(&mut self, sync_wanted: &mut bool) {
        let unsynced = self.synced < self.next_lsn;
        match self.shared.opts.sync {
            SyncPolicy::Always => {
                let covered = self.syncing.unwrap_or(self.synced);
                *sync_wanted |= unsynced
                    && (self.want > covered || self.lazy_deadline() <= Some(Instant::now()));
            }
            SyncPolicy::Interval(every) => {
                *sync_wanted |= unsynced && self.last_sync.elapsed() >= every;
            }
            SyncPolicy::None => {}
        }
        if *sync_wanted && self.syncing.is_none() {
            if unsynced {
                self.syncer.request(Arc::clone(&self.file), self.next_lsn);
                self.syncing = Some(self.next_lsn);
                self.unsynced_since = None;
            }
            *sync_wanted = false;
        }
    }

    /// Under `always`, when the writes nobody awaits are due for a sync
    /// (none: nothing written waits for one).
    fn lazy_deadline(&self) -> Option<Instant> {
        self.unsynced_since.map(|t| t + self.shared.opts.lazy_sync)
    }

    fn wait_for_work(&mut self, batch: &mut Vec<Entry>, sync_wanted: bool) -> Work {
        let always = self.shared.opts.sync == SyncPolicy::Always;
        let mut q = lock(&self.shared.queue);
        let mut timed_out = false;
        loop {
            self.want = self.want.max(q.want);
            let unsynced = self.synced < self.next_lsn;
            // Under `always`, someone awaits a record not yet synced.
            let wanted = self.want > self.synced;
            if q.closing
                || q.sync_requested
                || q.sync_done.is_some()
                || (sync_wanted && self.syncing.is_none())
                || (!q.entries.is_empty() && (!always || wanted || q.bytes >= LAZY_BATCH_BYTES))
                || (always && wanted && unsynced && self.syncing.is_none())
            {
                break;
            }
            // The next deadline: under `always`, writes and queued records
            // nobody awaits are synced within `lazy_sync`; under `interval`,
            // writes within the interval.
            let lazy = self.shared.opts.lazy_sync;
            let deadline = match self.shared.opts.sync {
                SyncPolicy::Always => {
                    let written = self
                        .lazy_deadline()
                        .filter(|_| unsynced && self.syncing.is_none());
                    let queued = q.since.filter(|_| !q.entries.is_empty()).map(|t| t + lazy);
                    written.into_iter().chain(queued).min()
                }
                SyncPolicy::Interval(every) if unsynced && self.syncing.is_none() => {
                    Some(self.last_sync + every)
                }
                SyncPolicy::Interval(_) | SyncPolicy::None => None,
            };
            q.writer_idle = true;
            match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        timed_out = true;
                        break;
                    }
                    q = self
                        .shared
                        .wake
                        .wait_timeout(q, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    q = self
                        .shared
                        .wake
                        .wait(q)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        q.writer_idle = false;
        std::mem::swap(&mut q.entries, batch);
        q.bytes = 0;
        q.since = None;
        Work {
            closing: q.closing,
            sync_requested: std::mem::take(&mut q.sync_requested),
            timed_out,
            sync_done: q.sync_done.take(),
        }
    }

    fn path(&self) -> PathBuf {
        self.shared
            .storage
            .dir()
            .join(format::segment_name(self.number))
    }

    /// Takes in the sync thread's answer.
    fn sync_finished(&mut self, done: &SyncDone) -> Result<()> {
        self.syncing = None;
        if let Err(e) = &done.result {
            return Err(WalError::io(
                "fdatasync",
                self.path(),
                std::io::Error::new(e.kind(), e.to_string()),
            ));
        }
        self.synced = self.synced.max(done.upto);
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Waits for the running sync, if any, and takes in its answer.
    fn await_sync(&mut self) -> Result<()> {
        if self.syncing.is_none() {
            return Ok(());
        }
        let done = {
            let mut q = lock(&self.shared.queue);
            loop {
                if let Some(done) = q.sync_done.take() {
                    break done;
                }
                q = self
                    .shared
                    .wake
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        self.sync_finished(&done)
    }

    /// Syncs everything written, on this thread (rotation and close).
    fn sync_now(&mut self) -> Result<()> {
        self.await_sync()?;
        if self.synced < self.next_lsn {
            let started = Instant::now();
            self.file
                .sync_data()
                .map_err(|e| WalError::io("fdatasync", self.path(), e))?;
            self.shared.stats.record_sync(started.elapsed());
            self.synced = self.next_lsn;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<Entry>) -> Result<()> {
        if self.len >= self.shared.opts.segment_size && self.records_in_segment > 0 {
            self.rotate()?;
        }
        self.buf.clear();
        // Every record carries the synced watermark at the time it was
        // written; recovery uses it to tell a torn tail from damage.
        let durable = self.synced;
        let first = self.next_lsn;
        let mut bytes = 0;
        for e in batch.iter() {
            bytes += RECORD_HEADER_LEN + e.body.len();
            self.head = format::encode_record(
                &mut self.buf,
                e.kind,
                self.next_lsn,
                durable,
                &self.head,
                &e.body,
            );
            self.next_lsn = self.next_lsn.next();
        }
        write_all_at(&*self.file, &self.buf, self.len)
            .map_err(|e| WalError::io("write", self.path(), e))?;
        self.unsynced_since.get_or_insert_with(Instant::now);
        self.len += self.buf.len() as u64;
        self.records_in_segment += batch.len() as u64;
        let c = &self.shared.stats;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.batch_records.record(batch.len() as u64);
        c.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        if self.buf.capacity() > 4 * self.buf.len().max(1 << 20) {
            self.buf = Vec::new();
        }
        self.written.push_back(Written {
            entries: std::mem::take(batch),
            first,
            end: self.next_lsn,
            bytes,
            segment: self.number,
            end_offset: self.len,
        });
        Ok(())
    }

    /// Acknowledges the written batches the policy allows: under `always`
    /// those a finished sync covers, otherwise all of them.
    fn acknowledge(&mut self) {
        let limit = match self.shared.opts.sync {
            SyncPolicy::Always => self.synced,
            SyncPolicy::Interval(_) | SyncPolicy::None => self.next_lsn,
        };
        let mut released = 0;
        while self.written.front().is_some_and(|w| w.end <= limit) {
            let Some(w) = self.written.pop_front() else {
                break;
            };
            if w.segment == self.number {
                self.acked_len = w.end_offset;
            }
            for (i, e) in w.entries.into_iter().enumerate() {
                if let Some(done) = e.done {
                    let _ = done.send(Ok(Lsn(w.first.0 + i as u64)));
                }
            }
            released += w.bytes;
        }
        if released > 0 {
            self.shared.space.add_permits(released);
        }
    }

    /// Closes the open segment and starts the next. Order matters for
    /// crash safety (design page, "Rotation"): the old segment's records are
    /// synced; the new segment is created complete under a temporary name,
    /// renamed, and the directory synced; only then is the old one sealed.
    fn rotate(&mut self) -> Result<()> {
        self.sync_now()?;
        self.acknowledge();
        let header = SegmentHeader {
            number: self.number + 1,
            first_lsn: self.next_lsn,
            created_unix_ns: now_ns(),
            prev_hash: self.head,
        };
        let file = create_segment(&*self.shared.storage, &header)?;
        let seal = ControlFrame {
            kind: ControlKind::Seal,
            number: header.number,
            next_lsn: self.next_lsn,
            chain_head: self.head,
        };
        write_all_at(&*self.file, &seal.encode(), self.len)
            .map_err(|e| WalError::io("write", self.path(), e))?;
        self.file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", self.path(), e))?;
        let created = time_of(header.created_unix_ns);
        {
            let mut segments = lock(&self.shared.segments);
            if let Some(old) = segments.last_mut() {
                old.closed = true;
                old.closed_at = Some(created);
                old.bytes = self.len + CONTROL_FRAME_LEN as u64;
                old.last_lsn = Some(Lsn(self.next_lsn.0 - 1));
            }
            segments.push(SegmentInfo {
                number: header.number,
                path: self
                    .shared
                    .storage
                    .dir()
                    .join(format::segment_name(header.number)),
                first_lsn: header.first_lsn,
                last_lsn: None,
                bytes: SEGMENT_HEADER_LEN as u64,
                created,
                closed: false,
                closed_at: None,
            });
        }
        self.file = Arc::from(file);
        self.number = header.number;
        self.len = SEGMENT_HEADER_LEN as u64;
        self.acked_len = self.len;
        self.records_in_segment = 0;
        tracing::debug!(segment = header.number, first_lsn = %header.first_lsn, "WAL segment rotated");
        Ok(())
    }

    /// Syncs and acknowledges everything, then writes the clean-close frame
    /// and syncs it.
    fn finish(&mut self) -> Result<()> {
        self.sync_now()?;
        self.publish();
        self.acknowledge();
        let close = ControlFrame {
            kind: ControlKind::Close,
            number: self.number,
            next_lsn: self.next_lsn,
            chain_head: self.head,
        };
        write_all_at(&*self.file, &close.encode(), self.len)
            .map_err(|e| WalError::io("write", self.path(), e))?;
        self.len += CONTROL_FRAME_LEN as u64;
        self.file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", self.path(), e))?;
        Ok(())
    }

    fn publish(&mut self) {
        let written = self.next_lsn;
        let synced = self.synced;
        let acked = match self.shared.opts.sync {
            SyncPolicy::Always => synced,
            SyncPolicy::Interval(_) | SyncPolicy::None => written,
        };
        {
            let mut segments = lock(&self.shared.segments);
            if let Some(open) = segments.last_mut() {
                open.bytes = self.len;
                open.last_lsn = (self.records_in_segment > 0).then(|| Lsn(written.0 - 1));
            }
        }
        self.shared.progress.send_if_modified(|p| {
            let changed = p.written != written || p.synced != synced || p.acked != acked;
            p.written = written;
            p.synced = synced;
            p.acked = acked;
            changed
        });
    }

    /// After a failed write or sync nothing more is acknowledged: the failed
    /// batches' waiters, everything queued, and every later append get the
    /// error until the WAL is reopened. The sync is never retried (a retried
    /// fsync can succeed without the data being on disk).
    fn poison(&mut self, e: &WalError, failed: &mut Vec<Entry>) {
        let cause: Arc<str> = Arc::from(e.to_string());
        tracing::error!(error = %e, "WAL I/O failure: the log refuses appends until reopened");
        let queued = {
            let mut q = lock(&self.shared.queue);
            q.poisoned = Some(Arc::clone(&cause));
            std::mem::take(&mut q.entries)
        };
        let written = self.written.drain(..).flat_map(|w| w.entries);
        for entry in written.chain(failed.drain(..)).chain(queued) {
            if let Some(done) = entry.done {
                let _ = done.send(Err(WalError::Poisoned {
                    cause: Arc::clone(&cause),
                }));
            }
        }
        self.shared.space.close();
        // Let a running sync finish before cutting the file under it.
        let _ = self.await_sync();
        // Cut the open segment back to the last acknowledged batch, best
        // effort. After a failed fsync the kernel may keep the unsynced bytes
        // readable in its cache without ever writing them; left there, a
        // reopen in the same boot would read them as records, and a later
        // power loss would leave a hole behind newer, synced ones.
        if self.file.set_len(self.acked_len).is_err() {
            tracing::warn!("could not cut the failed batch off the open WAL segment");
        }
        drop(self.lock.take());
        self.shared.progress.send_modify(|p| {
            p.failure = Some(cause);
        });
    }
}
