//! The Rack's journal: its write-ahead log (`<data>/wal/`) as the system of
//! record, recovery at start, and the per-gear [`Journal`] handles sources
//! and sinks record through.
//!
//! - A **source** records each message (INGRESS) before handing it to the
//!   wires; the record is queued at once and the source acknowledges its
//!   sender when the record is durable (group commit: every record queued
//!   during a sync shares the next one).
//! - A **sink** records each delivery: EGRESS (the message) and COMPLETED
//!   (its fluxID, with the output's length after it when the sink has one).
//! - At **start**, every INGRESS without a COMPLETED from every sink its
//!   source port reaches is replayed into that port's wires (policy
//!   `replay`); sinks skip the fluxIDs they completed already. A sink with
//!   an output position (`file_out`) cuts its output back to its last
//!   recorded length first, so each message lands in it exactly once.
//!
//! The design and its crash cases are in `docs/design/rack-durability.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use fluxrig_audit::records::{self, RackRecord};
use fluxrig_gear::{
    AtRest, BoxFuture, DeadLetter, DeadLetters, Delivery, Durable, IDEMPOTENCY_META, Ingress,
    Journal, JournalError, Role,
};
use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{FluxId, FluxMsg, Value};
use fluxrig_scenario::Scenario;
use fluxrig_wal::{Lsn, SyncPolicy, Wal, WalOptions};

use crate::DeadLetterLog;

/// Idempotency keys remembered per Rack (the most recent ones): a retry
/// with a key older than this many messages is taken as a new message.
pub const IDEMPOTENCY_WINDOW: usize = 1 << 18;

/// What the Rack does at start with messages recorded at ingress and not
/// completed by every sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryPolicy {
    /// Deliver them again; sinks skip fluxIDs they completed (default).
    #[default]
    Replay,
    /// Hand them to a [`Compensator`] instead (the conductor's reversals).
    Compensate,
}

/// What a `compensate` policy does with a message that was accepted and not
/// completed before a crash. The conductor (payments) will implement it with
/// reversals through its store-and-forward queue; until it exists the Rack's
/// default only reports each message.
pub trait Compensator: Send + Sync + std::fmt::Debug {
    /// Called once per uncompleted message at start, in log order.
    fn compensate(&self, gear: &str, port: &str, msg: &FluxMsg);
}

/// The default [`Compensator`]: logs each message's fluxID (WARN), nothing
/// else.
#[derive(Debug, Default)]
pub struct LogCompensator;

impl Compensator for LogCompensator {
    fn compensate(&self, gear: &str, port: &str, msg: &FluxMsg) {
        tracing::warn!(gear, port, id = %msg.id, "accepted before a crash and not completed; no compensation hook is installed");
    }
}

/// A message to deliver again at start.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) gear: String,
    pub(crate) port: String,
    pub(crate) msg: FluxMsg,
}

/// What recovery found in the log.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Messages to deliver again, in log order.
    pub(crate) replay: Vec<Replay>,
    /// Records read.
    pub(crate) records: u64,
    /// Uncompleted messages whose source is no longer in the scenario.
    pub(crate) orphaned: u64,
}

/// Bounded map of idempotency keys to the fluxID first recorded with them.
#[derive(Debug, Default)]
struct KeyIndex {
    ids: HashMap<(Arc<str>, String), FluxId>,
    order: VecDeque<(Arc<str>, String)>,
}

impl KeyIndex {
    fn get(&self, gear: &Arc<str>, key: &str) -> Option<FluxId> {
        self.ids.get(&(Arc::clone(gear), key.to_owned())).copied()
    }

    fn insert(&mut self, gear: Arc<str>, key: String, id: FluxId) {
        let k = (gear, key);
        if self.ids.insert(k.clone(), id).is_none() {
            self.order.push_back(k);
            if self.order.len() > IDEMPOTENCY_WINDOW
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    fn remove(&mut self, gear: &Arc<str>, key: &str) {
        // Left in `order`: it ages out there harmlessly.
        self.ids.remove(&(Arc::clone(gear), key.to_owned()));
    }
}

#[derive(Debug)]
struct Shared {
    wal: Wal,
    sync: SyncPolicy,
    keys: Mutex<KeyIndex>,
    /// Per sink: where its output ends after its last recorded delivery.
    offsets: Mutex<HashMap<String, u64>>,
    /// Per replayed fluxID: the sinks that completed it before the crash.
    completed: HashMap<FluxId, Vec<String>>,
    /// The first failure was logged.
    failed: AtomicBool,
    /// Protects messages before they are written (card data).
    at_rest: Option<Arc<dyn AtRest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// `msg` as it may be written to disk.
    fn protect<'m>(&self, msg: &'m FluxMsg) -> std::borrow::Cow<'m, FluxMsg> {
        match self.at_rest.as_ref().and_then(|a| a.protect(msg)) {
            Some(p) => std::borrow::Cow::Owned(p),
            None => std::borrow::Cow::Borrowed(msg),
        }
    }

    fn fail(&self, what: &str, e: &fluxrig_wal::WalError) -> JournalError {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %e, "write-ahead log failed while {what}: nothing more is acknowledged");
        }
        JournalError(e.to_string())
    }
}

/// The Rack's write-ahead log and what recovery found in it.
#[derive(Debug, Clone)]
pub(crate) struct RackJournal {
    shared: Arc<Shared>,
}

impl RackJournal {
    /// Opens `<data>/wal/`, recovers it and works out which messages to
    /// replay for `scenario`.
    pub(crate) fn open(
        data_dir: &Path,
        sync: SyncPolicy,
        scenario: &Scenario,
        at_rest: Option<Arc<dyn AtRest>>,
    ) -> Result<(RackJournal, Recovered), String> {
        let dir = fluxrig_audit::wal_dir(data_dir);
        let (wal, report) = Wal::open(&dir, WalOptions::default().sync(sync))
            .map_err(|e| format!("cannot open the write-ahead log in {}: {e}", dir.display()))?;
        if let Some(t) = &report.torn_tail {
            tracing::warn!(
                segment = %t.segment.display(), offset = t.offset, bytes = t.discarded_bytes,
                reason = %t.reason, "write-ahead log: cut off a torn tail a crash left (no acknowledged record in it)"
            );
        }
        let reach = sinks_reached(scenario);
        let below = sinks_below(scenario);
        let mut keys = KeyIndex::default();
        let mut offsets = HashMap::new();
        let mut completed = HashMap::new();
        let recovered = scan(
            &wal,
            &reach,
            &below,
            &mut keys,
            &mut offsets,
            &mut completed,
            at_rest.as_deref(),
        )?;
        tracing::info!(
            dir = %dir.display(), sync = %sync, records = recovered.records,
            replay = recovered.replay.len(), clean_close = report.clean_close,
            "write-ahead log recovered, sync policy {sync}"
        );
        let journal = RackJournal {
            shared: Arc::new(Shared {
                wal,
                sync,
                keys: Mutex::new(keys),
                offsets: Mutex::new(offsets),
                completed,
                failed: AtomicBool::new(false),
                at_rest,
            }),
        };
        Ok((journal, recovered))
    }

    /// Reads the write-ahead log's telemetry.
    pub(crate) fn meter(&self) -> fluxrig_wal::WalMeter {
        self.shared.wal.meter()
    }

    /// The journal handle of one gear (`None` for transforms: they record
    /// nothing).
    pub(crate) fn for_gear(&self, gear: &str, role: Role) -> Option<Arc<dyn Journal>> {
        (role != Role::Transform).then(|| {
            Arc::new(GearJournal {
                shared: Arc::clone(&self.shared),
                gear: Arc::from(gear),
                role,
            }) as Arc<dyn Journal>
        })
    }

    /// The dead-letter log of the gears: each letter is written to `log`
    /// and recorded (DEAD_LETTER) in the WAL, so recovery knows the message
    /// will not reach the sinks downstream of the gear that gave up on it.
    pub(crate) fn dead_letters(&self, log: Arc<DeadLetterLog>) -> JournaledDeadLetters {
        JournaledDeadLetters {
            log,
            wal: self.shared.wal.clone(),
            at_rest: self.shared.at_rest.clone(),
        }
    }

    /// Syncs and closes the log (clean close).
    pub(crate) async fn close(self) {
        let wal = self.shared.wal.clone();
        drop(self);
        let st = wal.stats();
        match wal.close().await {
            Ok(()) => tracing::info!(
                records = st.records, batches = st.batches, syncs = st.syncs,
                sync_time = ?st.sync_time, "write-ahead log closed"
            ),
            Err(e) => tracing::error!(error = %e, "write-ahead log did not close cleanly"),
        }
    }
}

/// Writes dead letters to the Rack's log and records them in the WAL.
#[derive(Debug)]
pub(crate) struct JournaledDeadLetters {
    log: Arc<DeadLetterLog>,
    wal: Wal,
    at_rest: Option<Arc<dyn AtRest>>,
}

impl DeadLetters for JournaledDeadLetters {
    fn record(&self, mut letter: DeadLetter) {
        if let Some(p) = self.at_rest.as_ref().and_then(|a| a.protect(&letter.msg)) {
            letter.msg = p;
        }
        let body = records::encode_dead_letter(&letter.gear, &letter.reason, &letter.msg);
        let id = letter.msg.id;
        self.log.record(letter);
        // `record` is synchronous; the append is queued from a task. Its
        // place after the message's INGRESS is all recovery needs.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%id, "dead letter not recorded in the write-ahead log (no runtime); it may be replayed");
            return;
        };
        let wal = self.wal.clone();
        rt.spawn(async move {
            if let Err(e) = wal.submit(records::DEAD_LETTER, body).await {
                tracing::warn!(%id, error = %e, "dead letter not recorded in the write-ahead log; it may be replayed");
            }
        });
    }
}

/// Per source port (`gear`, `port`): the sinks its messages reach.
type Reach = BTreeMap<(String, String), BTreeSet<String>>;

/// Per gear: the sinks downstream of it (itself, for a sink).
fn sinks_below(scenario: &Scenario) -> HashMap<String, BTreeSet<String>> {
    let roles: HashMap<&str, Role> = scenario
        .gears
        .iter()
        .map(|g| (g.name.as_str(), g.role()))
        .collect();
    scenario
        .gears
        .iter()
        .map(|g| {
            let mut sinks = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut todo = vec![g.name.as_str()];
            while let Some(n) = todo.pop() {
                if !seen.insert(n) {
                    continue;
                }
                if roles.get(n) == Some(&Role::Sink) {
                    sinks.insert(n.to_owned());
                    continue;
                }
                todo.extend(
                    scenario
                        .wires
                        .iter()
                        .filter(|x| x.from.gear == n)
                        .map(|x| x.to.gear.as_str()),
                );
            }
            (g.name.clone(), sinks)
        })
        .collect()
}

/// Follows the wires from every output port to the sinks they reach.
fn sinks_reached(scenario: &Scenario) -> Reach {
    let roles: HashMap<&str, Role> = scenario
        .gears
        .iter()
        .map(|g| (g.name.as_str(), g.role()))
        .collect();
    let mut reach = Reach::new();
    for g in scenario.gears.iter().filter(|g| g.role() == Role::Source) {
        for w in scenario.wires.iter().filter(|w| w.from.gear == g.name) {
            let mut sinks = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut todo = vec![w.to.gear.as_str()];
            while let Some(n) = todo.pop() {
                if !seen.insert(n) {
                    continue;
                }
                match roles.get(n) {
                    Some(Role::Sink) => {
                        sinks.insert(n.to_owned());
                    }
                    Some(_) => todo.extend(
                        scenario
                            .wires
                            .iter()
                            .filter(|x| x.from.gear == n)
                            .map(|x| x.to.gear.as_str()),
                    ),
                    None => {}
                }
            }
            reach
                .entry((g.name.clone(), w.from.port.clone()))
                .or_default()
                .extend(sinks);
        }
    }
    reach
}

/// An ingress not yet completed by every sink it reaches.
struct Open {
    gear: String,
    port: String,
    /// The INGRESS body, decoded only if it is replayed.
    body: Bytes,
    done: Vec<String>,
}

impl Open {
    /// Every sink its source port reaches has completed it (or will never
    /// get it).
    fn complete(&self, reach: &Reach) -> bool {
        reach
            .get(&(self.gear.clone(), self.port.clone()))
            .is_some_and(|sinks| sinks.iter().all(|s| self.done.contains(s)))
    }
}

/// What recovery needs of an INGRESS body — source gear, port, fluxID,
/// idempotency key — read without building the message.
fn peek_ingress(body: &[u8]) -> Option<(String, String, FluxId, Option<String>)> {
    let v = cbor::from_slice(body, Limits::DEFAULT).ok()?;
    let msg = v.get("msg")?;
    let id = msg.get("id")?.as_integer()?.as_u64()?;
    let key = msg
        .get("meta")
        .and_then(|m| m.get(IDEMPOTENCY_META))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((
        v.get("gear")?.as_str()?.to_owned(),
        v.get("port")?.as_str()?.to_owned(),
        FluxId::from_raw(id),
        key,
    ))
}

/// Gear and message fluxID of a DEAD_LETTER body.
fn peek_dead_letter(body: &[u8]) -> Option<(String, FluxId)> {
    let v = cbor::from_slice(body, Limits::DEFAULT).ok()?;
    let id = v.get("msg")?.get("id")?.as_integer()?.as_u64()?;
    Some((v.get("gear")?.as_str()?.to_owned(), FluxId::from_raw(id)))
}

/// Sink gear, fluxID and offset (if any) of a COMPLETED body.
fn peek_completed(body: &[u8]) -> Option<(String, FluxId, Option<u64>)> {
    let v = cbor::from_slice(body, Limits::DEFAULT).ok()?;
    let id = v.get("id")?.as_integer()?.as_u64()?;
    let offset = match v.get("offset") {
        None => None,
        Some(o) => Some(o.as_integer()?.as_u64()?),
    };
    Some((
        v.get("gear")?.as_str()?.to_owned(),
        FluxId::from_raw(id),
        offset,
    ))
}

/// Reads the whole log once: idempotency keys, sink offsets, and the
/// ingresses left open. Only INGRESS and COMPLETED records are decoded, and
/// a message only when it is replayed.
fn scan(
    wal: &Wal,
    reach: &Reach,
    below: &HashMap<String, BTreeSet<String>>,
    keys: &mut KeyIndex,
    offsets: &mut HashMap<String, u64>,
    completed: &mut HashMap<FluxId, Vec<String>>,
    at_rest: Option<&dyn AtRest>,
) -> Result<Recovered, String> {
    let mut open: HashMap<FluxId, (Lsn, Open)> = HashMap::new();
    let mut recovered = Recovered::default();
    let reader = wal
        .read_from(wal.first_lsn())
        .map_err(|e| format!("cannot read the write-ahead log: {e}"))?;
    let unreadable = |lsn: Lsn, kind: u8| {
        format!(
            "write-ahead log record {lsn} ({}) is unreadable",
            records::kind_name(kind)
        )
    };
    for rec in reader {
        let rec = rec.map_err(|e| format!("cannot read the write-ahead log: {e}"))?;
        recovered.records += 1;
        match rec.kind {
            records::INGRESS => {
                let (gear, port, id, key) =
                    peek_ingress(&rec.body).ok_or_else(|| unreadable(rec.lsn, rec.kind))?;
                if let Some(k) = key {
                    keys.insert(Arc::from(gear.as_str()), k, id);
                }
                if reach
                    .get(&(gear.clone(), port.clone()))
                    .is_some_and(BTreeSet::is_empty)
                {
                    continue; // wired to no sink: nothing to complete
                }
                open.insert(
                    id,
                    (
                        rec.lsn,
                        Open {
                            gear,
                            port,
                            body: rec.body,
                            done: Vec::new(),
                        },
                    ),
                );
            }
            records::COMPLETED => {
                let (gear, id, offset) =
                    peek_completed(&rec.body).ok_or_else(|| unreadable(rec.lsn, rec.kind))?;
                if let Some(o) = offset {
                    offsets.insert(gear.clone(), o);
                }
                if let Some((_, o)) = open.get_mut(&id) {
                    o.done.push(gear);
                    if o.complete(reach) {
                        open.remove(&id);
                    }
                }
            }
            records::DEAD_LETTER => {
                // The message will not reach the sinks below the gear that
                // gave up on it (a sink's own failures also have a COMPLETED).
                let (gear, id) =
                    peek_dead_letter(&rec.body).ok_or_else(|| unreadable(rec.lsn, rec.kind))?;
                if let Some((_, o)) = open.get_mut(&id) {
                    o.done
                        .extend(below.get(&gear).into_iter().flatten().cloned());
                    if o.complete(reach) {
                        open.remove(&id);
                    }
                }
            }
            _ => {}
        }
    }
    let mut left: Vec<(Lsn, Open)> = open.into_values().collect();
    left.sort_by_key(|(lsn, _)| *lsn);
    for (lsn, o) in left {
        let msg = match RackRecord::decode(records::INGRESS, &o.body) {
            Ok(RackRecord::Ingress { msg, .. }) => match at_rest {
                Some(a) => a.recover(msg),
                None => msg,
            },
            Ok(_) => return Err(unreadable(lsn, records::INGRESS)),
            Err(e) => return Err(format!("{}: {e}", unreadable(lsn, records::INGRESS))),
        };
        if !reach.contains_key(&(o.gear.clone(), o.port.clone())) {
            recovered.orphaned += 1;
            tracing::warn!(gear = %o.gear, port = %o.port, id = %msg.id, "uncompleted message from a gear or port no longer in the scenario; not replayed");
            continue;
        }
        if !o.done.is_empty() {
            completed.insert(msg.id, o.done);
        }
        recovered.replay.push(Replay {
            gear: o.gear,
            port: o.port,
            msg,
        });
    }
    Ok(recovered)
}

/// One gear's view of the journal.
#[derive(Debug)]
struct GearJournal {
    shared: Arc<Shared>,
    gear: Arc<str>,
    role: Role,
}

/// Records of one delivery group queued at once, at most about this many
/// bytes (the log's queue holds 32 MiB).
const MAX_GROUP_BYTES: usize = 4 << 20;

impl GearJournal {
    async fn submit(&self, group: Vec<(u8, Bytes)>) -> Result<(), JournalError> {
        if group.is_empty() {
            return Ok(());
        }
        match self.shared.wal.submit_group(group).await {
            Ok(pending) => {
                drop(pending);
                Ok(())
            }
            Err(e) => Err(self.shared.fail("recording deliveries", &e)),
        }
    }
}

impl Journal for GearJournal {
    fn ingress<'a>(
        &'a self,
        port: &'a str,
        msg: &'a FluxMsg,
    ) -> BoxFuture<'a, Result<Ingress, JournalError>> {
        Box::pin(async move {
            if self.role != Role::Source {
                return Ok(Ingress::Recorded(Durable::ready()));
            }
            let key = msg.meta.get(IDEMPOTENCY_META);
            if let Some(k) = key {
                let mut keys = lock(&self.shared.keys);
                if let Some(first) = keys.get(&self.gear, k) {
                    drop(keys);
                    // The first record may still be in flight: a sync covers it.
                    let wal = self.shared.wal.clone();
                    return Ok(Ingress::Duplicate(
                        first,
                        Durable::new(async move {
                            wal.sync().await.map_err(|e| JournalError(e.to_string()))
                        }),
                    ));
                }
                keys.insert(Arc::clone(&self.gear), k.to_owned(), msg.id);
            }
            let body = records::encode_ingress(&self.gear, port, &self.shared.protect(msg));
            match self.shared.wal.submit(records::INGRESS, body).await {
                Ok(pending) => Ok(Ingress::Recorded(Durable::new(async move {
                    pending
                        .await
                        .map(|_| ())
                        .map_err(|e| JournalError(e.to_string()))
                }))),
                Err(e) => {
                    if let Some(k) = key {
                        lock(&self.shared.keys).remove(&self.gear, k);
                    }
                    Err(self.shared.fail("recording an ingress", &e))
                }
            }
        })
    }

    fn received(&self, msg: &FluxMsg) -> Option<Option<Bytes>> {
        if self.role != Role::Sink {
            return Some(None);
        }
        if self
            .shared
            .completed
            .get(&msg.id)
            .is_some_and(|done| done.iter().any(|g| **g == *self.gear))
        {
            tracing::debug!(id = %msg.id, "replayed message already completed here; skipped");
            return None;
        }
        Some(Some(Bytes::from(records::encode_egress(
            &self.gear,
            &self.shared.protect(msg),
        ))))
    }

    fn delivered(&self, done: Vec<Delivery>) -> BoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            if done.is_empty() {
                return Ok(());
            }
            let ts = fluxrig_gear::now_ns();
            let mut group: Vec<(u8, Bytes)> = Vec::with_capacity(done.len() * 2);
            let mut last_offset = None;
            for d in done {
                if let Some(e) = d.egress {
                    group.push((records::EGRESS, e));
                }
                let body = match d.offset {
                    Some(o) => {
                        last_offset = Some(o);
                        records::encode_completed_at(&self.gear, d.id, ts, o)
                    }
                    None => records::encode_completed(&self.gear, d.id, ts),
                };
                group.push((records::COMPLETED, Bytes::from(body)));
            }
            // Queued, not awaited: a delivery recorded but lost in a crash
            // is replayed (and cut off first by a sink with an offset). Each
            // record stands alone (a COMPLETED carries its own offset), so
            // any prefix that survives a crash is consistent; groups are cut
            // to stay well inside the log's queue.
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for (kind, body) in group {
                bytes += body.len() + fluxrig_wal::RECORD_HEADER_LEN;
                chunk.push((kind, body));
                if bytes >= MAX_GROUP_BYTES {
                    self.submit(std::mem::take(&mut chunk)).await?;
                    bytes = 0;
                }
            }
            self.submit(chunk).await?;
            if let Some(o) = last_offset {
                lock(&self.shared.offsets).insert(self.gear.to_string(), o);
            }
            Ok(())
        })
    }

    fn committed_offset(&self) -> Option<u64> {
        lock(&self.shared.offsets).get(&*self.gear).copied()
    }

    fn sync_output(&self) -> bool {
        self.shared.sync == SyncPolicy::Always
    }
}
