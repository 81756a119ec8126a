//! Writes the seed corpora of the fuzz targets into `fuzz/seeds/<target>/`.
//!
//! ```sh
//! cargo run -p fluxrig-bench --example fuzz_seeds -- fuzz/seeds
//! ```
//!
//! The seeds are committed; rerun this when the envelope gains a field.

use std::path::{Path, PathBuf};
use std::{fs, io};

use fluxrig_bench::typical_payment_msg;
use fluxrig_msg::{EntityId, FluxId, FluxMsg, Hop, Integer, Map, Simple, Value, cbor, json};

fn main() -> io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/seeds"), PathBuf::from);
    let msgs = messages();
    for (name, m) in &msgs {
        write(&root.join("decode_msg"), name, &m.to_cbor())?;
        // Maps with non-text keys have no JSON form.
        if let Ok(text) = json::to_json_string(m) {
            write(&root.join("json_msg"), name, text.as_bytes())?;
        }
    }
    for (name, text) in JSON {
        write(&root.join("json_msg"), name, text.as_bytes())?;
    }
    // Well-formed but not deterministic: unsorted keys, long heads, a
    // default spelled out. They decode; the re-encoding differs.
    for (name, hex) in NON_DETERMINISTIC {
        write(&root.join("decode_msg"), name, &unhex(hex))?;
    }
    for (name, v) in values() {
        write(&root.join("decode_value"), name, &cbor::to_vec(&v))?;
    }
    if let Some(Value::Map(data)) = msgs.first().map(|(_, m)| m.data.clone()) {
        write(
            &root.join("decode_value"),
            "payment_data",
            &cbor::to_vec(&Value::Map(data)),
        )?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn messages() -> Vec<(&'static str, FluxMsg)> {
    let minimal = FluxMsg::new(FluxId::from_raw(1), Value::Null);

    let mut odd = FluxMsg::new(FluxId::from_raw(u64::MAX), Value::Array(values_list()));
    odd.set_extension("a", Value::from(-1)).ok();
    odd.set_extension("zzzzzz", Value::Map(Map::new())).ok();
    odd.meta.insert("", "");
    odd.path.push(Hop {
        gear: EntityId::from_raw(0),
        port: "".into(),
        ts: 0,
    });

    vec![
        ("payment", typical_payment_msg()),
        ("minimal", minimal),
        ("odd", odd),
    ]
}

fn values() -> Vec<(&'static str, Value)> {
    let mut out: Vec<_> = values_list()
        .into_iter()
        .enumerate()
        .map(|(i, v)| (VALUE_NAMES[i], v))
        .collect();
    let nested = (0..10).fold(Value::Null, |v, _| Value::Array(vec![v]));
    out.push(("nested", nested));
    out
}

const VALUE_NAMES: [&str; 12] = [
    "int_min",
    "int_max",
    "neg",
    "half",
    "single",
    "double",
    "nan",
    "neg_zero",
    "tag",
    "simple",
    "bytes",
    "mixed_keys",
];

fn values_list() -> Vec<Value> {
    let mixed_keys: Map = [
        (Value::from(10), Value::Null),
        (Value::from(-1), Value::Undefined),
        (Value::from("a"), Value::Bool(false)),
        (Value::Bytes(vec![1, 2].into()), Value::Bool(true)),
        (Value::Array(vec![]), Value::from(0)),
    ]
    .into_iter()
    .collect();
    vec![
        Value::Integer(Integer::MIN),
        Value::Integer(Integer::MAX),
        Value::from(-1000),
        Value::Float(1.5),
        Value::Float(100_000.0),
        Value::Float(1.1),
        Value::Float(f64::NAN),
        Value::Float(-0.0),
        Value::Tag(1, Box::new(Value::from(1_767_225_600))),
        Simple::new(255).map_or(Value::Null, Value::Simple),
        Value::Bytes(vec![0; 24].into()),
        Value::Map(mixed_keys),
    ]
}

/// Hand-written JSON messages using every special spelling.
const JSON: [(&str, &str); 2] = [
    (
        "specials",
        r#"{"id": "18446744073709551615", "ref": "0", "src": "1",
 "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
 "meta": {"": "", "conn": "7"}, "flags": 4294967295, "raw": "",
 "path": [{"gear": "2", "port": "", "ts": 0}], "ts": 18446744073709551615,
 "data": [{"$bytes": "AQI="}, {"$tag": 1, "$value": -1.5}, {"$simple": 23},
   {"$simple": 255}, {"$float": "NaN"}, {"$float": "-Infinity"},
   {"$int": "-18446744073709551616"}, -9223372036854775808, 1e300, -0.0,
   {"$bytes": 1, "x": 2}, {}, [], null, true, "\u00e9\ud83d\ude00"],
 "ext": {"future": {"a": [1, 2.5]}, "z": null}}"#,
    ),
    (
        "nested",
        r#"{"id": "1", "data": [[[[[[[[[[{"a": [[[[{}]]]]}]]]]]]]]]]}"#,
    ),
];

/// Hand-written non-deterministic spellings of valid messages.
const NON_DETERMINISTIC: [(&str, &str); 3] = [
    // {"ts": 5, "id": 1}: keys out of order.
    ("unsorted", "a2 62 7473 05 62 6964 01"),
    // {"id": 1 in a 9-byte head, "data": 1.5 as a double}.
    (
        "long_heads",
        "a2 62 6964 1b 0000000000000001 64 64617461 fb 3ff8000000000000",
    ),
    // {"id": 1, "ts": 0, "flags": 0}: defaults spelled out.
    ("defaults", "a3 62 6964 01 62 7473 00 65 666c616773 00"),
];

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
