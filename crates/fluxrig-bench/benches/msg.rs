//! fluxMsg encode and decode on a typical payment message, with the plain
//! minicbor encoder as the baseline (see `fluxrig_bench::plain`).
//!
//! Times are the thread's CPU time ([`ThreadCpuTime`]): this machine is
//! shared, and wall time mostly measures the wait for a CPU.
//!
//! `cargo bench -p fluxrig-bench --bench msg`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fluxrig_bench::ThreadCpuTime;
use fluxrig_bench::{payment_fields, plain, typical_payment_msg};
use fluxrig_msg::{FluxMsg, Limits, Map, Value, cbor};

fn encode(c: &mut Criterion<ThreadCpuTime>) {
    let msg = typical_payment_msg();
    let len = msg.to_cbor().len() as u64;
    let mut g = c.benchmark_group("msg/encode");
    g.throughput(Throughput::Bytes(len));
    let mut buf = Vec::with_capacity(1024);
    // The hot-path form: one buffer reused across messages.
    g.bench_function("deterministic", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode(&mut buf);
            black_box(buf.len())
        });
    });
    g.bench_function("plain_minicbor", |b| {
        b.iter(|| {
            buf.clear();
            plain::encode_msg(black_box(&msg), &mut buf);
            black_box(buf.len())
        });
    });
    // `to_cbor` allocates its output each time.
    g.bench_function("to_cbor", |b| b.iter(|| black_box(&msg).to_cbor()));
    g.finish();

    // The `data` tree alone: where a message's encoding time goes.
    let data = &msg.data;
    let mut g = c.benchmark_group("msg/encode_data");
    g.bench_function("deterministic", |b| {
        b.iter(|| {
            buf.clear();
            cbor::encode_value(black_box(data), &mut buf);
            black_box(buf.len())
        });
    });
    g.bench_function("plain_minicbor", |b| {
        b.iter(|| {
            buf.clear();
            plain::encode_value(black_box(data), &mut buf);
            black_box(buf.len())
        });
    });
    g.finish();
}

fn decode(c: &mut Criterion<ThreadCpuTime>) {
    let msg = typical_payment_msg();
    let bytes = msg.to_cbor();
    let shared = Bytes::from(bytes.clone());
    let mut g = c.benchmark_group("msg/decode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("from_cbor", |b| {
        b.iter(|| FluxMsg::from_cbor(black_box(&bytes)));
    });
    // Zero-copy: `raw` shares the input buffer instead of being copied.
    g.bench_function("from_bytes", |b| {
        b.iter(|| FluxMsg::from_bytes(black_box(&shared), Limits::DEFAULT));
    });
    g.bench_function("is_deterministic", |b| {
        b.iter(|| FluxMsg::is_deterministic(black_box(&bytes)));
    });
    g.finish();
}

/// The other half of determinism's cost: `Map` keeps entries sorted as they
/// are inserted, so the encoder never sorts. This builds the payment's
/// `data` map from its fields in ISO 8583 field order (what a decoder of the
/// wire message produces) into a `Map`, and for comparison into a plain
/// `Vec` kept in insertion order.
fn build(c: &mut Criterion<ThreadCpuTime>) {
    let fields = payment_fields();
    let mut g = c.benchmark_group("msg/build_data");
    g.bench_function("sorted_map", |b| {
        b.iter_batched(
            || fields.clone(),
            |fields| {
                let mut m = Map::with_capacity(fields.len());
                for (k, v) in fields {
                    m.insert(k, v);
                }
                m
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("vec_insertion_order", |b| {
        b.iter_batched(
            || fields.clone(),
            |fields| {
                let mut e = Vec::with_capacity(fields.len());
                for (k, v) in fields {
                    e.push((Value::text(k), v));
                }
                e
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = encode, decode, build
}
criterion_main!(benches);
