//! Per-gear counters, updated on the hot path with relaxed atomics and read
//! by the live status, the exit summary and telemetry.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use fluxrig_telemetry::{DeadLetterReason, GearMetrics, Histogram};

/// Counters of one gear.
#[derive(Debug, Default)]
pub struct GearStats {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    errors: AtomicU64,
    dead_letters: AtomicU64,
    restarts: AtomicU64,
    rejected: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicI64,
    pending_bytes: AtomicU64,
    /// Dead letters by [`DeadLetterReason`], in [`DeadLetterReason::ALL`] order.
    dead_letter_reasons: [AtomicU64; 4],
    /// From the previous gear's emit to this gear's emit, nanoseconds.
    latency: Histogram,
}

/// A copy of a gear's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages received.
    pub messages_in: u64,
    /// Messages emitted (or, for a sink, delivered).
    pub messages_out: u64,
    /// Messages that failed (sent to `error` or the dead-letter log).
    pub errors: u64,
    /// Messages written to the dead-letter log.
    pub dead_letters: u64,
    /// Times the gear was restarted after a failure.
    pub restarts: u64,
    /// Messages refused at ingress (a sink downstream was full under the
    /// `reject` policy); the sender was told to retry.
    pub rejected: u64,
}

impl GearStats {
    pub(crate) fn add_in(&self, n: u64) {
        self.messages_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: u64) {
        self.messages_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_error(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_dead_letter(&self, reason: DeadLetterReason) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        let i = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dead_letter_reasons[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_latency(&self, nanos: u64) {
        self.latency.record(nanos);
    }

    /// Counts a restart (the Rack's supervisor calls it).
    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message refused at ingress.
    pub fn add_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// I/O gears: counts wire bytes read.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// I/O gears: counts wire bytes written.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// I/O gears: a connection opened.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// I/O gears: a connection closed.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gears with a pending (overflow) buffer: its size now, in bytes.
    pub fn set_pending_bytes(&self, n: u64) {
        self.pending_bytes.store(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Everything, for telemetry.
    pub fn metrics(&self, name: &str, gear_type: &str) -> GearMetrics {
        let s = self.snapshot();
        GearMetrics {
            name: name.to_owned(),
            gear_type: gear_type.to_owned(),
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: s.errors,
            dead_letters: DeadLetterReason::ALL
                .iter()
                .zip(&self.dead_letter_reasons)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            restarts: s.restarts,
            rejected: s.rejected,
            connections: self.connections.load(Ordering::Relaxed),
            pending_bytes: self.pending_bytes.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}
