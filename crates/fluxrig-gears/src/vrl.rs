//! VRL (the Vector Remap Language) for `map`, `route` and `generate`.
//!
//! A program runs on a message's `data` (`.field`) with the envelope
//! reachable as metadata: `%id`, `%ref`, `%src` (decimal strings), `%ts`
//! (Unix ns), `%flags` and `%meta` (an object of strings). Assignments to
//! `%meta` are written back to the message; the other metadata is
//! read-only.

use std::fmt::Write as _;

use compact_str::CompactString;
use fluxrig_msg::{FluxMsg, Integer, Map, Value};
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::{Program, TargetValue, TimeZone};
use vrl::diagnostic::{DiagnosticList, Severity};
use vrl::path::PathPrefix;
use vrl::value::{ObjectMap, Secrets, Value as Vv};

/// A compiled VRL program and what it touches.
#[derive(Debug, Clone)]
pub(crate) struct Vrl {
    program: Program,
    uses_metadata: bool,
    /// The program was wrapped to capture its runtime error (conditions):
    /// it returns `[value, error]`.
    captures_error: bool,
}

/// Line and column (1-based) of a byte offset in a program.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The diagnostics as one line each: `line L, column C: message (label)`.
fn describe(source: &str, diagnostics: &DiagnosticList) -> String {
    let mut out = String::new();
    for d in diagnostics
        .iter()
        .filter(|d| matches!(d.severity, Severity::Error | Severity::Bug))
    {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let primary = d.labels.iter().find(|l| l.primary).or(d.labels.first());
        match primary {
            Some(l) => {
                let (line, col) = line_col(source, l.span.start());
                let _ = write!(
                    out,
                    "VRL error at line {line}, column {col} of the program: {}",
                    d.message
                );
                if !l.message.is_empty() && l.message != d.message {
                    let _ = write!(out, " ({})", l.message);
                }
            }
            None => {
                let _ = write!(out, "VRL error: {}", d.message);
            }
        }
    }
    if out.is_empty() {
        "VRL program does not compile".to_owned()
    } else {
        out
    }
}

impl Vrl {
    /// Compiles `source`; errors name the line and column inside it.
    pub(crate) fn compile(source: &str) -> Result<Vrl, String> {
        let fns = vrl::stdlib::all();
        let result = vrl::compiler::compile(source, &fns).map_err(|d| describe(source, &d))?;
        Ok(Vrl::from_program(result.program, false))
    }

    fn from_program(program: Program, captures_error: bool) -> Vrl {
        let info = program.info();
        let uses_metadata = info
            .target_queries
            .iter()
            .chain(&info.target_assignments)
            .any(|p| p.prefix == PathPrefix::Metadata);
        Vrl {
            program,
            uses_metadata,
            captures_error,
        }
    }

    /// Compiles a condition. A condition may be fallible (`.amount > 100`
    /// fails when `.amount` is not a number): its runtime error is captured
    /// and reported by [`Vrl::run`] instead of being a compile error.
    pub(crate) fn compile_condition(source: &str) -> Result<Vrl, String> {
        let fns = vrl::stdlib::all();
        match vrl::compiler::compile(source, &fns) {
            Ok(r) => Ok(Vrl::from_program(r.program, false)),
            Err(d) if d.iter().any(|d| d.code == 100) => {
                // E100 "unhandled error": capture it as a value instead. The
                // condition's own text comes first, unchanged, so positions
                // in any other error still match what the user wrote.
                let wrapped = format!(
                    "fluxrig_cond_value, fluxrig_cond_error = ({source})\n[fluxrig_cond_value, fluxrig_cond_error]"
                );
                let r = vrl::compiler::compile(&wrapped, &fns).map_err(|w| {
                    tracing::debug!(error = %describe(&wrapped, &w), "condition wrapper does not compile");
                    describe(source, &d)
                })?;
                Ok(Vrl::from_program(r.program, true))
            }
            Err(d) => Err(describe(source, &d)),
        }
    }

    /// Runs the program on a message's data (and metadata). Returns the
    /// program's value; the message's `data` and `meta` are updated.
    pub(crate) fn run(&self, rt: &mut Runtime, msg: &mut FluxMsg) -> Result<Vv, String> {
        // The message stays intact until the program succeeds: a failed
        // message goes to `error` exactly as it came.
        let value = to_vrl(&msg.data)?;
        let value = match value {
            Vv::Null => Vv::Object(ObjectMap::new()),
            v => v,
        };
        let metadata = if self.uses_metadata {
            metadata(msg)
        } else {
            Vv::Object(ObjectMap::new())
        };
        let mut target = TargetValue {
            value,
            metadata,
            secrets: Secrets::default(),
        };
        let result = rt.resolve(&mut target, &self.program, &TimeZone::default());
        rt.clear();
        let out = match result {
            Ok(Vv::Array(mut pair)) if self.captures_error && pair.len() == 2 => match pair.pop() {
                Some(Vv::Null) | None => pair.pop().unwrap_or(Vv::Null),
                Some(e) => {
                    let e = match e {
                        Vv::String(s) => s.to_string(),
                        Vv::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => other.to_string(),
                    };
                    return Err(format!("VRL runtime error: {e}"));
                }
            },
            Ok(v) => v,
            Err(Terminate::Abort(e)) => return Err(format!("aborted: {e}")),
            Err(Terminate::Error(e)) => return Err(format!("VRL runtime error: {e}")),
            Err(Terminate::Interrupted) => return Err("VRL program interrupted".to_owned()),
        };
        msg.data = from_vrl(target.value);
        if self.uses_metadata {
            write_back_meta(msg, target.metadata)?;
        }
        Ok(out)
    }
}

fn metadata(msg: &FluxMsg) -> Vv {
    let mut m = ObjectMap::new();
    m.insert("id".into(), Vv::from(msg.id.to_string()));
    if let Some(r) = msg.reference {
        m.insert("ref".into(), Vv::from(r.to_string()));
    }
    if let Some(s) = msg.src {
        m.insert("src".into(), Vv::from(s.to_string()));
    }
    m.insert(
        "ts".into(),
        Vv::Integer(i64::try_from(msg.ts).unwrap_or(i64::MAX)),
    );
    m.insert("flags".into(), Vv::Integer(i64::from(msg.flags.0)));
    let meta: ObjectMap = msg
        .meta
        .iter()
        .map(|(k, v)| (k.into(), Vv::from(v)))
        .collect();
    m.insert("meta".into(), Vv::Object(meta));
    Vv::Object(m)
}

fn write_back_meta(msg: &mut FluxMsg, metadata: Vv) -> Result<(), String> {
    let Vv::Object(mut md) = metadata else {
        return Ok(());
    };
    let Some(meta) = md.remove("meta") else {
        msg.meta = fluxrig_msg::Meta::new();
        return Ok(());
    };
    let Vv::Object(meta) = meta else {
        return Err("%meta must stay an object of strings".to_owned());
    };
    let mut out = fluxrig_msg::Meta::new();
    for (k, v) in meta {
        let s = match v {
            Vv::String(s) => s.to_string(),
            Vv::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            Vv::Integer(i) => i.to_string(),
            Vv::Float(f) => f.to_string(),
            Vv::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "%meta.{k} must be a string, not {}",
                    other.kind_str()
                ));
            }
        };
        out.insert(k.as_str(), s);
    }
    msg.meta = out;
    Ok(())
}

/// Our CBOR value as a VRL value. CBOR items VRL cannot hold (integers
/// outside i64, NaN, tags, non-text map keys, simple values) are errors —
/// a message is never silently altered.
pub(crate) fn to_vrl(v: &Value) -> Result<Vv, String> {
    Ok(match v {
        Value::Null | Value::Undefined => Vv::Null,
        Value::Bool(b) => Vv::Boolean(*b),
        Value::Integer(i) => Vv::Integer(
            i.as_i64()
                .ok_or_else(|| format!("integer {i} does not fit VRL's 64-bit integers"))?,
        ),
        Value::Float(f) => Vv::Float(
            vrl::prelude::NotNan::new(*f).map_err(|_| "NaN cannot be passed to VRL".to_owned())?,
        ),
        Value::Text(s) => Vv::from(s.as_str()),
        Value::Bytes(b) => Vv::Bytes(b.clone()),
        Value::Array(a) => Vv::Array(a.iter().map(to_vrl).collect::<Result<_, _>>()?),
        Value::Map(m) => {
            let mut o = ObjectMap::new();
            for (k, v) in m {
                let Value::Text(k) = k else {
                    return Err("maps with non-text keys cannot be passed to VRL".to_owned());
                };
                o.insert(k.as_str().into(), to_vrl(v)?);
            }
            Vv::Object(o)
        }
        Value::Tag(t, _) => return Err(format!("CBOR tag {t} cannot be passed to VRL")),
        Value::Simple(s) => {
            return Err(format!(
                "CBOR simple value {} cannot be passed to VRL",
                s.get()
            ));
        }
    })
}

/// A VRL value as our CBOR value (timestamps become RFC 3339 text).
pub(crate) fn from_vrl(v: Vv) -> Value {
    match v {
        Vv::Null => Value::Null,
        Vv::Boolean(b) => Value::Bool(b),
        Vv::Integer(i) => Value::Integer(Integer::from(i)),
        Vv::Float(f) => Value::Float(f.into_inner()),
        Vv::String(s) => Value::Text(CompactString::from(&*s)),
        Vv::Bytes(b) => match std::str::from_utf8(&b) {
            // VRL string functions produce bytes; keep UTF-8 as text.
            Ok(s) => Value::Text(CompactString::from(s)),
            Err(_) => Value::Bytes(b),
        },
        Vv::Regex(r) => Value::Text(CompactString::from(r.as_str())),
        Vv::Timestamp(t) => Value::Text(CompactString::from(t.to_rfc3339())),
        Vv::Array(a) => Value::Array(a.into_iter().map(from_vrl).collect()),
        Vv::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::text(k.as_str()), from_vrl(v)))
                .collect::<Map>(),
        ),
    }
}

/// Truthiness of a `route` condition: only `true` is true.
pub(crate) fn is_true(v: &Vv) -> bool {
    matches!(v, Vv::Boolean(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::FluxId;

    #[test]
    fn compile_errors_name_line_and_column_in_the_program() {
        let e = Vrl::compile(".a = 1\n.b = nope(.a)").unwrap_err();
        assert!(e.contains("line 2, column 6"), "{e}");
    }

    #[test]
    fn runs_on_data_and_writes_meta_back() {
        let vrl = Vrl::compile(".double = int!(.seq) * 2\n%meta.seen = \"yes\"").unwrap();
        let mut rt = Runtime::default();
        let mut msg = FluxMsg::new(
            FluxId::from_raw(1),
            Value::Map([("seq", 21)].into_iter().collect()),
        );
        vrl.run(&mut rt, &mut msg).unwrap();
        assert_eq!(msg.data.get("double"), Some(&Value::from(42)));
        assert_eq!(msg.meta.get("seen"), Some("yes"));
    }

    #[test]
    fn runtime_error_is_an_error() {
        let vrl = Vrl::compile(".x = int!(.seq)").unwrap();
        let mut rt = Runtime::default();
        let mut msg = FluxMsg::new(
            FluxId::from_raw(1),
            Value::Map([("seq", "nan")].into_iter().collect()),
        );
        assert!(
            vrl.run(&mut rt, &mut msg)
                .unwrap_err()
                .contains("VRL runtime error")
        );
    }

    #[test]
    fn values_round_trip_through_vrl() {
        let v = Value::Map(
            [
                ("i", Value::from(-3)),
                ("f", Value::Float(1.5)),
                ("t", Value::from("x")),
                ("a", Value::Array(vec![Value::Bool(true), Value::Null])),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(from_vrl(to_vrl(&v).unwrap()), v);
        assert!(to_vrl(&Value::from(u64::MAX)).is_err());
    }
}
