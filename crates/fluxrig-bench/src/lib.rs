//! Shared fixtures and baselines for fluxrig's benchmarks.
//!
//! Each area has one file in `benches/` (`msg.rs`, `id.rs`, …); what more
//! than one bench needs (a typical message, a baseline encoder) lives here so
//! benches measure the same things. `make bench` runs them all; results go to
//! `docs/BENCHMARKS.md`.

pub mod plain;

use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use fluxrig_msg::{EntityId, EntityType, Flags, FluxId, FluxMsg, Hop, Map, TraceContext, Value};

/// A typical payment message: an ISO 8583 0100 authorization request as it
/// looks after decoding.
///
/// 26 data fields (text and integers, one nested map for the card acceptor,
/// one boolean), a 200-byte `raw`, 3 hops in `path`, 4 `meta` entries, a
/// trace context, `ref`, `src`, `flags` and `ts`. No floats: amounts are
/// integers in minor units, as ISO 8583 carries them. The PAN is a coat-check
/// token (the `PARKED` flag is set), never card data.
pub fn typical_payment_msg() -> FluxMsg {
    let data: Map = payment_fields().into_iter().collect();
    let mut msg = FluxMsg::new(id(1_000), Value::Map(data));
    msg.reference = Some(id(990));
    msg.src = EntityId::new(EntityType::Gear, 7, 3);
    msg.ts = 1_795_000_000_123_456_789;
    msg.flags = Flags::PARKED;
    msg.trace = Some(TraceContext {
        trace_id: *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36",
        span_id: *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7",
        flags: 1,
    });
    msg.raw = Some(raw_0100());
    msg.meta.insert("conn", "term-0042:51234");
    msg.meta.insert("proto", "iso8583");
    msg.meta.insert("spec", "base1-2026");
    msg.meta.insert("lane", "auth");
    for (seq, port, ts) in [
        (1, "out", 1_795_000_000_123_500_000_u64),
        (2, "auth", 1_795_000_000_123_560_000),
        (3, "ok", 1_795_000_000_123_610_000),
    ] {
        msg.path.push(Hop {
            gear: EntityId::new(EntityType::Gear, 7, seq).unwrap_or_default(),
            port: port.into(),
            ts,
        });
    }
    msg
}

/// The `data` fields of [`typical_payment_msg`], in ISO 8583 field-number
/// order (the order a decoder of the wire message produces them).
pub fn payment_fields() -> Vec<(&'static str, Value)> {
    let acceptor: Map = [
        ("name", Value::from("ACME GROCERY 42")),
        ("city", Value::from("LYON")),
        ("country", Value::from("FR")),
    ]
    .into_iter()
    .collect();
    vec![
        ("mti", Value::from("0100")),
        ("pan_token", Value::from("4111119274630012")),
        ("processing_code", Value::from("000000")),
        ("amount", Value::from(12_550_u64)),
        ("amount_billing", Value::from(12_550_u64)),
        ("transmission_time", Value::from("1127143015")),
        ("stan", Value::from(4521_u64)),
        ("local_time", Value::from("143015")),
        ("local_date", Value::from("1127")),
        ("expiry", Value::from("2812")),
        ("settlement_date", Value::from("1128")),
        ("merchant_type", Value::from(5411_u64)),
        ("country_code", Value::from(250_u64)),
        ("pos_entry_mode", Value::from("051")),
        ("card_sequence", Value::from(1_u64)),
        ("pos_condition_code", Value::from("00")),
        ("acquirer_id", Value::from("412345")),
        ("forwarding_id", Value::from("400050")),
        ("rrn", Value::from("633114521000")),
        ("terminal_id", Value::from("TERM0042")),
        ("merchant_id", Value::from("MERCHANT0000042")),
        ("card_acceptor", Value::Map(acceptor)),
        ("currency", Value::from(978_u64)),
        ("currency_billing", Value::from(978_u64)),
        ("pos_data", Value::from("A12101654140")),
        ("chip_present", Value::from(true)),
    ]
}

fn id(tick: u64) -> FluxId {
    FluxId::from_parts(tick, 17, 7).unwrap_or_default()
}

/// 200 bytes shaped like an ASCII ISO 8583 0100 on the wire: length prefix,
/// MTI, bitmap, fields.
fn raw_0100() -> Bytes {
    let mut raw = b"\x00\xc60100\x72\x3c\x44\x81\x28\xe0\x98\x0016".to_vec();
    raw.extend_from_slice(b"4111119274630012000000000000012550112714301500452114301511272812");
    while raw.len() < 200 {
        raw.extend_from_slice(b"5411051001412345633114521000TERM0042MERCHANT0000042");
    }
    raw.truncate(200);
    Bytes::from(raw)
}

/// Criterion measurement of the benchmark thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`) instead of wall time.
///
/// On a machine shared with builds and tests, a benchmark thread spends
/// much of its wall time waiting for a CPU, and wall-clock samples vary by
/// 2× between runs. CPU time leaves the waiting out (not the cache misses
/// other processes cause). On an idle machine the two agree. Benchmarks that
/// wait on purpose (a rate limit, I/O) must use wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpuTime;

/// Wall time's formatter also formats CPU time (both are durations).
static WALL: WallTime = WallTime;

/// The calling thread's CPU time so far.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_secs_f64() * 1e9
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

/// Number of entries in the top level of a message's `data` map.
pub fn data_fields(msg: &FluxMsg) -> usize {
    msg.data.as_map().map_or(0, Map::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_message_has_the_advertised_shape() {
        let m = typical_payment_msg();
        assert_eq!(data_fields(&m), 26);
        assert_eq!(m.raw.as_ref().map(Bytes::len), Some(200));
        assert_eq!(m.path.len(), 3);
        assert_eq!(m.meta.len(), 4);
        assert!(m.trace.is_some());
    }

    #[test]
    fn typical_message_round_trips_deterministically() {
        let m = typical_payment_msg();
        let bytes = m.to_cbor();
        assert!(FluxMsg::is_deterministic(&bytes));
        assert_eq!(FluxMsg::from_cbor(&bytes).unwrap(), m);
    }
}
