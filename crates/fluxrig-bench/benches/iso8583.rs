//! ISO 8583 codec: decode + encode of a typical 0100 authorization request
//! (25 elements, test PAN), with the bundled 1987 dialects.
//!
//! `cargo bench -p fluxrig-bench --bench iso8583`
//!
//! Besides criterion's timings this bench prints the heap allocations per
//! decode + encode, counted by a global allocator wrapper (the target is at
//! most 2; the hot path makes none). pyiso8583 on the same message, for
//! context: `tests/python/pyiso8583_bench.py`.

#![allow(unsafe_code)] // the counting allocator below; nothing else

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluxrig_iso8583::{MessageBuilder, Spec, bundled, encode_value, to_value};

/// Counts allocations (and reallocations) made through the global allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A typical 0100: 25 elements, Luhn-valid test PAN and track 2.
fn typical_0100(spec: &Spec) -> Vec<u8> {
    let mut b = MessageBuilder::new();
    b.set_mti("0100")
        .set(2, "4111111111111111")
        .set(3, "000000")
        .set(4, "000000012500")
        .set(7, "1127101530")
        .set(11, "004711")
        .set(12, "101530")
        .set(13, "1127")
        .set(14, "2812")
        .set(18, "5411")
        .set(19, "250")
        .set(22, "051")
        .set(23, "001")
        .set(25, "00")
        .set(32, "12345678")
        .set(35, "4111111111111111=28122011234500000")
        .set(37, "733110004711")
        .set(41, "TERM0001")
        .set(42, "MERCHANT0000001")
        .set(43, "FLUXRIG TEST SHOP        PARIS        FR")
        .set(48, "0021A1B2C3POS-TEST-DATA")
        .set(49, "978")
        .set(52, "0123456789ABCDEF")
        .set(55, "9F02060000000125009F03060000000000009F1A020250")
        .set(60, "FLUXRIG-BENCH")
        .set(62, "CUSTOM-PRIVATE-DATA-0001");
    spec.encode_to_vec(&b).expect("the fixture encodes")
}

#[allow(clippy::cast_precision_loss)] // a displayed ratio
fn allocations_per_message(spec: &Spec, wire: &[u8]) -> f64 {
    let mut out = Vec::with_capacity(1024);
    let n = 100_000_u32;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        out.clear();
        let m = spec.decode(black_box(wire)).expect("decodes");
        spec.encode(&m.to_builder(), &mut out).expect("encodes");
        black_box(out.len());
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / f64::from(n)
}

fn codec(c: &mut Criterion) {
    for name in ["iso8583-1987-ascii", "iso8583-1987-binary"] {
        let spec = bundled::bundled(name).expect("bundled").expect("loads");
        let wire = typical_0100(spec);
        let mut g = c.benchmark_group(format!("iso8583/{name}"));
        g.throughput(Throughput::Elements(1));
        let mut out = Vec::with_capacity(1024);
        g.bench_function("decode+encode", |b| {
            b.iter(|| {
                out.clear();
                let m = spec.decode(black_box(&wire)).expect("decodes");
                spec.encode(&m.to_builder(), &mut out).expect("encodes");
                black_box(out.len())
            });
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                spec.decode(black_box(&wire))
                    .expect("decodes")
                    .numbers()
                    .count()
            });
        });
        let decoded = spec.decode(&wire).expect("decodes");
        let texts: Vec<(u8, String)> = decoded
            .fields()
            .map(|f| (f.number(), f.text().into_owned()))
            .collect();
        g.bench_function("encode_from_text", |b| {
            b.iter(|| {
                let mut m = MessageBuilder::new();
                m.set_mti("0100");
                for (n, t) in &texts {
                    m.set(*n, t);
                }
                out.clear();
                spec.encode(black_box(&m), &mut out).expect("encodes");
                black_box(out.len())
            });
        });
        g.bench_function("decode+to_value+encode_value", |b| {
            b.iter(|| {
                let v = to_value(&spec.decode(black_box(&wire)).expect("decodes"));
                out.clear();
                encode_value(spec, &v, &mut out).expect("encodes");
                black_box(out.len())
            });
        });
        // The two halves of the data-tree path, apart.
        g.bench_function("to_value", |b| {
            b.iter(|| to_value(&decoded));
        });
        let tree = to_value(&decoded);
        g.bench_function("encode_value", |b| {
            b.iter(|| {
                out.clear();
                encode_value(spec, black_box(&tree), &mut out).expect("encodes");
                black_box(out.len())
            });
        });
        g.finish();
        let per = allocations_per_message(spec, &wire);
        println!(
            "iso8583/{name}: {} bytes, {per:.2} heap allocations per decode+encode",
            wire.len()
        );
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
