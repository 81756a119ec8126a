//! Message formats shared by the file and console gears.

use std::io::Write;

use fluxrig_msg::json::{JsonMsg, JsonValue};
use fluxrig_msg::{FluxMsg, Limits, Map, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a source reads messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InFormat {
    /// One message per line: `data` is `{"line": "<text>"}`.
    #[default]
    Lines,
    /// One JSON value per line: it becomes `data`.
    Jsonl,
    /// A CBOR sequence (RFC 8742) of fluxMsg envelopes, as `fluxrig msg
    /// encode --lines` and `file_out` with `format: cbor` write them.
    Cbor,
}

/// How a sink writes messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutFormat {
    /// One JSON object per line: the message's `data` (or its whole JSON
    /// form with `envelope: true`).
    #[default]
    Jsonl,
    /// One line per message: `data` when it is text, `data.line` when that is
    /// text, else `data` as JSON.
    Lines,
    /// A CBOR sequence of fluxMsg envelopes (deterministic CBOR).
    Cbor,
}

/// Turns one input line into a message's data, or says why it cannot.
pub(crate) fn line_to_data(format: InFormat, line: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    match format {
        InFormat::Lines | InFormat::Cbor => {
            let mut m = Map::with_capacity(1);
            m.insert("line", text);
            Ok(Value::Map(m))
        }
        InFormat::Jsonl => {
            let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                format!(
                    "invalid JSON at column {}: {}",
                    e.column(),
                    e.to_string().split(" at line").next().unwrap_or_default()
                )
            })?;
            fluxrig_msg::json::value(&json, "data").map_err(|e| e.to_string())
        }
    }
}

/// Decodes the next envelope of a CBOR sequence held in `buf[at..]`.
/// `Ok(None)` means more bytes are needed.
pub(crate) fn next_envelope(
    buf: &[u8],
    at: usize,
    eof: bool,
) -> Result<Option<(FluxMsg, usize)>, String> {
    match FluxMsg::decode_prefix(&buf[at..], Limits::DEFAULT) {
        Ok((m, used)) => Ok(Some((m, used))),
        Err(
            fluxrig_msg::DecodeError::Truncated { .. }
            | fluxrig_msg::DecodeError::LengthExceedsInput { .. },
        ) if !eof => Ok(None),
        Err(e) => Err(e.shifted(at).to_string()),
    }
}

/// Appends one message in `format` to `out`.
pub(crate) fn write_msg(
    out: &mut Vec<u8>,
    format: OutFormat,
    envelope: bool,
    msg: &FluxMsg,
) -> Result<(), String> {
    match format {
        OutFormat::Cbor => {
            msg.encode(out);
            return Ok(());
        }
        OutFormat::Jsonl if envelope => {
            serde_json::to_writer(&mut *out, &JsonMsg(msg))
                .map_err(|e| format!("no JSON form: {e}"))?;
        }
        OutFormat::Jsonl => {
            serde_json::to_writer(&mut *out, &JsonValue(&msg.data))
                .map_err(|e| format!("no JSON form: {e}"))?;
        }
        OutFormat::Lines => {
            let text = match &msg.data {
                Value::Text(t) => Some(t.as_str()),
                d => d.get("line").and_then(Value::as_str),
            };
            match text {
                Some(t) => out.extend_from_slice(t.as_bytes()),
                None => serde_json::to_writer(&mut *out, &JsonValue(&msg.data))
                    .map_err(|e| format!("no JSON form: {e}"))?,
            }
        }
    }
    let _ = out.write_all(b"\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::FluxId;

    #[test]
    fn jsonl_lines_become_data() {
        let d = line_to_data(InFormat::Jsonl, br#"{"a": 1, "b": [true]}"#).unwrap();
        assert_eq!(d.get("a"), Some(&Value::from(1)));
        assert!(
            line_to_data(InFormat::Jsonl, b"{nope")
                .unwrap_err()
                .starts_with("invalid JSON at column 2")
        );
        assert!(
            line_to_data(InFormat::Lines, b"\xff")
                .unwrap_err()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn writes_each_format() {
        let msg = FluxMsg::new(
            FluxId::from_raw(3),
            Value::Map([("line", "hello")].into_iter().collect()),
        );
        let mut out = Vec::new();
        write_msg(&mut out, OutFormat::Lines, false, &msg).unwrap();
        write_msg(&mut out, OutFormat::Jsonl, false, &msg).unwrap();
        write_msg(&mut out, OutFormat::Jsonl, true, &msg).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hello\n{\"line\":\"hello\"}\n{\"id\":\"3\",\"data\":{\"line\":\"hello\"}}\n"
        );
        let mut cbor = Vec::new();
        write_msg(&mut cbor, OutFormat::Cbor, false, &msg).unwrap();
        let (back, used) = next_envelope(&cbor, 0, true).unwrap().unwrap();
        assert_eq!((back, used), (msg, cbor.len()));
    }
}
