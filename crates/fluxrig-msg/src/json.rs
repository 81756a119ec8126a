//! The JSON form of a fluxMsg, for people and scripts.
//!
//! ```json
//! {"id": "1234", "ref": "1200", "src": "144115188075855873",
//!  "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//!  "meta": {"conn": "7"}, "data": {"amount": 1250, "pan": {"$bytes": "AQI="}},
//!  "flags": 0, "raw": "MDEwMA==", "path": [{"gear": "2", "port": "out", "ts": 1}],
//!  "ts": 1767225600000000000, "ext": {"future_field": 1}}
//! ```
//!
//! * `id`, `ref`, `src` and `path[].gear` are decimal strings of the u64.
//! * `data` is any JSON value. Integers become CBOR integers; every other
//!   number becomes a float (encoded in its shortest exact form). CBOR items
//!   JSON cannot spell use one-key objects: `{"$bytes": "<base64>"}`,
//!   `{"$tag": n, "$value": v}`, `{"$simple": n}` (23 is `undefined`),
//!   `{"$float": "NaN" | "Infinity" | "-Infinity"}` and, for integers below
//!   -2^63 (which JSON parsers read as floats), `{"$int": "<decimal>"}`.
//!   Map keys must be text.
//! * `raw` is standard base64 with padding; `ext` holds extension fields.
//! * Absent fields are omitted.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use compact_str::CompactString;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::cbor::Limits;
use crate::id::{EntityId, FluxId};
use crate::msg::{FluxMsg, Hop, Meta, TraceContext};
use crate::value::{Integer, Map, Simple, Value};

/// Why JSON is not an acceptable fluxMsg (or a message cannot be shown as JSON).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON at all.
    #[error("invalid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser found.
        reason: String,
    },
    /// JSON that does not fit the fluxMsg schema.
    #[error("field `{field}`: {reason}")]
    Field {
        /// Path of the field, e.g. `data.items[2]`.
        field: String,
        /// What is expected.
        reason: String,
    },
}

fn field_err(field: &str, reason: impl Into<String>) -> JsonError {
    JsonError::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// JSON -> fluxMsg

/// Parses the JSON form of one message.
pub fn from_json_str(s: &str) -> Result<FluxMsg, JsonError> {
    let json: Json = serde_json::from_str(s).map_err(|e| JsonError::Syntax {
        line: e.line(),
        column: e.column(),
        reason: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_owned(),
    })?;
    from_json(&json)
}

/// Converts a parsed JSON value into a message.
pub fn from_json(json: &Json) -> Result<FluxMsg, JsonError> {
    let Json::Object(obj) = json else {
        return Err(field_err("<message>", "a message must be a JSON object"));
    };
    let id = obj
        .get("id")
        .ok_or_else(|| field_err("id", "required field is missing"))?;
    let mut msg = FluxMsg::new(FluxId::from_raw(decimal(id, "id")?), Value::Null);
    for (k, v) in obj {
        match k.as_str() {
            "id" => {}
            "ref" => msg.reference = Some(FluxId::from_raw(decimal(v, "ref")?)),
            "src" => msg.src = Some(EntityId::from_raw(decimal(v, "src")?)),
            "trace" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| field_err("trace", "expected a traceparent string"))?;
                msg.trace =
                    Some(TraceContext::parse(s).map_err(|e| field_err("trace", e.to_string()))?);
            }
            "meta" => msg.meta = meta(v)?,
            "data" => msg.data = value(v, "data")?,
            "flags" => {
                let f = v
                    .as_u64()
                    .and_then(|f| u32::try_from(f).ok())
                    .ok_or_else(|| field_err("flags", "expected an integer 0..=4294967295"))?;
                msg.flags = crate::Flags(f);
            }
            "raw" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| field_err("raw", "expected a base64 string"))?;
                let b = B64
                    .decode(s)
                    .map_err(|e| field_err("raw", format!("invalid base64: {e}")))?;
                msg.raw = Some(b.into());
            }
            "path" => msg.path = path(v)?,
            "ts" => {
                msg.ts = v
                    .as_u64()
                    .ok_or_else(|| field_err("ts", "expected Unix nanoseconds"))?;
            }
            "ext" => {
                let Json::Object(ext) = v else {
                    return Err(field_err("ext", "expected an object of extension fields"));
                };
                for (name, v) in ext {
                    let at = format!("ext.{name}");
                    let v = value(v, &at)?;
                    msg.set_extension(name, v)
                        .map_err(|e| field_err(&at, e.to_string()))?;
                }
            }
            other => return Err(field_err(other, "unknown field")),
        }
    }
    Ok(msg)
}

fn decimal(v: &Json, field: &str) -> Result<u64, JsonError> {
    v.as_str()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            field_err(
                field,
                "expected a decimal string of a 64-bit unsigned integer",
            )
        })
}

fn meta(v: &Json) -> Result<Meta, JsonError> {
    let Json::Object(obj) = v else {
        return Err(field_err("meta", "expected an object of strings"));
    };
    obj.iter()
        .map(|(k, v)| match v {
            Json::String(s) => Ok((k.as_str(), s.as_str())),
            _ => Err(field_err(&format!("meta.{k}"), "expected a string")),
        })
        .collect()
}

fn path(v: &Json) -> Result<Vec<Hop>, JsonError> {
    let Json::Array(hops) = v else {
        return Err(field_err("path", "expected an array of hops"));
    };
    // As the CBOR decoder: what the JSON form accepts always decodes.
    if hops.len() > Limits::DEFAULT.max_hops {
        return Err(field_err(
            "path",
            format!("more than {} hops", Limits::DEFAULT.max_hops),
        ));
    }
    hops.iter()
        .enumerate()
        .map(|(i, h)| {
            let at = format!("path[{i}]");
            let Json::Object(h) = h else {
                return Err(field_err(&at, "expected {\"gear\", \"port\", \"ts\"}"));
            };
            if let Some(k) = h
                .keys()
                .find(|k| !matches!(k.as_str(), "gear" | "port" | "ts"))
            {
                return Err(field_err(&format!("{at}.{k}"), "unknown field"));
            }
            let gear = h
                .get("gear")
                .ok_or_else(|| field_err(&format!("{at}.gear"), "missing"))?;
            let port = h
                .get("port")
                .and_then(Json::as_str)
                .ok_or_else(|| field_err(&format!("{at}.port"), "expected a string"))?;
            let ts = h
                .get("ts")
                .and_then(Json::as_u64)
                .ok_or_else(|| field_err(&format!("{at}.ts"), "expected Unix nanoseconds"))?;
            Ok(Hop {
                gear: EntityId::from_raw(decimal(gear, &format!("{at}.gear"))?),
                port: port.into(),
                ts,
            })
        })
        .collect()
}

/// Converts a JSON value into a CBOR value; `at` names it in errors.
///
/// Nesting is limited as the CBOR decoder limits a message's `data`
/// ([`Limits::DEFAULT`]: arrays, maps and tags at most 63 deep inside
/// `data`), so that what the JSON form accepts always decodes from CBOR.
pub fn value(v: &Json, at: &str) -> Result<Value, JsonError> {
    // `data` sits at depth 1, inside the envelope.
    value_at(v, at, 1)
}

/// The depth of a container's content, or an error past the decoder's limit.
fn deeper(depth: u32, at: &str) -> Result<u32, JsonError> {
    if depth >= Limits::DEFAULT.max_depth {
        return Err(field_err(
            at,
            format!("nesting deeper than {} levels", Limits::DEFAULT.max_depth),
        ));
    }
    Ok(depth + 1)
}

fn value_at(v: &Json, at: &str, depth: u32) -> Result<Value, JsonError> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Text(CompactString::from(s.as_str())),
        Json::Array(a) => {
            let depth = deeper(depth, at)?;
            Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| value_at(x, &format!("{at}[{i}]"), depth))
                    .collect::<Result<_, _>>()?,
            )
        }
        Json::Object(obj) => {
            if let Some(special) = special(obj, at, depth)? {
                return Ok(special);
            }
            let depth = deeper(depth, at)?;
            let mut m = Map::with_capacity(obj.len());
            for (k, x) in obj {
                m.insert(
                    Value::text(k.as_str()),
                    value_at(x, &format!("{at}.{k}"), depth)?,
                );
            }
            Value::Map(m)
        }
    })
}

/// The `$`-keyed spellings of CBOR items JSON lacks.
fn special(
    obj: &serde_json::Map<String, Json>,
    at: &str,
    depth: u32,
) -> Result<Option<Value>, JsonError> {
    let mut keys = obj.keys().map(String::as_str);
    let (first, second) = (keys.next(), keys.next());
    let third = keys.next();
    Ok(Some(match (first, second, third) {
        (Some("$bytes"), None, None) => {
            let s = obj["$bytes"]
                .as_str()
                .ok_or_else(|| field_err(at, "$bytes must be base64"))?;
            Value::Bytes(
                B64.decode(s)
                    .map_err(|e| field_err(at, format!("invalid base64: {e}")))?
                    .into(),
            )
        }
        (Some("$simple"), None, None) => {
            match obj["$simple"].as_u64().and_then(|n| u8::try_from(n).ok()) {
                Some(20) => Value::Bool(false),
                Some(21) => Value::Bool(true),
                Some(22) => Value::Null,
                Some(23) => Value::Undefined,
                Some(n) => Value::Simple(
                    Simple::new(n)
                        .ok_or_else(|| field_err(at, "simple values 24..=31 are reserved"))?,
                ),
                None => return Err(field_err(at, "$simple must be 0..=255")),
            }
        }
        (Some("$float"), None, None) => Value::Float(match obj["$float"].as_str() {
            Some("NaN") => f64::NAN,
            Some("Infinity") => f64::INFINITY,
            Some("-Infinity") => f64::NEG_INFINITY,
            _ => return Err(field_err(at, "$float must be NaN, Infinity or -Infinity")),
        }),
        (Some("$int"), None, None) => {
            let i = obj["$int"]
                .as_str()
                .and_then(|s| s.parse::<i128>().ok())
                .and_then(|i| Integer::try_from(i).ok())
                .ok_or_else(|| field_err(at, "$int must be a decimal string in -2^64..=2^64-1"))?;
            Value::Integer(i)
        }
        (Some("$tag"), Some("$value"), None) | (Some("$value"), Some("$tag"), None) => {
            let tag = obj["$tag"]
                .as_u64()
                .ok_or_else(|| field_err(at, "$tag must be a u64"))?;
            Value::Tag(
                tag,
                Box::new(value_at(
                    &obj["$value"],
                    &format!("{at}.$value"),
                    deeper(depth, at)?,
                )?),
            )
        }
        _ => return Ok(None),
    }))
}

// ---------------------------------------------------------------------------
// fluxMsg -> JSON

/// Serialises a message in its JSON form (`serde_json::to_writer(w, &JsonMsg(&m))`).
#[derive(Debug, Clone, Copy)]
pub struct JsonMsg<'a>(pub &'a FluxMsg);

/// Serialises a CBOR value in the JSON conventions of `data`.
#[derive(Debug, Clone, Copy)]
pub struct JsonValue<'a>(pub &'a Value);

/// The JSON text of a message, on one line.
pub fn to_json_string(msg: &FluxMsg) -> Result<String, JsonError> {
    serde_json::to_string(&JsonMsg(msg)).map_err(|e| field_err("data", e.to_string()))
}

struct Display<T>(T);

impl<T: fmt::Display> Serialize for Display<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(self.0))
    }
}

impl Serialize for JsonMsg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut out = s.serialize_map(None)?;
        out.serialize_entry("id", &Display(m.id))?;
        if let Some(r) = m.reference {
            out.serialize_entry("ref", &Display(r))?;
        }
        if let Some(src) = m.src {
            out.serialize_entry("src", &Display(src))?;
        }
        if let Some(t) = m.trace {
            out.serialize_entry("trace", &Display(t))?;
        }
        if !m.meta.is_empty() {
            out.serialize_entry("meta", &MetaJson(&m.meta))?;
        }
        if !m.data.is_null() {
            out.serialize_entry("data", &JsonValue(&m.data))?;
        }
        if m.flags.0 != 0 {
            out.serialize_entry("flags", &m.flags.0)?;
        }
        if let Some(raw) = &m.raw {
            out.serialize_entry("raw", &Base64(raw))?;
        }
        if !m.path.is_empty() {
            out.serialize_entry("path", &PathJson(&m.path))?;
        }
        if m.ts != 0 {
            out.serialize_entry("ts", &m.ts)?;
        }
        if m.extensions().len() > 0 {
            out.serialize_entry("ext", &ExtJson(m))?;
        }
        out.end()
    }
}

struct MetaJson<'a>(&'a Meta);

impl Serialize for MetaJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

struct PathJson<'a>(&'a [Hop]);

impl Serialize for PathJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for hop in self.0 {
            seq.serialize_element(&HopJson(hop))?;
        }
        seq.end()
    }
}

struct HopJson<'a>(&'a Hop);

impl Serialize for HopJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("gear", &Display(self.0.gear))?;
        m.serialize_entry("port", self.0.port.as_str())?;
        m.serialize_entry("ts", &self.0.ts)?;
        m.end()
    }
}

struct ExtJson<'a>(&'a FluxMsg);

impl Serialize for ExtJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.extensions().map(|(k, v)| (k, JsonValue(v))))
    }
}

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Integer(i) => serialize_integer(*i, s),
            Value::Bytes(b) => one_key(s, "$bytes", &Base64(b)),
            Value::Text(t) => s.serialize_str(t),
            Value::Array(a) => s.collect_seq(a.iter().map(JsonValue)),
            Value::Map(m) => {
                let mut out = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    let Value::Text(k) = k else {
                        return Err(S::Error::custom(
                            "a map with non-text keys has no JSON form",
                        ));
                    };
                    out.serialize_entry(k.as_str(), &JsonValue(v))?;
                }
                out.end()
            }
            Value::Tag(t, v) => {
                let mut out = s.serialize_map(Some(2))?;
                out.serialize_entry("$tag", t)?;
                out.serialize_entry("$value", &JsonValue(v))?;
                out.end()
            }
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Null => s.serialize_unit(),
            Value::Undefined => one_key(s, "$simple", &23),
            Value::Simple(n) => one_key(s, "$simple", &n.get()),
            Value::Float(x) if x.is_nan() => one_key(s, "$float", "NaN"),
            Value::Float(x) if x.is_infinite() => {
                one_key(s, "$float", if *x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Value::Float(x) => s.serialize_f64(*x),
        }
    }
}

fn serialize_integer<S: Serializer>(i: Integer, s: S) -> Result<S::Ok, S::Error> {
    if let Some(u) = i.as_u64() {
        s.serialize_u64(u)
    } else if let Some(n) = i.as_i64() {
        s.serialize_i64(n)
    } else {
        one_key(s, "$int", &i.get().to_string())
    }
}

fn one_key<S: Serializer, V: Serialize + ?Sized>(s: S, k: &str, v: &V) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(k, v)?;
    m.end()
}
