//! A Rack's metrics at one moment: what collectors read and render.

use serde::{Deserialize, Serialize};

use crate::HistogramSnapshot;

/// Why a message went to the dead-letter log (a bounded label: the
/// free-text reason, which may name values, never becomes a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The gear failed the message and has no wired `error` port.
    Failed,
    /// The port it was emitted on is not wired (or the gear has no `out`).
    Unwired,
    /// The wire's receiving gear is gone.
    WireClosed,
    /// The write-ahead log refused to record it.
    NotRecorded,
}

impl DeadLetterReason {
    /// Every reason, in label order.
    pub const ALL: [DeadLetterReason; 4] = [
        DeadLetterReason::Failed,
        DeadLetterReason::Unwired,
        DeadLetterReason::WireClosed,
        DeadLetterReason::NotRecorded,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Failed => "failed",
            DeadLetterReason::Unwired => "unwired",
            DeadLetterReason::WireClosed => "wire_closed",
            DeadLetterReason::NotRecorded => "not_recorded",
        }
    }
}

/// One gear's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GearMetrics {
    /// The gear's name in the scenario.
    pub name: String,
    /// The gear's type.
    pub gear_type: String,
    /// Messages received.
    pub messages_in: u64,
    /// Messages emitted (a sink: delivered).
    pub messages_out: u64,
    /// Wire bytes read (I/O gears).
    pub bytes_in: u64,
    /// Wire bytes written (I/O gears).
    pub bytes_out: u64,
    /// Messages failed.
    pub errors: u64,
    /// Dead letters by reason (reasons with a zero count included).
    pub dead_letters: Vec<(DeadLetterReason, u64)>,
    /// Restarts after a failure.
    pub restarts: u64,
    /// Messages refused at ingress (a destination downstream was full
    /// under `pending.when_full: reject`).
    pub rejected: u64,
    /// Open connections (I/O gears).
    pub connections: i64,
    /// Bytes in the pending (overflow) buffer.
    pub pending_bytes: u64,
    /// Hop latency, nanoseconds.
    pub latency: HistogramSnapshot,
}

/// One output port of a gear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMetrics {
    /// The gear's name in the scenario.
    pub gear: String,
    /// The port's name.
    pub port: String,
    /// Messages emitted on the port (to `error` as well as `out`).
    pub messages_out: u64,
}

/// One wire's lane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMetrics {
    /// `gear.port -> gear.port`.
    pub wire: String,
    /// Messages waiting.
    pub depth: u64,
    /// Capacity.
    pub capacity: u64,
    /// Dropped because full (`drop_newest` wires).
    pub dropped: u64,
}

/// The write-ahead log's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMetrics {
    /// Records appended.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// Batches written (group commits).
    pub batches: u64,
    /// `fdatasync` durations, nanoseconds.
    pub fsync: HistogramSnapshot,
    /// Records per batch.
    pub batch_records: HistogramSnapshot,
}

/// A Rack's metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RackSnapshot {
    /// The Rack's scenario name.
    pub rack: String,
    /// Seconds since the Rack started.
    pub uptime_seconds: f64,
    /// Every gear, in scenario order.
    pub gears: Vec<GearMetrics>,
    /// Every output port of every gear.
    #[serde(default)]
    pub ports: Vec<PortMetrics>,
    /// Every wire.
    pub wires: Vec<WireMetrics>,
    /// The write-ahead log.
    pub wal: WalMetrics,
    /// Telemetry items dropped because a bounded buffer was full, by what
    /// (`tail`, `spans`).
    pub telemetry_dropped: Vec<(String, u64)>,
}
