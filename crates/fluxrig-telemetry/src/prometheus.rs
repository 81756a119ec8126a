//! The Prometheus text exposition format (version 0.0.4) of a
//! [`RackSnapshot`].

use std::fmt::Write as _;

use crate::names::{
    GEAR_BYTES_IN, GEAR_BYTES_OUT, GEAR_CONNECTIONS, GEAR_DEAD_LETTERS, GEAR_ERRORS, GEAR_LATENCY,
    GEAR_MESSAGES_IN, GEAR_MESSAGES_OUT, GEAR_PENDING_BYTES, GEAR_REJECTED, GEAR_RESTARTS,
    PORT_MESSAGES_OUT, RACK_UPTIME, TELEMETRY_DROPPED, WAL_BATCH_RECORDS, WAL_BYTES, WAL_FSYNC,
    WAL_RECORDS, WIRE_CAPACITY, WIRE_DEPTH, WIRE_DROPPED,
};
use crate::{HistogramSnapshot, RackSnapshot};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders a snapshot in the Prometheus text format.
pub fn render(s: &RackSnapshot) -> String {
    let mut o = String::with_capacity(4096 + s.gears.len() * 2048);
    let gear = |o: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(usize) -> String| {
        header(o, name, kind, help);
        for (i, g) in s.gears.iter().enumerate() {
            let _ = writeln!(o, "{name}{{gear=\"{}\"}} {}", esc(&g.name), v(i));
        }
    };
    gear(
        &mut o,
        GEAR_MESSAGES_IN,
        "counter",
        "Messages a gear received.",
        &|i| s.gears[i].messages_in.to_string(),
    );
    gear(
        &mut o,
        GEAR_MESSAGES_OUT,
        "counter",
        "Messages a gear emitted (a sink: delivered).",
        &|i| s.gears[i].messages_out.to_string(),
    );
    gear(
        &mut o,
        GEAR_BYTES_IN,
        "counter",
        "Wire bytes a gear read.",
        &|i| s.gears[i].bytes_in.to_string(),
    );
    gear(
        &mut o,
        GEAR_BYTES_OUT,
        "counter",
        "Wire bytes a gear wrote.",
        &|i| s.gears[i].bytes_out.to_string(),
    );
    gear(
        &mut o,
        GEAR_ERRORS,
        "counter",
        "Messages a gear failed.",
        &|i| s.gears[i].errors.to_string(),
    );
    gear(
        &mut o,
        GEAR_RESTARTS,
        "counter",
        "Gear restarts after a failure.",
        &|i| s.gears[i].restarts.to_string(),
    );
    gear(
        &mut o,
        GEAR_REJECTED,
        "counter",
        "Messages refused at ingress because a destination downstream was full.",
        &|i| s.gears[i].rejected.to_string(),
    );
    gear(
        &mut o,
        GEAR_CONNECTIONS,
        "gauge",
        "Open connections of a gear.",
        &|i| s.gears[i].connections.to_string(),
    );
    gear(
        &mut o,
        GEAR_PENDING_BYTES,
        "gauge",
        "Bytes in a gear's pending buffer.",
        &|i| s.gears[i].pending_bytes.to_string(),
    );

    header(
        &mut o,
        GEAR_DEAD_LETTERS,
        "counter",
        "Messages sent to the dead-letter log, by reason class.",
    );
    for g in &s.gears {
        for (r, n) in &g.dead_letters {
            let _ = writeln!(
                o,
                "{GEAR_DEAD_LETTERS}{{gear=\"{}\",reason=\"{}\"}} {n}",
                esc(&g.name),
                r.as_str()
            );
        }
    }

    header(
        &mut o,
        GEAR_LATENCY,
        "histogram",
        "From the previous gear's emit to this gear's emit, seconds.",
    );
    for g in &s.gears {
        histogram(
            &mut o,
            GEAR_LATENCY,
            &format!("gear=\"{}\"", esc(&g.name)),
            &g.latency,
            1e9,
        );
    }

    header(
        &mut o,
        PORT_MESSAGES_OUT,
        "counter",
        "Messages a gear emitted on one output port.",
    );
    for p in &s.ports {
        let _ = writeln!(
            o,
            "{PORT_MESSAGES_OUT}{{gear=\"{}\",port=\"{}\"}} {}",
            esc(&p.gear),
            esc(&p.port),
            p.messages_out
        );
    }

    for (name, kind, help, f) in [
        (
            WIRE_DEPTH,
            "gauge",
            "Messages waiting in a wire's lane.",
            (|w: &crate::WireMetrics| w.depth) as fn(&crate::WireMetrics) -> u64,
        ),
        (WIRE_CAPACITY, "gauge", "A wire's lane capacity.", |w| {
            w.capacity
        }),
        (
            WIRE_DROPPED,
            "counter",
            "Messages dropped by a full drop_newest wire.",
            |w| w.dropped,
        ),
    ] {
        header(&mut o, name, kind, help);
        for w in &s.wires {
            let _ = writeln!(o, "{name}{{wire=\"{}\"}} {}", esc(&w.wire), f(w));
        }
    }

    header(
        &mut o,
        WAL_RECORDS,
        "counter",
        "Records appended to the write-ahead log.",
    );
    let _ = writeln!(o, "{WAL_RECORDS} {}", s.wal.records);
    header(
        &mut o,
        WAL_BYTES,
        "counter",
        "Bytes appended to the write-ahead log.",
    );
    let _ = writeln!(o, "{WAL_BYTES} {}", s.wal.bytes);
    header(
        &mut o,
        WAL_FSYNC,
        "histogram",
        "Duration of each write-ahead log fdatasync, seconds.",
    );
    histogram(&mut o, WAL_FSYNC, "", &s.wal.fsync, 1e9);
    header(
        &mut o,
        WAL_BATCH_RECORDS,
        "histogram",
        "Records per group-commit batch.",
    );
    histogram(&mut o, WAL_BATCH_RECORDS, "", &s.wal.batch_records, 1.0);

    header(
        &mut o,
        TELEMETRY_DROPPED,
        "counter",
        "Telemetry items dropped because a bounded buffer was full.",
    );
    for (what, n) in &s.telemetry_dropped {
        let _ = writeln!(o, "{TELEMETRY_DROPPED}{{what=\"{}\"}} {n}", esc(what));
    }
    header(
        &mut o,
        RACK_UPTIME,
        "gauge",
        "Seconds since the Rack started.",
    );
    let _ = writeln!(o, "{RACK_UPTIME} {}", s.uptime_seconds);
    o
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let base = name.strip_suffix("_total").unwrap_or(name);
    let _ = writeln!(o, "# HELP {base} {help}");
    let _ = writeln!(o, "# TYPE {base} {kind}");
}

/// Writes `_bucket` (cumulative, `le` divided by `div`), `_sum`, `_count`.
fn histogram(o: &mut String, name: &str, labels: &str, h: &HistogramSnapshot, div: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        cum += c;
        let le = match h.bounds.get(i) {
            #[allow(clippy::cast_precision_loss)]
            Some(b) => format!("{}", *b as f64 / div),
            None => "+Inf".to_owned(),
        };
        let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    #[allow(clippy::cast_precision_loss)]
    let sum = h.sum as f64 / div;
    let _ = writeln!(o, "{name}_sum{braces} {sum}");
    // `_count` is the buckets' total so the exposition is self-consistent
    // even when writers raced the snapshot.
    let _ = writeln!(o, "{name}_count{braces} {cum}");
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GearMetrics, Histogram};

    #[test]
    fn renders_counters_and_histograms() {
        let h = Histogram::latency();
        h.record(1_500);
        let s = RackSnapshot {
            rack: "r".into(),
            gears: vec![GearMetrics {
                name: "a\"b".into(),
                messages_in: 7,
                latency: h.snapshot(),
                ..GearMetrics::default()
            }],
            wal: crate::WalMetrics {
                fsync: Histogram::latency().snapshot(),
                ..Default::default()
            },
            ..RackSnapshot::default()
        };
        let t = render(&s);
        assert!(
            t.contains("fluxrig_gear_messages_in_total{gear=\"a\\\"b\"} 7\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE fluxrig_gear_messages_in counter\n"));
        assert!(
            t.contains("fluxrig_gear_latency_seconds_bucket{gear=\"a\\\"b\",le=\"0.000002\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("fluxrig_gear_latency_seconds_bucket{gear=\"a\\\"b\",le=\"+Inf\"} 1\n"));
        assert!(t.contains("fluxrig_wal_fsync_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(t.contains("fluxrig_wal_fsync_seconds_count 0\n"));
    }
}
