//! Per-gear counters, updated on the hot path with relaxed atomics and read
//! by the live status, the exit summary and telemetry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one gear.
#[derive(Debug, Default)]
pub struct GearStats {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    errors: AtomicU64,
    dead_letters: AtomicU64,
    restarts: AtomicU64,
    rejected: AtomicU64,
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

    pub(crate) fn add_dead_letter(&self) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a restart (the Rack's supervisor calls it).
    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message refused at ingress.
    pub fn add_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
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
}
