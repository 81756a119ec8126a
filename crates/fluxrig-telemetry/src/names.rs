//! Every metric name, in one place (docs/telemetry.md lists them with
//! their labels). Names are Prometheus names; counters end in `_total`,
//! durations are in seconds.

/// Counter `{gear}`: messages a gear received.
pub const GEAR_MESSAGES_IN: &str = "fluxrig_gear_messages_in_total";
/// Counter `{gear}`: messages a gear emitted (a sink: delivered).
pub const GEAR_MESSAGES_OUT: &str = "fluxrig_gear_messages_out_total";
/// Counter `{gear}`: wire bytes a gear read (I/O gears).
pub const GEAR_BYTES_IN: &str = "fluxrig_gear_bytes_in_total";
/// Counter `{gear}`: wire bytes a gear wrote (I/O gears).
pub const GEAR_BYTES_OUT: &str = "fluxrig_gear_bytes_out_total";
/// Counter `{gear}`: messages a gear failed (to its `error` port or the
/// dead-letter log).
pub const GEAR_ERRORS: &str = "fluxrig_gear_errors_total";
/// Counter `{gear, reason}`: messages written to the dead-letter log, by
/// reason class ([`crate::DeadLetterReason`]).
pub const GEAR_DEAD_LETTERS: &str = "fluxrig_gear_dead_letters_total";
/// Counter `{gear}`: restarts after a failure.
pub const GEAR_RESTARTS: &str = "fluxrig_gear_restarts_total";
/// Counter `{gear}`: messages refused at ingress (a destination full under
/// `pending.when_full: reject`).
pub const GEAR_REJECTED: &str = "fluxrig_gear_rejected_total";
/// Histogram `{gear}`: from the previous gear's emit to this gear's emit
/// (time in the input lane plus processing), seconds.
pub const GEAR_LATENCY: &str = "fluxrig_gear_latency_seconds";
/// Gauge `{gear}`: open connections (I/O gears).
pub const GEAR_CONNECTIONS: &str = "fluxrig_gear_connections";
/// Gauge `{gear}`: bytes held in the gear's pending (overflow) buffer.
pub const GEAR_PENDING_BYTES: &str = "fluxrig_gear_pending_bytes";
/// Counter `{gear, port}`: messages a gear emitted on one output port.
pub const PORT_MESSAGES_OUT: &str = "fluxrig_port_messages_out_total";
/// Gauge `{wire}`: messages waiting in a wire's lane.
pub const WIRE_DEPTH: &str = "fluxrig_wire_depth";
/// Gauge `{wire}`: a wire's lane capacity.
pub const WIRE_CAPACITY: &str = "fluxrig_wire_capacity";
/// Counter `{wire}`: messages dropped by a full `drop_newest` wire.
pub const WIRE_DROPPED: &str = "fluxrig_wire_dropped_total";
/// Counter: records appended to the write-ahead log.
pub const WAL_RECORDS: &str = "fluxrig_wal_records_total";
/// Counter: bytes appended to the write-ahead log.
pub const WAL_BYTES: &str = "fluxrig_wal_bytes_total";
/// Histogram: duration of each WAL `fdatasync`, seconds.
pub const WAL_FSYNC: &str = "fluxrig_wal_fsync_seconds";
/// Histogram: records per group-commit batch.
pub const WAL_BATCH_RECORDS: &str = "fluxrig_wal_batch_records";
/// Counter `{what}`: telemetry items dropped because a bounded buffer was
/// full (`tail`: messages for `fluxrig tail`; `spans`: trace spans).
pub const TELEMETRY_DROPPED: &str = "fluxrig_telemetry_dropped_total";
/// Gauge: seconds since the Rack started.
pub const RACK_UPTIME: &str = "fluxrig_rack_uptime_seconds";

/// Span attribute: the gear's name in the scenario (also the span's name).
pub const ATTR_GEAR: &str = "fluxrig.gear";
/// Span attribute: the gear's type.
pub const ATTR_GEAR_TYPE: &str = "fluxrig.gear.type";
/// Span attribute: the output port the message left on (absent for a
/// sink's delivery).
pub const ATTR_PORT: &str = "fluxrig.port";
/// Span attribute: the message's fluxID (decimal).
pub const ATTR_MSG_ID: &str = "fluxrig.msg.id";
