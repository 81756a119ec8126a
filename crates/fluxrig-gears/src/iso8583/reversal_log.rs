//! The conductor's reversal queue on disk: a write-ahead log (the Rack's own
//! WAL crate: CRC-framed, hash-chained, group-committed) of `QUEUED` and
//! `ACKED` records in `<data>/conductor/<gear>/reversals/`.
//!
//! A reversal is `QUEUED` — and durable — before the terminal hears about
//! the timeout and before its 0420 leaves; its 0430 writes `ACKED` without
//! waiting for the sync (a lost `ACKED` costs one repeated 0421 after a
//! crash, which the issuer answers again). At start the log is read back:
//! every reversal queued and not acknowledged is in the queue again. Closed
//! segments holding only settled reversals are removed.
//!
//! The records hold the reversal message as it is in the Rack (with the
//! coat check in front of the conductor: tokens, not card data).

use std::path::{Path, PathBuf};

use fluxrig_msg::{FluxMsg, Limits, Value};
use fluxrig_wal::{Lsn, Pending, Wal, WalOptions};

/// Record kind: a reversal was queued. Body: CBOR `[key, target, fluxMsg]`.
const QUEUED: u8 = 1;
/// Record kind: a reversal was acknowledged. Body: CBOR `[key, target]`.
const ACKED: u8 = 2;

/// Segments stay small: the queue is short-lived and trimmed by segment.
const SEGMENT_SIZE: u64 = 1 << 20;

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

impl ReversalLog {
    /// Opens (or creates) the log in `dir` and reads back the reversals
    /// still waiting for their 0430, oldest first.
    pub(crate) fn open(dir: &Path) -> Result<(ReversalLog, Vec<Restored>), String> {
        let (wal, report) = Wal::open(dir, WalOptions::default().segment_size(SEGMENT_SIZE))
            .map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
        if let Some(t) = &report.torn_tail {
            tracing::warn!(dir = %dir.display(), torn = ?t, "reversal log: cut off a torn tail left by a crash");
        }
        let reader = wal
            .read_from(wal.first_lsn())
            .map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
        let mut open: Vec<Option<Restored>> = Vec::new();
        let mut by_key: std::collections::HashMap<(String, String), usize> =
            std::collections::HashMap::new();
        for rec in reader {
            let rec = rec.map_err(|e| format!("reversal log {}: {e}", dir.display()))?;
            let body = fluxrig_msg::cbor::from_slice(&rec.body, Limits::default())
                .map_err(|e| bad(dir, rec.lsn, &format!("is not CBOR: {e}")))?;
            let Value::Array(items) = body else {
                return Err(bad(dir, rec.lsn, "is not an array"));
            };
            let text = |i: usize| match items.get(i) {
                Some(Value::Text(t)) => Ok(t.to_string()),
                _ => Err(bad(dir, rec.lsn, &format!("has no text at item {i}"))),
            };
            let id = (text(0)?, text(1)?);
            match rec.kind {
                QUEUED => {
                    let Some(Value::Bytes(b)) = items.get(2) else {
                        return Err(bad(dir, rec.lsn, "has no message"));
                    };
                    let msg = FluxMsg::from_cbor(b)
                        .map_err(|e| bad(dir, rec.lsn, &format!("holds a bad message: {e}")))?;
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
                k => return Err(bad(dir, rec.lsn, &format!("has unknown kind {k}"))),
            }
        }
        let log = ReversalLog {
            wal,
            dir: dir.to_path_buf(),
        };
        Ok((log, open.into_iter().flatten().collect()))
    }

    fn err(&self, e: &fluxrig_wal::WalError) -> String {
        format!("reversal log {}: {e}", self.dir.display())
    }

    /// Records a queued reversal; await the result for durability.
    pub(crate) async fn queued(
        &self,
        key: &str,
        target: &str,
        msg: &FluxMsg,
    ) -> Result<Pending, String> {
        let body = fluxrig_msg::cbor::to_vec(&Value::Array(vec![
            Value::text(key),
            Value::text(target),
            Value::Bytes(msg.to_cbor().into()),
        ]));
        self.wal
            .submit(QUEUED, body)
            .await
            .map_err(|e| self.err(&e))
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

    /// Removes closed segments that hold nothing older than `oldest_open`
    /// (the LSN of the oldest reversal still waiting; `None`: none waits).
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
            let (log, restored) = ReversalLog::open(&path).unwrap();
            assert!(restored.is_empty());
            for n in 0..3 {
                log.queued(&format!("k{n}"), "a", &msg(n))
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
        let (log, restored) = ReversalLog::open(&path).unwrap();
        let oldest = restored[0].lsn;
        let got: Vec<(String, String, FluxMsg)> = restored
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
            log.queued(&k, "a", &big).await.unwrap().await.unwrap();
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
        assert!(ReversalLog::open(&path).unwrap().1.is_empty());
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
        let e = ReversalLog::open(&path).unwrap_err();
        assert!(e.contains("record 1 "), "{e}");
        assert!(e.contains("CBOR"), "{e}");
    }
}
