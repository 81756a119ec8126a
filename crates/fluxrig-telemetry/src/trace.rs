//! Trace spans of gear hops, collected off the hot path.
//!
//! A gear that emits a message records one [`SpanRecord`] for its hop and
//! hands it to the [`Tracer`], which queues it in a bounded buffer: when
//! the exporter falls behind, records are dropped and counted, never
//! waited for. Whether a hop is recorded is decided at the head of the
//! trace (the W3C `sampled` flag, set by the first gear from the sampling
//! ratio or taken from an upstream `traceparent`); hops that fail or take
//! longer than the slow threshold are recorded whatever the flag says.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

use compact_str::CompactString;

/// The W3C `sampled` trace flag.
pub const SAMPLED: u8 = 0x01;

/// One gear hop of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// The trace the message belongs to.
    pub trace_id: [u8; 16],
    /// This hop's span id.
    pub span_id: [u8; 8],
    /// The previous hop's span id (or the upstream caller's); all zero for
    /// the first hop of a trace.
    pub parent_span_id: [u8; 8],
    /// The gear's name in the scenario.
    pub gear: Arc<str>,
    /// The gear's type.
    pub gear_type: &'static str,
    /// The port the message left on (empty for a sink's delivery).
    pub port: CompactString,
    /// The message's fluxID.
    pub msg_id: u64,
    /// When the message reached the gear (the previous hop's emit), Unix
    /// nanoseconds.
    pub start_ns: u64,
    /// When the gear emitted or delivered it, Unix nanoseconds.
    pub end_ns: u64,
    /// The gear failed the message.
    pub error: bool,
}

/// How spans are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Fraction of new traces recorded, 0.0 to 1.0.
    pub ratio: f64,
    /// Hops at least this long are recorded even when not sampled.
    pub slow: Duration,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            ratio: 1.0,
            slow: Duration::from_millis(100),
        }
    }
}

/// Hands span records from the gears to the exporter.
#[derive(Debug)]
pub struct Tracer {
    tx: SyncSender<SpanRecord>,
    /// Traces whose id's low 64 bits fall below this are sampled.
    threshold: u64,
    slow_ns: u64,
    dropped: AtomicU64,
    recorded: AtomicU64,
}

/// The exporter's end of a [`Tracer`]'s queue.
#[derive(Debug)]
pub struct SpanQueue {
    rx: Receiver<SpanRecord>,
}

impl SpanQueue {
    /// Moves up to `max` queued records into `out` without waiting; false
    /// once every [`Tracer`] is gone and the queue is empty.
    pub fn drain(&self, out: &mut Vec<SpanRecord>, max: usize) -> bool {
        for _ in 0..max {
            match self.rx.try_recv() {
                Ok(r) => out.push(r),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
}

impl Tracer {
    /// A tracer whose queue holds `capacity` records.
    pub fn new(capacity: usize, sampling: Sampling) -> (Arc<Tracer>, SpanQueue) {
        let (tx, rx) = sync_channel(capacity.max(1));
        let ratio = sampling.ratio.clamp(0.0, 1.0);
        // `ratio * 2^64`, saturating at 1.0 (every trace).
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 18_446_744_073_709_551_616.0) as u64
        };
        let tracer = Tracer {
            tx,
            threshold,
            slow_ns: u64::try_from(sampling.slow.as_nanos()).unwrap_or(u64::MAX),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        };
        (Arc::new(tracer), SpanQueue { rx })
    }

    /// Whether a new trace with this id is sampled (decided from the id's
    /// random bits, so every Rack that sees the id decides alike).
    pub fn sampled(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.threshold == u64::MAX || u64::from_be_bytes(low) < self.threshold
    }

    /// Whether a hop of `nanos` is slow enough to record regardless of
    /// sampling.
    pub fn is_slow(&self, nanos: u64) -> bool {
        nanos >= self.slow_ns
    }

    /// A fresh random trace id (never all zero).
    pub fn new_trace_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&nonzero_random().to_be_bytes());
        id[8..].copy_from_slice(&nonzero_random().to_be_bytes());
        id
    }

    /// A fresh random span id (never all zero).
    pub fn new_span_id(&self) -> [u8; 8] {
        nonzero_random().to_be_bytes()
    }

    /// Queues a record; drops (and counts) it when the queue is full.
    pub fn offer(&self, record: SpanRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts records given up before they were offered.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Records dropped because the queue was full (or the exporter gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records queued for export.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// Per-thread generator state, seeded from the process's random hash
    /// keys (no syscall per id).
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish() | 1
    });
}

/// splitmix64 over the thread's state: ids need to be unique and
/// unpredictable enough to spread sampling, not secret.
fn nonzero_random() -> u64 {
    RNG.with(|s| {
        loop {
            let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: [0; 8],
            gear: Arc::from("g"),
            gear_type: "map",
            port: CompactString::const_new("out"),
            msg_id: 7,
            start_ns: 1,
            end_ns: 2,
            error: false,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (t, q) = Tracer::new(2, Sampling::default());
        for n in 0..5 {
            t.offer(record(n));
        }
        assert_eq!(t.recorded(), 2);
        assert_eq!(t.dropped(), 3);
        let mut out = Vec::new();
        assert!(q.drain(&mut out, 10));
        assert_eq!(out, vec![record(0), record(1)]);
        drop(t);
        assert!(!q.drain(&mut out, 10));
    }

    #[test]
    fn the_sampling_ratio_holds_over_many_traces() {
        let sampling = |ratio| Sampling {
            ratio,
            slow: Duration::from_secs(1),
        };
        let (half, _q) = Tracer::new(1, sampling(0.25));
        let n = 20_000;
        let kept = (0..n)
            .filter(|_| half.sampled(&half.new_trace_id()))
            .count();
        // 25 % ± 2 % (binomial sd ≈ 0.3 % here).
        assert!((4_600..=5_400).contains(&kept), "kept {kept} of {n}");
        let (none, _q) = Tracer::new(1, sampling(0.0));
        assert!(!(0..1000).any(|_| none.sampled(&none.new_trace_id())));
        let (all, _q) = Tracer::new(1, sampling(1.0));
        assert!((0..1000).all(|_| all.sampled(&all.new_trace_id())));
        assert!(all.is_slow(1_000_000_000) && !all.is_slow(999_999_999));
    }

    #[test]
    fn ids_are_never_zero_and_do_not_repeat() {
        let (t, _q) = Tracer::new(1, Sampling::default());
        let ids: std::collections::HashSet<[u8; 8]> =
            (0..10_000).map(|_| t.new_span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
    }
}
