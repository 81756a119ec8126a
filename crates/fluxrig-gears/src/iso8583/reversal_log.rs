//! The conductor's log on disk: a write-ahead log (the Rack's own WAL
//! crate: CRC-framed, hash-chained, group-committed) in
//! `<data>/conductor/<gear>/reversals/` of its reversal queue (`QUEUED`,
//! `ACKED`) and, with `durable_replies`, of its transactions (`FORWARDED`,
//! `ANSWERED`).
//!
//! A reversal is `QUEUED` — and durable — before the terminal hears about
//! the timeout and before its 0420 leaves; its 0430 writes `ACKED` without
//! waiting for the sync (a lost `ACKED` costs one repeated 0421 after a
//! crash, which the issuer answers again).
//!
//! A request is `FORWARDED` without waiting for the sync (the issuer is not
//! kept waiting on the disk); the issuer's reply is `ANSWERED`, and the
//! reply reaches the terminal only once that record is durable. A forward
//! is settled by its `ANSWERED` or by the `QUEUED` reversal that names it.
//!
//! At start the log is read back: every reversal queued and not
//! acknowledged is in the queue again, and every forward not settled is
//! handed back (its terminal was never told the answer: the switch
//! reverses it). Closed segments holding only settled records are removed.
//!
//! The records hold messages as they are in the Rack (with the coat check
//! in front of the conductor: tokens, not card data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fluxrig_msg::{FluxMsg, Limits, Value};
use fluxrig_wal::{Lsn, Pending, SyncPolicy, Wal, WalOptions};

/// Record kind: a reversal was queued. Body: CBOR `[key, target, fluxMsg]`.
const QUEUED: u8 = 1;
/// Record kind: a reversal was acknowledged. Body: CBOR `[key, target]`.
const ACKED: u8 = 2;
/// Record kind: a request went to an issuer. Body: CBOR `[key, target,
/// request data]` (the issuer-leg key; `data` as CBOR bytes).
const FORWARDED: u8 = 3;
/// Record kind: the terminal of a forwarded request is answered. Body:
/// CBOR `[key, target, terminal key, MTI, DE 39]`.
const ANSWERED: u8 = 4;

/// Segments stay small enough to be removed soon after their records are
/// settled (transactions live for seconds), large enough not to rotate
/// many times a second under load.
const SEGMENT_SIZE: u64 = 16 << 20;

/// A forwarded request read back from the log with neither an answer nor
/// a reversal: its terminal never heard the issuer's answer.
#[derive(Debug)]
pub(crate) struct Unsettled {
    /// The issuer-leg key.
    pub(crate) key: String,
    /// The target's name.
    pub(crate) target: String,
    /// The request's `data`.
    pub(crate) data: Value,
}

/// What the log holds that is not settled, read back at open.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Reversals still waiting for their 0430, oldest first.
    pub(crate) reversals: Vec<Restored>,
    /// Forwarded requests never answered nor reversed, oldest first.
    pub(crate) unsettled: Vec<Unsettled>,
}

/// An `ANSWERED` record, as read by [`answered_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredRecord {
    /// The issuer-leg key.
    pub key: String,
    /// The target's name.
    pub target: String,
    /// The terminal key (the correlation key over all its elements).
    pub terminal_key: String,
    /// The reply's MTI.
    pub mti: String,
    /// The reply's DE 39.
    pub code: String,
}

/// A reversal read back from the log.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) key: String,
    /// The target's name.
    pub(crate) target: String,
    pub(crate) msg: FluxMsg,
    pub(crate) lsn: Lsn,
}

/// The log of one conductor's reversals.
#[derive(Debug)]
pub(crate) struct ReversalLog {
    wal: Wal,
    dir: PathBuf,
}

fn bad(dir: &Path, lsn: Lsn, what: &str) -> String {
    format!(
        "reversal log {}: record {} {what}",
        dir.display(),
        lsn.get()
    )
}

/// The items of a record's CBOR array.
fn record_items(dir: &Path, rec: &fluxrig_wal::Record) -> Result<Vec<Value>, String> {
    let body = fluxrig_msg::cbor::from_slice(&rec.body, Limits::default())
        .map_err(|e| bad(dir, rec.lsn, &format!("is not CBOR: {e}")))?;
    match body {
        Value::Array(items) => Ok(items),
        _ => Err(bad(dir, rec.lsn, "is not an array")),
    }
}

fn item_text(dir: &Path, lsn: Lsn, items: &[Value], i: usize) -> Result<String, String> {
    match items.get(i) {
        Some(Value::Text(t)) => Ok(t.to_string()),
        _ => Err(bad(dir, lsn, &format!("has no text at item {i}"))),
    }
}

/// A record of a conductor's log, as read by [`read_records`] (message
/// bodies left out).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRecord {
    /// A reversal was queued (durable before it left).
    Queued {
        /// The reversal's issuer-leg key.
        key: String,
        /// The target's name.
        target: String,
        /// The issuer-leg key of the forward it settles, if recorded.
        settles: Option<String>,
    },
    /// A reversal was acknowledged (0430).
    Acked {
        /// The reversal's issuer-leg key.
        key: String,
        /// The target's name.
        target: String,
    },
    /// A request went to an issuer.
    Forwarded {
        /// The request's issuer-leg key.
        key: String,
        /// The target's name.
        target: String,
    },
    /// A forwarded request's terminal was answered.
    Answered(AnsweredRecord),
}

/// Every record of the conductor log in `dir`, oldest first, read without
/// opening it for writing (complete records only: a torn tail ends the
/// read). For tools and tests that check what a conductor made durable.
///
/// # Errors
///
/// The log cannot be read, or holds a record that is not the conductor's.
pub fn read_records(dir: &Path) -> Result<Vec<LogRecord>, String> {
    let reader = fluxrig_wal::WalReader::open(dir, Lsn::FIRST)
        .map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for rec in reader {
        let rec = rec.map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
        let items = record_items(dir, &rec)?;
        let text = |i: usize| item_text(dir, rec.lsn, &items, i);
        let (key, target) = (text(0)?, text(1)?);
        out.push(match rec.kind {
            QUEUED => LogRecord::Queued {
                key,
                target,
                settles: match items.get(3) {
                    Some(Value::Text(t)) => Some(t.to_string()),
                    _ => None,
                },
            },
            ACKED => LogRecord::Acked { key, target },
            FORWARDED => LogRecord::Forwarded { key, target },
            ANSWERED => LogRecord::Answered(AnsweredRecord {
                key,
                target,
                terminal_key: text(2)?,
                mti: text(3)?,
                code: text(4)?,
            }),
            k => return Err(bad(dir, rec.lsn, &format!("has unknown kind {k}"))),
        });
    }
    Ok(out)
}

impl ReversalLog {
    /// Opens (or creates) the log in `dir` and reads back what is not
    /// settled.
    /// `sync` is the Rack's policy: under `interval`/`none` a record is
    /// "durable" (its reply or 0420 released) once written to the OS.
    pub(crate) fn open(dir: &Path, sync: SyncPolicy) -> Result<(ReversalLog, Recovered), String> {
        ReversalLog::open_with(
            dir,
            WalOptions::default().sync(sync).segment_size(SEGMENT_SIZE),
        )
    }

    fn open_with(dir: &Path, options: WalOptions) -> Result<(ReversalLog, Recovered), String> {
        let (wal, report) =
            Wal::open(dir, options).map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
        if let Some(t) = &report.torn_tail {
            tracing::warn!(dir = %dir.display(), torn = ?t, "reversal log: cut off a torn tail left by a crash");
        }
        let reader = wal
            .read_from(wal.first_lsn())
            .map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
        let mut open: Vec<Option<Restored>> = Vec::new();
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        let mut forwards: Vec<Option<Unsettled>> = Vec::new();
        let mut forward_by_key: HashMap<String, usize> = HashMap::new();
        for rec in reader {
            let rec = rec.map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
            let items = record_items(dir, &rec)?;
            let text = |i: usize| item_text(dir, rec.lsn, &items, i);
            let id = (text(0)?, text(1)?);
            match rec.kind {
                QUEUED => {
                    let Some(Value::Bytes(b)) = items.get(2) else {
                        return Err(bad(dir, rec.lsn, "has no message"));
                    };
                    let msg = FluxMsg::from_cbor(b)
                        .map_err(|e| bad(dir, rec.lsn, &format!("holds a bad message: {e}")))?;
                    // The forward this reversal settles (absent in old logs).
                    if let Some(Value::Text(f)) = items.get(3)
                        && let Some(i) = forward_by_key.remove(f.as_str())
                    {
                        forwards[i] = None;
                    }
                    if let Some(old) = by_key.insert(id.clone(), open.len()) {
                        open[old] = None;
                    }
                    open.push(Some(Restored {
                        key: id.0,
                        target: id.1,
                        msg,
                        lsn: rec.lsn,
                    }));
                }
                ACKED => {
                    if let Some(i) = by_key.remove(&id) {
                        open[i] = None;
                    }
                }
                FORWARDED => {
                    let Some(Value::Bytes(b)) = items.get(2) else {
                        return Err(bad(dir, rec.lsn, "has no request"));
                    };
                    let data = fluxrig_msg::cbor::from_slice(b, Limits::default())
                        .map_err(|e| bad(dir, rec.lsn, &format!("holds a bad request: {e}")))?;
                    // A later forward of the same key (failover) replaces it.
                    if let Some(old) = forward_by_key.insert(id.0.clone(), forwards.len()) {
                        forwards[old] = None;
                    }
                    forwards.push(Some(Unsettled {
                        key: id.0,
                        target: id.1,
                        data,
                    }));
                }
                ANSWERED => {
                    if let Some(i) = forward_by_key.remove(&id.0) {
                        forwards[i] = None;
                    }
                }
                k => return Err(bad(dir, rec.lsn, &format!("has unknown kind {k}"))),
            }
        }
        let log = ReversalLog {
            wal,
            dir: dir.to_path_buf(),
        };
        let recovered = Recovered {
            reversals: open.into_iter().flatten().collect(),
            unsettled: forwards.into_iter().flatten().collect(),
        };
        Ok((log, recovered))
    }

    fn err(&self, e: &fluxrig_wal::WalError) -> String {
        format!("reversal log {}: {e}", self.dir.display())
    }

    /// Records a queued reversal, and the forward it settles (the
    /// issuer-leg key of the request it reverses, when that was recorded);
    /// await the result for durability.
    pub(crate) async fn queued(
        &self,
        key: &str,
        target: &str,
        msg: &FluxMsg,
        settles: Option<&str>,
    ) -> Result<Pending, String> {
        let mut items = vec![
            Value::text(key),
            Value::text(target),
            Value::Bytes(msg.to_cbor().into()),
        ];
        if let Some(f) = settles {
            items.push(Value::text(f));
        }
        let body = fluxrig_msg::cbor::to_vec(&Value::Array(items));
        self.submit_awaited(QUEUED, body).await
    }

    /// Queues a record someone will wait for, with its sync under way at
    /// once (the log syncs records nobody awaits only lazily).
    async fn submit_awaited(&self, kind: u8, body: Vec<u8>) -> Result<Pending, String> {
        let mut pending = self
            .wal
            .submit(kind, body)
            .await
            .map_err(|e| self.err(&e))?;
        pending.expedite();
        Ok(pending)
    }

    /// Records an acknowledged reversal (not waited for: see the module).
    pub(crate) async fn acked(&self, key: &str, target: &str) -> Result<(), String> {
        let body =
            fluxrig_msg::cbor::to_vec(&Value::Array(vec![Value::text(key), Value::text(target)]));
        // Dropping the pending append does not cancel it.
        self.wal
            .submit(ACKED, body)
            .await
            .map(drop)
            .map_err(|e| self.err(&e))
    }

    /// Every record below this LSN is on disk.
    pub(crate) fn synced_lsn(&self) -> Lsn {
        self.wal.synced_lsn()
    }

    /// Records a request forwarded to `target` (not waited for: the issuer
    /// never waits on the disk); returns its LSN.
    pub(crate) async fn forwarded(
        &self,
        key: &str,
        target: &str,
        data: &Value,
    ) -> Result<Lsn, String> {
        let body = fluxrig_msg::cbor::to_vec(&Value::Array(vec![
            Value::text(key),
            Value::text(target),
            Value::Bytes(fluxrig_msg::cbor::to_vec(data).into()),
        ]));
        // Dropping the pending append does not cancel it.
        self.wal
            .submit(FORWARDED, body)
            .await
            .map(|p| p.lsn())
            .map_err(|e| self.err(&e))
    }

    /// Records the answer a forwarded request's terminal gets; await the
    /// result before the answer leaves.
    pub(crate) async fn answered(&self, rec: &AnsweredRecord) -> Result<Pending, String> {
        let body = fluxrig_msg::cbor::to_vec(&Value::Array(vec![
            Value::text(rec.key.as_str()),
            Value::text(rec.target.as_str()),
            Value::text(rec.terminal_key.as_str()),
            Value::text(rec.mti.as_str()),
            Value::text(rec.code.as_str()),
        ]));
        self.submit_awaited(ANSWERED, body).await
    }

    /// Removes closed segments that hold nothing older than `oldest_open`
    /// (the LSN of the oldest record still open; `None`: none is).
    pub(crate) fn trim(&self, oldest_open: Option<Lsn>) -> Result<usize, String> {
        let through = match oldest_open {
            Some(l) if l.get() == 0 => return Ok(0),
            Some(l) => Lsn(l.get() - 1),
            None => Lsn(self.wal.next_lsn().get().saturating_sub(1)),
        };
        self.wal
            .remove_through(through)
            .map(|v| v.len())
            .map_err(|e| self.err(&e))
    }
}

#[cfg(test)]
mod tests {
    use fluxrig_msg::FluxId;

    use super::*;

    fn msg(n: u64) -> FluxMsg {
        FluxMsg::new(FluxId::from_raw(n), Value::text(format!("reversal {n}")))
    }

    #[tokio::test]
    async fn only_unacknowledged_reversals_come_back_and_settled_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rev");
        {
            let (log, restored) =
                ReversalLog::open_with(&path, WalOptions::default().segment_size(1 << 20)).unwrap();
            assert!(restored.reversals.is_empty() && restored.unsettled.is_empty());
            for n in 0..3 {
                log.queued(&format!("k{n}"), "a", &msg(n), None)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            log.acked("k1", "a").await.unwrap();
            // Same key, other target: not this reversal's ack.
            log.acked("k2", "b").await.unwrap();
            log.wal.sync().await.unwrap();
            // Dropped without close: as after a crash.
        }
        let (log, restored) =
            ReversalLog::open_with(&path, WalOptions::default().segment_size(1 << 20)).unwrap();
        let oldest = restored.reversals[0].lsn;
        let got: Vec<(String, String, FluxMsg)> = restored
            .reversals
            .into_iter()
            .map(|r| (r.key, r.target, r.msg))
            .collect();
        assert_eq!(
            got,
            [
                ("k0".to_owned(), "a".to_owned(), msg(0)),
                ("k2".to_owned(), "a".to_owned(), msg(2)),
            ]
        );
        // Fill a few segments with settled reversals, then trim them.
        let big = FluxMsg::new(FluxId::from_raw(9), Value::Bytes(vec![7u8; 100_000].into()));
        for n in 0..30 {
            let k = format!("x{n}");
            log.queued(&k, "a", &big, None)
                .await
                .unwrap()
                .await
                .unwrap();
            log.acked(&k, "a").await.unwrap();
        }
        log.wal.sync().await.unwrap();
        let before = log.wal.segments().len();
        assert!(before > 2);
        // k0 still waits in the first segment: nothing goes.
        assert_eq!(log.trim(Some(oldest)).unwrap(), 0);
        log.acked("k0", "a").await.unwrap();
        log.acked("k2", "a").await.unwrap();
        assert_eq!(log.trim(None).unwrap(), before - 1);
        drop(log);
        assert!(
            ReversalLog::open(&path, SyncPolicy::Always)
                .unwrap()
                .1
                .reversals
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_forward_comes_back_unless_answered_or_reversed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rev");
        let data = |n: u64| Value::text(format!("request {n}"));
        let answered = |key: &str| AnsweredRecord {
            key: key.to_owned(),
            target: "a".to_owned(),
            terminal_key: format!("010|{key}|TERM0001"),
            mti: "0110".to_owned(),
            code: "00".to_owned(),
        };
        {
            let (log, _) = ReversalLog::open(&path, SyncPolicy::Always).unwrap();
            for n in 0..4 {
                log.forwarded(&format!("f{n}"), "a", &data(n))
                    .await
                    .unwrap();
            }
            // f1 failed over to b: the later forward counts.
            log.forwarded("f1", "b", &data(1)).await.unwrap();
            log.answered(&answered("f0")).await.unwrap().await.unwrap();
            log.queued("r2", "a", &msg(2), Some("f2"))
                .await
                .unwrap()
                .await
                .unwrap();
            // Dropped without close: as after a crash.
        }
        let (log, recovered) = ReversalLog::open(&path, SyncPolicy::Always).unwrap();
        let left: Vec<(String, String, Value)> = recovered
            .unsettled
            .into_iter()
            .map(|u| (u.key, u.target, u.data))
            .collect();
        assert_eq!(
            left,
            [
                ("f3".to_owned(), "a".to_owned(), data(3)),
                ("f1".to_owned(), "b".to_owned(), data(1)),
            ]
        );
        assert_eq!(recovered.reversals.len(), 1);
        drop(log);
        let answers: Vec<LogRecord> = read_records(&path)
            .unwrap()
            .into_iter()
            .filter(|r| matches!(r, LogRecord::Answered(_)))
            .collect();
        assert_eq!(answers, [LogRecord::Answered(answered("f0"))]);
    }

    #[test]
    fn a_foreign_record_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rev");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (wal, _) = Wal::open(&path, WalOptions::default()).unwrap();
            wal.append(QUEUED, vec![0xff_u8, 0x00]).await.unwrap();
            wal.close().await.unwrap();
        });
        let e = ReversalLog::open(&path, SyncPolicy::Always).unwrap_err();
        assert!(e.contains("record 1 "), "{e}");
        assert!(e.contains("CBOR"), "{e}");
    }
}
