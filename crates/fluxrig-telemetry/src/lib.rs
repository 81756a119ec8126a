//! Telemetry of a Rack, collected off the hot path.
//!
//! The hot path only touches relaxed atomics: counters and fixed-bucket
//! [`Histogram`]s owned by each gear, wire and the write-ahead log. Nothing
//! there allocates, locks or blocks. A collector (the `/metrics` endpoint,
//! `fluxrig top`, an exporter) reads them into a [`RackSnapshot`] when it
//! wants to, and renders it — for Prometheus with [`prometheus::render`].
//!
//! Every metric name is a constant in [`names`]; every label has bounded
//! cardinality (gear names, wire labels, reason classes — never a message
//! id or a value). `docs/telemetry.md` lists them all.

mod histogram;
pub mod names;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prometheus;
mod snapshot;
mod trace;

pub use histogram::{BATCH_BOUNDS, Histogram, HistogramSnapshot, LATENCY_BOUNDS_NS};
pub use snapshot::{
    DeadLetterReason, GearMetrics, PortMetrics, RackSnapshot, WalMetrics, WireMetrics,
};
pub use trace::{SAMPLED, Sampling, SpanQueue, SpanRecord, Tracer};
