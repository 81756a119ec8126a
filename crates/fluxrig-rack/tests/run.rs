//! The Rack end to end: real gears, real lanes, real files.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, Gear, GearError, GearIo, GearKind, GearType,
    Role, Typed,
};
use fluxrig_rack::{Rack, RackOptions};
use fluxrig_scenario::Scenario;
use schemars::JsonSchema;
use serde::Deserialize;

/// A test gear that panics on every `panic_every`-th message it sees the
/// first time round (then lets it through), to exercise supervision.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FlakyConfig {
    panic_every: u64,
}

static SEEN: AtomicU64 = AtomicU64::new(0);

struct Flaky;

impl GearKind for Flaky {
    type Config = FlakyConfig;
    const NAME: &'static str = "flaky";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str = "test gear";
    const DOCS: &'static str = "";
    const EXAMPLE: &'static str = "";
    fn build(c: &FlakyConfig, _: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(FlakyGear(c.panic_every)))
    }
}

struct FlakyGear(u64);

impl Gear for FlakyGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            while let Some(m) = io.recv().await {
                let n = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(
                    !n.is_multiple_of(self.0),
                    "flaky gear panics on message {n}"
                );
                io.send(m).await;
            }
            Ok(())
        })
    }
}

static FLAKY: Typed<Flaky> = Typed::new();

fn registry(name: &str) -> Option<&'static dyn GearType> {
    if name == "flaky" {
        Some(&FLAKY)
    } else {
        fluxrig_gears::find(name)
    }
}

fn scenario(dir: &Path, text: &str) -> Scenario {
    let ctx = CheckContext {
        base_dir: dir.to_path_buf(),
        data_dir: dir.join("data"),
    };
    Scenario::from_str(text, &dir.join("s.yaml"), &registry, &ctx).unwrap()
}

fn opts(dir: &Path) -> RackOptions {
    RackOptions {
        data_dir: dir.join("data"),
        machine: 7,
        drain_timeout: Duration::from_secs(10),
        ..RackOptions::default()
    }
}

fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finite_sources_run_to_completion_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        dir.path(),
        "meta: {name: q, version: 1}
gears:
  - {name: source, type: generate, config: {count: 5000, interval: 0s}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: file_out, config: {path: out/q.jsonl}}
wires:
  - {from: source.out, to: enrich.in, capacity: 16}
  - {from: enrich.out, to: sink.in, capacity: 16}
",
    );
    let summary = Rack::build(&s, opts(dir.path())).unwrap().run().await;
    let lines = read_json_lines(&dir.path().join("out/q.jsonl"));
    assert_eq!(lines.len(), 5000);
    for (i, l) in lines.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(l["seq"], seq);
        assert_eq!(l["double"], seq * 2);
    }
    let sink = summary.iter().find(|g| g.name == "sink").unwrap();
    assert_eq!(
        (sink.stats.messages_in, sink.stats.messages_out),
        (5000, 5000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_copies_and_fan_in_merges() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        dir.path(),
        "meta: {name: f, version: 1}
gears:
  - {name: a, type: generate, config: {count: 300, mapping: '.from = \"a\"'}}
  - {name: b, type: generate, config: {count: 200, mapping: '.from = \"b\"'}}
  - {name: all, type: file_out, config: {path: all.jsonl}}
  - {name: copy, type: file_out, config: {path: copy.jsonl}}
wires:
  - {from: a.out, to: all.in}
  - {from: b.out, to: all.in}
  - {from: a.out, to: copy.in}
",
    );
    Rack::build(&s, opts(dir.path())).unwrap().run().await;
    let all = read_json_lines(&dir.path().join("all.jsonl"));
    assert_eq!(all.len(), 500);
    for who in ["a", "b"] {
        let seqs: Vec<u64> = all
            .iter()
            .filter(|l| l["from"] == who)
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        let n = if who == "a" { 300 } else { 200 };
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "order kept per wire ({who})"
        );
    }
    assert_eq!(read_json_lines(&dir.path().join("copy.jsonl")).len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_every_message_already_produced() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        dir.path(),
        "meta: {name: s, version: 1}
gears:
  - {name: source, type: generate, config: {interval: 0s}}
  - {name: enrich, type: map, config: {source: '.x = 1'}}
  - {name: sink, type: file_out, config: {path: o.jsonl}}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
",
    );
    let rack = Rack::build(&s, opts(dir.path())).unwrap();
    let h = rack.handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.stop().await;
    });
    let summary = rack.run().await;
    let produced = summary
        .iter()
        .find(|g| g.name == "source")
        .unwrap()
        .stats
        .messages_out;
    let lines = read_json_lines(&dir.path().join("o.jsonl"));
    assert!(produced > 0);
    assert_eq!(
        lines.len() as u64,
        produced,
        "every produced message is delivered"
    );
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l["seq"] == i as u64 + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_gear_is_restarted_and_the_rack_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    SEEN.store(0, Ordering::SeqCst);
    let s = scenario(
        dir.path(),
        "meta: {name: p, version: 1}
gears:
  - {name: source, type: generate, config: {count: 50}}
  - {name: shaky, type: flaky, config: {panic_every: 20}}
  - {name: sink, type: file_out, config: {path: o.jsonl}}
wires:
  - {from: source.out, to: shaky.in}
  - {from: shaky.out, to: sink.in}
",
    );
    let summary = Rack::build(&s, opts(dir.path())).unwrap().run().await;
    let shaky = summary.iter().find(|g| g.name == "shaky").unwrap();
    assert!(shaky.stats.restarts >= 2, "{:?}", shaky.stats);
    // The messages in flight at each panic are lost to this test gear (it
    // held them); every other message got through, in order.
    let seqs: Vec<u64> = read_json_lines(&dir.path().join("o.jsonl"))
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() >= 47 && seqs.len() < 50, "{}", seqs.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_without_an_error_port_go_to_the_dead_letter_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        dir.path(),
        "meta: {name: d, version: 1}
gears:
  - {name: source, type: generate, config: {count: 10}}
  - {name: picky, type: map, config: {source: 'if mod(int!(.seq), 5) == 0 { abort }'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: picky.in}
  - {from: picky.out, to: sink.in}
",
    );
    let rack = Rack::build(&s, opts(dir.path())).unwrap();
    let summary = rack.run().await;
    let letters = read_json_lines(&dir.path().join("data/dead-letters.jsonl"));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["gear"], "picky");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted")
    );
    assert_eq!(letters[1]["msg"]["data"]["seq"], 10);
    let picky = summary.iter().find(|g| g.name == "picky").unwrap();
    assert_eq!((picky.stats.messages_out, picky.stats.errors), (8, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_swap_switches_output_at_a_single_point_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let text = |tag: &str| {
        format!(
            "meta: {{name: w, version: 1}}
gears:
  - {{name: source, type: generate, config: {{interval: 1ms}}}}
  - {{name: stamp, type: map, config: {{source: '.v = \"{tag}\"'}}}}
  - {{name: sink, type: file_out, config: {{path: o.jsonl}}}}
wires:
  - {{from: source.out, to: stamp.in}}
  - {{from: stamp.out, to: sink.in}}
"
        )
    };
    let rack = Rack::build(&scenario(dir.path(), &text("v1")), opts(dir.path())).unwrap();
    let h = rack.handle();
    let run = tokio::spawn(rack.run());
    for tag in ["v2", "v3", "v4"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let report = h.apply(scenario(dir.path(), &text(tag))).await.unwrap();
        assert_eq!(report.replaced, ["stamp"]);
        assert_eq!(report.kept, ["source", "sink"]);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.stop().await;
    run.await.unwrap();
    let lines = read_json_lines(&dir.path().join("o.jsonl"));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no message lost or doubled"
    );
    let tags: Vec<&str> = lines.iter().map(|l| l["v"].as_str().unwrap()).collect();
    let mut runs: Vec<&str> = tags.clone();
    runs.dedup();
    assert_eq!(
        runs,
        ["v1", "v2", "v3", "v4"],
        "each swap switches the output once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gear_that_cannot_be_built_stops_the_start_naming_the_gear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("taken")).unwrap();
    let s = scenario(
        dir.path(),
        "meta: {name: b, version: 1}
gears:
  - {name: source, type: generate, config: {count: 1}}
  - {name: sink, type: file_out, config: {path: taken}}
wires:
  - {from: source.out, to: sink.in}
",
    );
    let err = Rack::build(&s, opts(dir.path())).unwrap_err().to_string();
    assert!(err.starts_with("gear `sink`: cannot open"), "{err}");
}
