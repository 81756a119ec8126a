//! Rack throughput: `generate → map → discard` run by a real Rack, side by
//! side with the floor of this design on this machine — a bare chain of the
//! same number of tokio tasks and bounded channels (3 tasks, 2 channels of
//! the Rack's default capacity) forwarding messages and doing nothing else.
//!
//! `generate` gives every message a fresh fluxID, and one generator issues
//! at most 128,000 ids/s by design (ADR 0001: 8-bit sequence per 2 ms tick,
//! the layout ARCHITECTURE §4.2 fixes). To measure the Rack itself beyond
//! that cap, `bench_source` (defined here) plays the part of a source whose
//! messages already carry ids — as messages arriving from another Rack do —
//! and makes the same `{"seq": n}` messages without a generator.
//!
//! Each iteration runs a whole Rack (or chain) over [`MESSAGES`] messages
//! on a 2-worker multi-threaded runtime, like `fluxrig run`; the time is wall
//! time from start to the last message taken by the sink, so the Rack's
//! start-up and drain are included (a few milliseconds against ~1 s).
//!
//! `cargo bench -p fluxrig-bench --bench pipeline`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, Gear, GearError, GearIo, GearKind, GearType,
    PortSpec, Role, Typed,
};
use fluxrig_msg::{FluxId, FluxMsg, Map, Value};
use fluxrig_rack::{Rack, RackOptions};
use fluxrig_scenario::{DEFAULT_CAPACITY, Scenario};

/// Messages per iteration.
const MESSAGES: u64 = 200_000;

/// Config of `bench_source`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BenchSourceConfig {
    /// How many messages to make.
    count: u64,
}

/// A source of `{"seq": n}` messages with ids `1..=count` (no generator).
#[derive(Debug)]
struct BenchSource;

impl GearKind for BenchSource {
    type Config = BenchSourceConfig;
    const NAME: &'static str = "bench_source";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str = "Messages with preset ids, as fast as the wires take them";
    const DOCS: &'static str = "Benchmarks only.";
    const EXAMPLE: &'static str = "- name: source\n  type: bench_source\n  config: {count: 10}";

    fn ports(_config: &BenchSourceConfig) -> Vec<PortSpec> {
        vec![PortSpec::output()]
    }

    fn build(config: &BenchSourceConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(BenchSourceGear {
            count: config.count,
        }))
    }
}

struct BenchSourceGear {
    count: u64,
}

impl Gear for BenchSourceGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            for seq in 1..=self.count {
                io.send(seq_msg(seq)).await;
            }
            Ok(())
        })
    }
}

/// The message both the bare chain and `bench_source` make.
fn seq_msg(seq: u64) -> FluxMsg {
    let mut data = Map::with_capacity(1);
    data.insert("seq", seq);
    FluxMsg::new(FluxId::from_raw(seq), Value::Map(data))
}

static BENCH_SOURCE: Typed<BenchSource> = Typed::new();

fn registry(name: &str) -> Option<&'static dyn GearType> {
    if name == BenchSource::NAME {
        Some(&BENCH_SOURCE)
    } else {
        fluxrig_gears::find(name)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn scenario(source: &str, program: &str, data: &Path) -> Scenario {
    let text = format!(
        "meta: {{name: bench, version: 1.0.0}}
gears:
  - {{name: source, {source}}}
  - {{name: enrich, type: map, config: {{source: '{program}'}}}}
  - {{name: sink, type: discard}}
wires:
  - {{from: source.out, to: enrich.in}}
  - {{from: enrich.out, to: sink.in}}
"
    );
    let ctx = CheckContext {
        base_dir: data.to_path_buf(),
        data_dir: data.to_path_buf(),
    };
    Scenario::from_str(&text, Path::new("bench.yaml"), &registry, &ctx)
        .unwrap_or_else(|p| panic!("{p}"))
}

/// One whole run of the Rack; returns its wall time and checks that every
/// message reached the sink.
fn run_rack(rt: &tokio::runtime::Runtime, scenario: &Scenario, data: &Path) -> Duration {
    let opts = RackOptions {
        data_dir: data.to_path_buf(),
        ..RackOptions::default()
    };
    let start = Instant::now();
    let status = rt.block_on(async {
        let rack = Rack::build(scenario, opts).expect("rack builds");
        rack.run().await
    });
    let elapsed = start.elapsed();
    let sink = status.iter().find(|g| g.name == "sink").expect("sink");
    assert_eq!(
        sink.stats.messages_out, MESSAGES,
        "every message reaches the sink"
    );
    elapsed
}

/// Like [`run_rack`], with telemetry fully on: a collector renders the
/// Prometheus exposition every 10 ms (a hundred times a usual scrape rate)
/// and a tail takes a copy of every message `enrich` emits.
fn run_rack_observed(rt: &tokio::runtime::Runtime, scenario: &Scenario, data: &Path) -> Duration {
    let opts = RackOptions {
        data_dir: data.to_path_buf(),
        ..RackOptions::default()
    };
    let start = Instant::now();
    let (status, scrapes, tailed) = rt.block_on(async {
        let rack = Rack::build(scenario, opts).expect("rack builds");
        let handle = rack.handle();
        let run = tokio::spawn(rack.run());
        let observer = tokio::spawn(async move {
            let mut tail = loop {
                if let Ok(rx) = handle.tap("enrich", "out", 1024) {
                    break rx;
                }
                tokio::task::yield_now().await;
            };
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (mut scrapes, mut tailed) = (0u64, 0u64);
            loop {
                tokio::select! {
                    m = tail.recv() => match m {
                        Some(m) => { black_box(m); tailed += 1; }
                        None => break,
                    },
                    _ = tick.tick() => {
                        black_box(fluxrig_telemetry::prometheus::render(&handle.metrics()));
                        scrapes += 1;
                        if tailed >= MESSAGES { break; }
                    }
                }
            }
            (scrapes, tailed)
        });
        let status = run.await.expect("rack runs");
        let (scrapes, tailed) = tokio::time::timeout(Duration::from_millis(100), observer)
            .await
            .map_or((0, 0), |r| r.unwrap_or((0, 0)));
        (status, scrapes, tailed)
    });
    let elapsed = start.elapsed();
    let sink = status.iter().find(|g| g.name == "sink").expect("sink");
    assert_eq!(sink.stats.messages_out, MESSAGES);
    black_box((scrapes, tailed));
    elapsed
}

/// The floor: a source task making minimal messages, a forwarding task and
/// a counting sink task, joined by two bounded channels.
fn run_bare(rt: &tokio::runtime::Runtime) -> Duration {
    let start = Instant::now();
    let taken = rt.block_on(async {
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<FluxMsg>(DEFAULT_CAPACITY);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<FluxMsg>(DEFAULT_CAPACITY);
        let source = tokio::spawn(async move {
            for i in 1..=MESSAGES {
                if tx1.send(seq_msg(i)).await.is_err() {
                    break;
                }
            }
        });
        let forward = tokio::spawn(async move {
            while let Some(m) = rx1.recv().await {
                if tx2.send(m).await.is_err() {
                    break;
                }
            }
        });
        let sink = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(m) = rx2.recv().await {
                black_box(&m);
                n += 1;
            }
            n
        });
        let _ = source.await;
        let _ = forward.await;
        sink.await.unwrap_or(0)
    });
    let elapsed = start.elapsed();
    assert_eq!(taken, MESSAGES);
    elapsed
}

fn pipeline(c: &mut Criterion) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("fluxrig-bench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let generate = format!("type: generate, config: {{count: {MESSAGES}, interval: 0s}}");
    let preset = format!("type: bench_source, config: {{count: {MESSAGES}}}");
    let quickstart = ".double = int!(.seq) * 2";
    let cases = [
        (
            "rack_generate_map_discard",
            scenario(&generate, quickstart, &dir),
        ),
        (
            "rack_preset_ids_map_discard",
            scenario(&preset, quickstart, &dir),
        ),
        (
            "rack_preset_ids_passthrough_discard",
            scenario(&preset, ".", &dir),
        ),
    ];

    let mut g = c.benchmark_group("pipeline");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(MESSAGES));
    g.bench_function("bare_tokio_chain", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_bare(&rt)).sum());
    });
    for (name, scenario) in &cases {
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_rack(&rt, scenario, &dir)).sum());
        });
    }
    // Telemetry fully on, same scenarios as `rack_generate_map_discard`
    // (paced by the fluxID generator) and `rack_preset_ids_map_discard`
    // (not paced: the Rack flat out).
    for (name, i) in [
        ("rack_generate_map_discard_telemetry_on", 0),
        ("rack_preset_ids_map_discard_telemetry_on", 1),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_rack_observed(&rt, &cases[i].1, &dir))
                    .sum()
            });
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
