//! Recovery from the Rack's write-ahead log, with real gears and files: the
//! log is left as a crash would leave it (written with the WAL and the
//! Rack's record encoders), then a Rack starts on it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxrig_audit::records;
use fluxrig_gear::CheckContext;
use fluxrig_msg::{FluxId, FluxMsg, Map, Value};
use fluxrig_rack::{Compensator, Rack, RackOptions, RecoveryPolicy};
use fluxrig_scenario::Scenario;
use fluxrig_wal::{Wal, WalOptions};

/// One source (that makes nothing new) feeding two sinks.
const SCENARIO: &str = "meta: {name: recover, version: 1}
gears:
  - {name: source, type: generate, config: {count: 0}}
  - {name: a, type: file_out, config: {path: a.jsonl}}
  - {name: b, type: file_out, config: {path: b.jsonl}}
wires:
  - {from: source.out, to: a.in}
  - {from: source.out, to: b.in}
";

fn scenario(dir: &Path) -> Scenario {
    let ctx = CheckContext {
        base_dir: dir.to_path_buf(),
        data_dir: dir.join("data"),
    };
    Scenario::from_str(SCENARIO, &dir.join("s.yaml"), &fluxrig_gears::find, &ctx).unwrap()
}

fn opts(dir: &Path) -> RackOptions {
    RackOptions {
        data_dir: dir.join("data"),
        drain_timeout: Duration::from_secs(10),
        compact_every: None,
        ..RackOptions::default()
    }
}

fn msg(n: u64) -> FluxMsg {
    FluxMsg::new(
        FluxId::from_raw(1000 + n),
        [("n", Value::from(n))].into_iter().collect::<Map>().into(),
    )
}

fn line(n: u64) -> String {
    format!("{{\"n\":{n}}}\n")
}

/// The log a crash left: messages 1–4 accepted; 1 delivered by both
/// sinks, 2 by `a` only; `a` had also written message 3 to its file but
/// the crash came before the delivery was recorded.
async fn crashed_state(dir: &Path) {
    let data = dir.join("data");
    let (wal, _) = Wal::open(fluxrig_audit::wal_dir(&data), WalOptions::default()).unwrap();
    for n in 1..=4 {
        wal.append(
            records::INGRESS,
            records::encode_ingress("source", "out", &msg(n)),
        )
        .await
        .unwrap();
    }
    let one = line(1).len() as u64;
    let two = one + line(2).len() as u64;
    for (gear, n, offset) in [("a", 1, one), ("b", 1, 0), ("a", 2, two)] {
        wal.append(records::EGRESS, records::encode_egress(gear, &msg(n)))
            .await
            .unwrap();
        let id = msg(n).id;
        let body = if gear == "a" {
            records::encode_completed_at(gear, id, 1, offset)
        } else {
            records::encode_completed(gear, id, 1)
        };
        wal.append(records::COMPLETED, body).await.unwrap();
    }
    // Dropped without `close`: as after a crash.
    drop(wal);
    std::fs::write(
        dir.join("a.jsonl"),
        format!("{}{}{}", line(1), line(2), line(3)),
    )
    .unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_each_uncompleted_message_once_to_each_sink_that_lacks_it() {
    let dir = tempfile::tempdir().unwrap();
    crashed_state(dir.path()).await;
    let s = scenario(dir.path());
    let summary = Rack::build(&s, opts(dir.path())).unwrap().run().await;

    // `a` is cut back to message 2 (its last recorded delivery), then gets 3 and 4.
    assert_eq!(
        lines(&dir.path().join("a.jsonl")),
        [line(1), line(2), line(3), line(4)]
    );
    // `b` had delivered only message 1: it gets 2, 3 and 4, and skips 1.
    assert_eq!(
        lines(&dir.path().join("b.jsonl")),
        [line(2), line(3), line(4)]
    );
    let stats = |g: &str| summary.iter().find(|s| s.name == g).unwrap().stats;
    assert_eq!(stats("a").messages_out, 2);
    assert_eq!(stats("b").messages_out, 3);

    // Everything is completed now: a second start replays nothing.
    let summary = Rack::build(&s, opts(dir.path())).unwrap().run().await;
    assert!(summary.iter().all(|g| g.stats.messages_in == 0));
    assert_eq!(lines(&dir.path().join("a.jsonl")).len(), 4);
    assert_eq!(lines(&dir.path().join("b.jsonl")).len(), 3);

    // The log holds what happened, readable by the audit crate.
    let reader = fluxrig_wal::WalReader::open(
        &fluxrig_audit::wal_dir(&dir.path().join("data")),
        fluxrig_wal::Lsn::FIRST,
    )
    .unwrap();
    let mut completed = 0;
    for r in reader {
        let r = r.unwrap();
        if let records::RackRecord::Completed { .. } =
            records::RackRecord::decode(r.kind, &r.body).unwrap()
        {
            completed += 1;
        }
    }
    assert_eq!(
        completed,
        3 + 5,
        "three before the crash, five by the replay"
    );
}

/// Records what it is asked to compensate.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<FluxId>>);

impl Compensator for Recording {
    fn compensate(&self, gear: &str, port: &str, msg: &FluxMsg) {
        assert_eq!((gear, port), ("source", "out"));
        self.0.lock().unwrap().push(msg.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compensate_policy_hands_uncompleted_messages_to_the_hook_instead() {
    let dir = tempfile::tempdir().unwrap();
    crashed_state(dir.path()).await;
    let hook = Arc::new(Recording::default());
    let opts = RackOptions {
        recovery: RecoveryPolicy::Compensate,
        compensator: Arc::clone(&hook) as Arc<dyn Compensator>,
        ..opts(dir.path())
    };
    Rack::build(&scenario(dir.path()), opts)
        .unwrap()
        .run()
        .await;
    assert_eq!(
        *hook.0.lock().unwrap(),
        [2, 3, 4].map(|n| msg(n).id),
        "in log order, each once"
    );
    assert!(lines(&dir.path().join("b.jsonl")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rack_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path());
    let _first = Rack::build(&s, opts(dir.path())).unwrap();
    let err = Rack::build(&s, opts(dir.path())).unwrap_err().to_string();
    assert!(
        err.contains("write-ahead log") && err.contains("wal"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_holds_up_nothing_and_gets_everything_in_order_later() {
    let dir = tempfile::tempdir().unwrap();
    let port = fluxrig_test_support::free_port();
    let text = format!(
        "meta: {{name: outage, version: 1}}
gears:
  - {{name: source, type: generate, config: {{count: 2000, interval: 0s}}}}
  - {{name: out, type: http_out, config: {{url: 'http://127.0.0.1:{port}/in', backoff: 10ms, max_backoff: 100ms, pending: {{max_bytes: 10000000}}}}}}
  - {{name: copy, type: file_out, config: {{path: copy.jsonl}}}}
wires:
  - {{from: source.out, to: out.in}}
  - {{from: source.out, to: copy.in}}
"
    );
    let ctx = CheckContext {
        base_dir: dir.path().to_path_buf(),
        data_dir: dir.path().join("data"),
    };
    let s = Scenario::from_str(
        &text,
        &dir.path().join("s.yaml"),
        &fluxrig_gears::find,
        &ctx,
    )
    .unwrap();
    let rack = Rack::build(&s, opts(dir.path())).unwrap();
    let running = tokio::spawn(rack.run());

    // The destination is down, yet the other wire of the source gets everything.
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while lines(&dir.path().join("copy.jsonl")).len() < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "file_out was held up by the down destination"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running.is_finished());

    // The destination comes up: everything arrives, once, in order.
    let log = dir.path().join("got.jsonl");
    let mut cmd = fluxrig_test_support::python_script("http_sink.py");
    cmd.arg("--log")
        .arg(&log)
        .arg("--port")
        .arg(port.to_string());
    let (_server, _) = fluxrig_test_support::ChildGuard::spawn_and_wait_for(cmd, "listening ");
    let summary = running.await.unwrap();
    let got: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            let body: serde_json::Value =
                serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
            body["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(got, (1..=2000).collect::<Vec<_>>());
    let out = summary.iter().find(|g| g.name == "out").unwrap();
    assert_eq!((out.stats.messages_out, out.stats.errors), (2000, 0));

    // Both sinks completed every message: nothing is replayed.
    let quiet = text.replace("count: 2000", "count: 0");
    let s = Scenario::from_str(
        &quiet,
        &dir.path().join("s.yaml"),
        &fluxrig_gears::find,
        &ctx,
    )
    .unwrap();
    let summary = Rack::build(&s, opts(dir.path())).unwrap().run().await;
    let out = summary.iter().find(|g| g.name == "out").unwrap();
    assert_eq!(out.stats.messages_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_id_also_after_a_restart() {
    fluxrig_gears::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = fluxrig_test_support::free_port();
    let text = format!(
        "meta: {{name: idem, version: 1}}
gears:
  - {{name: ingress, type: http_in, config: {{listen: '127.0.0.1:{port}', path: /in}}}}
  - {{name: sink, type: file_out, config: {{path: out.jsonl}}}}
wires:
  - {{from: ingress.out, to: sink.in}}
"
    );
    let ctx = CheckContext {
        base_dir: dir.path().to_path_buf(),
        data_dir: dir.path().join("data"),
    };
    let s = Scenario::from_str(
        &text,
        &dir.path().join("s.yaml"),
        &fluxrig_gears::find,
        &ctx,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/in");
    let post = |key: &'static str, n: u32| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(format!("{{\"n\": {n}}}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };

    let mut ids = Vec::new();
    for round in 0..2 {
        let rack = Rack::build(&s, opts(dir.path())).unwrap();
        let handle = rack.handle();
        let running = tokio::spawn(rack.run());
        let a = post("order-a", 1).await;
        assert_eq!(
            post("order-a", 1).await,
            a,
            "round {round}: same key, same id"
        );
        let b = post(if round == 0 { "order-b" } else { "order-c" }, 2).await;
        assert_ne!(a, b);
        ids.push(a);
        handle.stop().await;
        running.await.unwrap();
    }
    assert_eq!(ids[0], ids[1], "the key is remembered across a restart");
    // One line per distinct key: a, b, c.
    assert_eq!(
        lines(&dir.path().join("out.jsonl")),
        [line(1), line(2), line(2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dead_lettered_before_the_crash_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let text = "meta: {name: dead, version: 1}
gears:
  - {name: source, type: generate, config: {count: 0}}
  - {name: double, type: map, config: {source: '.double = int!(.n) * 2'}}
  - {name: sink, type: file_out, config: {path: out.jsonl}}
wires:
  - {from: source.out, to: double.in}
  - {from: double.out, to: sink.in}
";
    let ctx = CheckContext {
        base_dir: dir.path().to_path_buf(),
        data_dir: dir.path().join("data"),
    };
    let s =
        Scenario::from_str(text, &dir.path().join("s.yaml"), &fluxrig_gears::find, &ctx).unwrap();
    // Messages 1–3 accepted; `double` gave up on 2 (dead letter); then a crash.
    let (wal, _) = Wal::open(
        fluxrig_audit::wal_dir(&dir.path().join("data")),
        WalOptions::default(),
    )
    .unwrap();
    for n in 1..=3 {
        wal.append(
            records::INGRESS,
            records::encode_ingress("source", "out", &msg(n)),
        )
        .await
        .unwrap();
    }
    wal.append(
        records::DEAD_LETTER,
        records::encode_dead_letter("double", "it failed", &msg(2)),
    )
    .await
    .unwrap();
    drop(wal);

    Rack::build(&s, opts(dir.path())).unwrap().run().await;
    assert_eq!(
        lines(&dir.path().join("out.jsonl")),
        ["{\"n\":1,\"double\":2}\n", "{\"n\":3,\"double\":6}\n"]
    );
}
