//! fluxID generation: the cost of one id below capacity, and the sustained
//! rate of one thread asking for ids flat out (the designed capacity is
//! 128,000 ids/s: 256 ids per 2 ms tick, ADR 0001).
//!
//! The cost per id is the thread's CPU time ([`ThreadCpuTime`]: the machine
//! is shared); the sustained rate is wall time, since at capacity the
//! generator waits for the clock on purpose.
//!
//! `cargo bench -p fluxrig-bench --bench id`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fluxrig_bench::{ThreadCpuTime, thread_cpu_time};
use fluxrig_msg::IdGenerator;
use fluxrig_msg::id::{Clock, EPOCH_UNIX_MS, SystemClock};

/// Ids taken from one generator before a fresh one replaces it: below the
/// 513 × 256 = 131,328 ids a generator may hand out ahead of its clock, so
/// no call ever waits.
const CHUNK: u64 = 100_000;

/// A clock that never moves: the generator's own work without a clock read.
struct FixedClock(u64);

impl Clock for FixedClock {
    fn now_unix_ms(&self) -> u64 {
        self.0
    }
}

/// CPU time of `iters` calls of `next()`, on fresh generators made by `make`
/// every [`CHUNK`] calls (outside the timed region).
fn time_below_capacity<C: Clock>(iters: u64, make: impl Fn() -> IdGenerator<C>) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let generator = make();
        let start = thread_cpu_time();
        for _ in 0..n {
            let _ = black_box(generator.next());
        }
        total += thread_cpu_time().saturating_sub(start);
        left -= n;
    }
    total
}

/// Below capacity a call never waits: it reads the clock and advances the
/// counter with one compare-and-swap. The only rate-dependent behaviour of
/// the generator is the wait at the borrowing limit, which a fresh generator
/// every 100,000 calls never reaches, so every timed call takes the path it
/// takes at any rate below 128,000 ids/s.
fn below_capacity(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("id/next");
    g.bench_function("system_clock", |b| {
        b.iter_custom(|iters| time_below_capacity(iters, || IdGenerator::new(1)));
    });
    g.bench_function("fixed_clock", |b| {
        b.iter_custom(|iters| {
            time_below_capacity(iters, || {
                IdGenerator::with_clock(1, FixedClock(EPOCH_UNIX_MS + 86_400_000))
            })
        });
    });
    g.finish();

    let clock = SystemClock::new();
    c.bench_function("id/clock/system", |b| {
        b.iter(|| black_box(&clock).now_unix_ms());
    });
}

/// One thread calling `next()` flat out on the system clock. The warm-up
/// (3 s) uses up the ~1 s of ids the generator may borrow ahead of the
/// clock, so the measurement (10 samples of about a second each) sees the
/// steady state, where the clock alone sets the pace. The throughput line
/// is the sustained rate.
fn at_capacity(c: &mut Criterion) {
    let generator = IdGenerator::new(2);
    let mut g = c.benchmark_group("id/at_capacity");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(1));
    g.bench_function("next", |b| b.iter(|| generator.next()));
    g.finish();
}

criterion_group! {
    name = cost;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = below_capacity
}
criterion_group!(rate, at_capacity);
criterion_main!(cost, rate);
