//! How a WAL is configured.

use std::fmt;
use std::time::Duration;

use crate::format::{FORMAT_MAX_BODY, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When appended records are made durable (`fdatasync`), and so when an
/// append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every append is acknowledged only once its record is synced. Appends
    /// that arrive while a sync is running share the next one (group
    /// commit). Nothing acknowledged is lost, even on power loss. A sync
    /// starts when someone awaits an append; records nobody awaits are
    /// synced with it, or within [`WalOptions::lazy_sync`].
    #[default]
    Always,
    /// Appends are acknowledged once written to the operating system; the
    /// log is synced at most this long after a write. A process crash loses
    /// nothing; power loss may lose the last interval.
    Interval(Duration),
    /// Appends are acknowledged once written to the operating system; the
    /// log is synced only at segment rotation, [`crate::Wal::sync`] and
    /// close. For throw-away data.
    None,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Interval(d) => write!(f, "interval({d:?})"),
            SyncPolicy::None => f.write_str("none"),
        }
    }
}

/// Options of [`crate::Wal::open`]. Start from `WalOptions::default()` and
/// adjust with the builder methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalOptions {
    /// The sync policy (default [`SyncPolicy::Always`]).
    pub sync: SyncPolicy,
    /// A segment is closed and a new one started once it holds this many
    /// bytes (default 64 MiB). A segment may exceed it by one batch.
    pub segment_size: u64,
    /// The largest record body accepted, in bytes (default 4 MiB, the
    /// fluxMsg decoder's default limit).
    pub max_record_size: u32,
    /// Bytes of framed records that may wait for the writer (default
    /// 32 MiB). Appenders wait for room beyond it: back-pressure, not
    /// memory growth. At least one maximal record must fit.
    pub queue_capacity: usize,
    /// Under [`SyncPolicy::Always`]: how long records nobody awaits may stay
    /// unsynced (default 10 ms). A sync starts as soon as someone awaits a
    /// record's [`Pending`](crate::Pending) (or calls
    /// [`Pending::expedite`](crate::Pending::expedite)); records appended
    /// and never awaited — a source that does not acknowledge, a sink's
    /// delivery notes — share the next such sync, or get one of their own
    /// after this long. Without it every write would be synced at once
    /// even when no one is told about it, which costs a sync's CPU and disk
    /// time per batch.
    pub lazy_sync: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync: SyncPolicy::Always,
            segment_size: 64 << 20,
            max_record_size: 4 << 20,
            queue_capacity: 32 << 20,
            lazy_sync: Duration::from_millis(10),
        }
    }
}

impl WalOptions {
    /// Sets the sync policy.
    #[must_use]
    pub fn sync(mut self, policy: SyncPolicy) -> WalOptions {
        self.sync = policy;
        self
    }

    /// Sets the segment size at which segments rotate.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> WalOptions {
        self.segment_size = bytes;
        self
    }

    /// Sets the largest accepted record body.
    #[must_use]
    pub fn max_record_size(mut self, bytes: u32) -> WalOptions {
        self.max_record_size = bytes;
        self
    }

    /// Sets the append queue's capacity in bytes.
    #[must_use]
    pub fn queue_capacity(mut self, bytes: usize) -> WalOptions {
        self.queue_capacity = bytes;
        self
    }

    /// Sets how long records nobody awaits may stay unsynced under
    /// `always`.
    #[must_use]
    pub fn lazy_sync(mut self, within: Duration) -> WalOptions {
        self.lazy_sync = within;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_record_size > FORMAT_MAX_BODY {
            return Err(format!(
                "max_record_size {} exceeds the format's limit of {FORMAT_MAX_BODY}",
                self.max_record_size
            ));
        }
        let frame = RECORD_HEADER_LEN + self.max_record_size as usize;
        if self.queue_capacity < frame {
            return Err(format!(
                "queue_capacity {} cannot hold one maximal record ({frame} bytes framed)",
                self.queue_capacity
            ));
        }
        if self.queue_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(format!(
                "queue_capacity {} is too large",
                self.queue_capacity
            ));
        }
        if self.segment_size <= SEGMENT_HEADER_LEN as u64 {
            return Err(format!(
                "segment_size {} leaves no room after the {SEGMENT_HEADER_LEN}-byte header",
                self.segment_size
            ));
        }
        if let SyncPolicy::Interval(d) = self.sync
            && d.is_zero()
        {
            return Err("sync interval of zero: use SyncPolicy::Always".into());
        }
        Ok(())
    }
}
