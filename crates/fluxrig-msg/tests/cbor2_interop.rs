//! An independent decoder (Python's cbor2) reads our bytes and finds the
//! values we meant; for text-keyed messages cbor2's canonical encoder
//! produces our exact bytes.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;

use fluxrig_msg::{FluxMsg, Map, Value};
use fluxrig_test_support::{python_script, strategies};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value as Json, json};

/// The envelope as a plain CBOR map, built field by field from the struct
/// (not by the encoder under test).
fn envelope(m: &FluxMsg) -> Value {
    let mut e = Map::new();
    e.insert("id", m.id.get());
    if m.ts != 0 {
        e.insert("ts", m.ts);
    }
    if let Some(raw) = &m.raw {
        e.insert("raw", Value::Bytes(raw.clone()));
    }
    if let Some(r) = m.reference {
        e.insert("ref", r.get());
    }
    if let Some(s) = m.src {
        e.insert("src", s.get());
    }
    if !m.data.is_null() {
        e.insert("data", m.data.clone());
    }
    if !m.meta.is_empty() {
        e.insert("meta", m.meta.iter().collect::<Map>());
    }
    if !m.path.is_empty() {
        let hops = m
            .path
            .iter()
            .map(|h| {
                Value::Array(vec![
                    h.gear.get().into(),
                    h.port.as_str().into(),
                    h.ts.into(),
                ])
            })
            .collect::<Vec<_>>();
        e.insert("path", hops);
    }
    if m.flags.0 != 0 {
        e.insert("flags", m.flags.0);
    }
    if let Some(t) = m.trace {
        let mut b = t.trace_id.to_vec();
        b.extend_from_slice(&t.span_id);
        b.push(t.flags);
        e.insert("trace", Value::Bytes(b.into()));
    }
    for (k, v) in m.extensions() {
        e.insert(k, v.clone());
    }
    Value::Map(e)
}

fn typed(v: &Value) -> Json {
    match v {
        Value::Integer(i) => json!({"i": i.to_string()}),
        Value::Float(x) if x.is_nan() => json!({"f": "nan"}),
        Value::Float(x) => json!({"f": format!("{:016x}", x.to_bits())}),
        Value::Bytes(b) => json!({"b": b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })}),
        Value::Text(t) => json!({"t": t.as_str()}),
        Value::Array(a) => json!({"a": a.iter().map(typed).collect::<Vec<_>>()}),
        Value::Map(m) => {
            json!({"m": m.iter().map(|(k, v)| json!([typed(k), typed(v)])).collect::<Vec<_>>()})
        }
        Value::Tag(t, v) => json!({"g": [t.to_string(), typed(v)]}),
        Value::Bool(b) => json!({"bool": b}),
        Value::Null => json!({"null": 0}),
        Value::Undefined => json!({"u": 0}),
        Value::Simple(s) => json!({"s": s.get()}),
    }
}

fn text_keys_only(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().all(text_keys_only),
        Value::Map(m) => m
            .iter()
            .all(|(k, v)| matches!(k, Value::Text(_)) && text_keys_only(v)),
        Value::Tag(_, v) => text_keys_only(v),
        _ => true,
    }
}

/// Keeps the corpus within what Python can represent faithfully: cbor2
/// gives meaning to some registered tags (dates, bignums, sets…), and a
/// Python dict merges keys that compare equal across types (`False == 0 ==
/// 0.0 == -0.0`), so maps keyed by booleans or floats cannot be compared.
fn python_representable(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().all(python_representable),
        Value::Map(m) => m.iter().all(|(k, v)| {
            !matches!(k, Value::Bool(_) | Value::Float(_))
                && python_representable(k)
                && python_representable(v)
        }),
        Value::Tag(t, v) => *t > 100_000 && *t != 55_799 && python_representable(v),
        _ => true,
    }
}

fn corpus(strategy: impl Strategy<Value = FluxMsg>, n: usize, seed: u8) -> Vec<FluxMsg> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let mut out = Vec::new();
    while out.len() < n {
        let m = strategy.new_tree(&mut runner).unwrap().current();
        if python_representable(&envelope(&m)) {
            out.push(m);
        }
    }
    out
}

#[test]
fn cbor2_reads_our_messages() {
    let mut msgs = corpus(strategies::msg(), 1500, 7);
    msgs.extend(corpus(strategies::json_msg(), 1500, 8));
    let dir = tempfile::tempdir().unwrap();
    let (seq_path, exp_path) = (
        dir.path().join("msgs.cborseq"),
        dir.path().join("expected.jsonl"),
    );
    let mut seq = Vec::new();
    let mut expected = String::new();
    for m in &msgs {
        m.encode(&mut seq);
        let env = envelope(m);
        let line = json!({"value": typed(&env), "text_keys": text_keys_only(&env)});
        expected.push_str(&line.to_string());
        expected.push('\n');
    }
    std::fs::write(&seq_path, &seq).unwrap();
    std::fs::write(&exp_path, expected).unwrap();

    let out = python_script("cbor2_check.py")
        .arg(&seq_path)
        .arg(&exp_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cbor2 disagrees:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("checked {} messages, 0 failures", msgs.len())),
        "{stdout}"
    );
}
