//! The Rack's WAL records: kind bytes and bodies, shared by the Rack that
//! writes them and the archive that reads them.
//!
//! A record's body is a deterministic-CBOR map with text keys:
//!
//! | kind | name | body |
//! |---:|---|---|
//! | 1 | [`INGRESS`] | `{"gear": text, "port": text, "msg": <fluxMsg>}` |
//! | 2 | [`EGRESS`] | `{"gear": text, "msg": <fluxMsg>}` |
//! | 3 | [`COMPLETED`] | `{"gear": text, "id": uint}` and optionally `"ts": uint` (Unix ns) and `"offset": uint` (the sink's output length after the message, e.g. `file_out`'s file) |
//! | 4 | [`DEAD_LETTER`] | `{"gear": text, "reason": text, "msg": <fluxMsg>}` |
//! | 5–31 | reserved | other Rack bookkeeping (sink offsets, compensation, …) |
//!
//! `<fluxMsg>` is the envelope map of `docs/design/fluxmsg.md`, nested as a
//! CBOR item (not a byte string), so a body is one deterministic CBOR item
//! and the same event always gives the same bytes.
//!
//! ```
//! use fluxrig_audit::records::{self, RackRecord};
//! use fluxrig_msg::{FluxId, FluxMsg, Value};
//!
//! let msg = FluxMsg::new(FluxId::from_raw(7), Value::from("hello"));
//! let body = records::encode_ingress("http", "out", &msg);
//! let RackRecord::Ingress { gear, port, msg: back } =
//!     RackRecord::decode(records::INGRESS, &body).unwrap()
//! else {
//!     unreachable!()
//! };
//! assert_eq!((gear.as_str(), port.as_str(), back), ("http", "out", msg));
//! ```

use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{DecodeError, FluxId, FluxMsg, Map, Value};

/// A message entered the Rack through a source gear.
pub const INGRESS: u8 = 1;
/// A message left the Rack through a sink gear.
pub const EGRESS: u8 = 2;
/// The ingress message with this fluxID is fully processed.
pub const COMPLETED: u8 = 3;
/// A message could not be processed and went to the dead-letter log.
pub const DEAD_LETTER: u8 = 4;
/// The highest kind the Rack reserves for its bookkeeping. Kinds above
/// [`DEAD_LETTER`] up to this one are the Rack's own (sink offsets,
/// compensation, …); the archive skips them and counts them.
pub const MAX_RACK_KIND: u8 = 31;

/// The name of a record kind, for logs and the manifest.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        INGRESS => "ingress",
        EGRESS => "egress",
        COMPLETED => "completed",
        DEAD_LETTER => "dead_letter",
        5..=MAX_RACK_KIND => "rack",
        _ => "unknown",
    }
}

/// A decoded Rack record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RackRecord {
    /// Kind [`INGRESS`].
    Ingress {
        /// The source gear.
        gear: String,
        /// The port it emitted the message on.
        port: String,
        /// The message.
        msg: FluxMsg,
    },
    /// Kind [`EGRESS`].
    Egress {
        /// The sink gear.
        gear: String,
        /// The message.
        msg: FluxMsg,
    },
    /// Kind [`COMPLETED`].
    Completed {
        /// The gear that completed it (the sink, or the source that saw the
        /// whole flow through).
        gear: String,
        /// fluxID of the ingress message.
        id: FluxId,
        /// When, Unix nanoseconds (0 = not recorded).
        ts: u64,
    },
    /// Kind [`DEAD_LETTER`].
    DeadLetter {
        /// The gear that failed the message.
        gear: String,
        /// Why.
        reason: String,
        /// The message.
        msg: FluxMsg,
    },
    /// Any other kind: Rack bookkeeping this crate does not interpret.
    Other {
        /// The kind byte.
        kind: u8,
    },
}

/// Why a record body is not what its kind says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The body is not a CBOR item (or not one within the limits).
    #[error("{kind} record body is not valid CBOR: {source}")]
    Cbor {
        /// The kind's name.
        kind: &'static str,
        /// The decoder's error (offsets only, never content).
        source: DecodeError,
    },
    /// A required field is missing or has the wrong type.
    #[error("{kind} record: field `{field}` {problem}")]
    Field {
        /// The kind's name.
        kind: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

impl RackRecord {
    /// Decodes a record body of the given kind. Kinds this crate does not
    /// interpret decode to [`RackRecord::Other`] without looking at the body.
    pub fn decode(kind: u8, body: &[u8]) -> Result<RackRecord, RecordError> {
        let name = kind_name(kind);
        if !matches!(kind, INGRESS | EGRESS | COMPLETED | DEAD_LETTER) {
            return Ok(RackRecord::Other { kind });
        }
        let value = cbor::from_slice(body, Limits::DEFAULT)
            .map_err(|source| RecordError::Cbor { kind: name, source })?;
        let Value::Map(mut map) = value else {
            return Err(RecordError::Field {
                kind: name,
                field: "<body>",
                problem: "must be a map",
            });
        };
        let gear = take_text(&mut map, name, "gear")?;
        Ok(match kind {
            INGRESS => RackRecord::Ingress {
                gear,
                port: take_text(&mut map, name, "port")?,
                msg: take_msg(&map, name)?,
            },
            EGRESS => RackRecord::Egress {
                gear,
                msg: take_msg(&map, name)?,
            },
            COMPLETED => RackRecord::Completed {
                gear,
                id: FluxId::from_raw(take_uint(&map, name, "id")?.ok_or(RecordError::Field {
                    kind: name,
                    field: "id",
                    problem: "is missing",
                })?),
                ts: take_uint(&map, name, "ts")?.unwrap_or(0),
            },
            _ => RackRecord::DeadLetter {
                gear,
                reason: take_text(&mut map, name, "reason")?,
                msg: take_msg(&map, name)?,
            },
        })
    }

    /// The record's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            RackRecord::Ingress { .. } => INGRESS,
            RackRecord::Egress { .. } => EGRESS,
            RackRecord::Completed { .. } => COMPLETED,
            RackRecord::DeadLetter { .. } => DEAD_LETTER,
            RackRecord::Other { kind } => *kind,
        }
    }

    /// The record's body (the exact bytes the matching `encode_*` gives).
    /// `None` for [`RackRecord::Other`], whose body this crate does not know.
    pub fn encode(&self) -> Option<Vec<u8>> {
        Some(match self {
            RackRecord::Ingress { gear, port, msg } => encode_ingress(gear, port, msg),
            RackRecord::Egress { gear, msg } => encode_egress(gear, msg),
            RackRecord::Completed { gear, id, ts } => encode_completed(gear, *id, *ts),
            RackRecord::DeadLetter { gear, reason, msg } => encode_dead_letter(gear, reason, msg),
            RackRecord::Other { .. } => return None,
        })
    }
}

/// The body of an [`INGRESS`] record.
pub fn encode_ingress(gear: &str, port: &str, msg: &FluxMsg) -> Vec<u8> {
    encode(&[("gear", gear.into()), ("port", port.into())], Some(msg))
}

/// The body of an [`EGRESS`] record.
pub fn encode_egress(gear: &str, msg: &FluxMsg) -> Vec<u8> {
    encode(&[("gear", gear.into())], Some(msg))
}

/// The body of a [`COMPLETED`] record; `ts` (Unix ns) is written when not 0.
pub fn encode_completed(gear: &str, id: FluxId, ts: u64) -> Vec<u8> {
    let mut fields = vec![("gear", Value::from(gear)), ("id", Value::from(id.get()))];
    if ts != 0 {
        fields.push(("ts", Value::from(ts)));
    }
    encode(&fields, None)
}

/// The body of a [`COMPLETED`] record of a sink with an output position:
/// `offset` is where its output ends after the message (a file's length),
/// read back by [`completed_offset`] when the Rack recovers.
pub fn encode_completed_at(gear: &str, id: FluxId, ts: u64, offset: u64) -> Vec<u8> {
    let mut fields = vec![
        ("gear", Value::from(gear)),
        ("id", Value::from(id.get())),
        ("offset", Value::from(offset)),
    ];
    if ts != 0 {
        fields.push(("ts", Value::from(ts)));
    }
    encode(&fields, None)
}

/// The `offset` of a [`COMPLETED`] record body, if it has one (see
/// [`encode_completed_at`]).
pub fn completed_offset(body: &[u8]) -> Result<Option<u64>, RecordError> {
    let value = cbor::from_slice(body, Limits::DEFAULT).map_err(|source| RecordError::Cbor {
        kind: "completed",
        source,
    })?;
    let Value::Map(map) = value else {
        return Err(RecordError::Field {
            kind: "completed",
            field: "<body>",
            problem: "must be a map",
        });
    };
    take_uint(&map, "completed", "offset")
}

/// The body of a [`DEAD_LETTER`] record.
pub fn encode_dead_letter(gear: &str, reason: &str, msg: &FluxMsg) -> Vec<u8> {
    encode(
        &[("gear", gear.into()), ("reason", reason.into())],
        Some(msg),
    )
}

/// Encodes the map `fields` (+ `msg`) deterministically. The envelope is
/// spliced in as its own encoding: a map's deterministic form is its sorted
/// entries' encodings one after the other, so this is byte for byte what
/// encoding a `Value::Map` holding the decoded envelope would give.
fn encode(fields: &[(&str, Value)], msg: Option<&FluxMsg>) -> Vec<u8> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(k, v)| (cbor::to_vec(&Value::from(*k)), cbor::to_vec(v)))
        .collect();
    if let Some(msg) = msg {
        entries.push((cbor::to_vec(&Value::from("msg")), msg.to_cbor()));
    }
    // Core deterministic order: bytewise order of the encoded keys.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(
        entries
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + 1,
    );
    // Fewer than 24 entries: the map header is one byte.
    debug_assert!(entries.len() < 24);
    #[allow(clippy::cast_possible_truncation)]
    out.push(0xa0 | entries.len() as u8);
    for (k, v) in entries {
        out.extend_from_slice(&k);
        out.extend_from_slice(&v);
    }
    out
}

fn take_text(
    map: &mut Map,
    kind: &'static str,
    field: &'static str,
) -> Result<String, RecordError> {
    match map.remove(field) {
        Some(Value::Text(t)) => Ok(t.into()),
        Some(_) => Err(RecordError::Field {
            kind,
            field,
            problem: "must be text",
        }),
        None => Err(RecordError::Field {
            kind,
            field,
            problem: "is missing",
        }),
    }
}

fn take_uint(
    map: &Map,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<u64>, RecordError> {
    match map.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_integer()
            .and_then(fluxrig_msg::Integer::as_u64)
            .map(Some)
            .ok_or(RecordError::Field {
                kind,
                field,
                problem: "must be an unsigned integer",
            }),
    }
}

fn take_msg(map: &Map, kind: &'static str) -> Result<FluxMsg, RecordError> {
    let v = map.get("msg").ok_or(RecordError::Field {
        kind,
        field: "msg",
        problem: "is missing",
    })?;
    if v.as_map().is_none() {
        return Err(RecordError::Field {
            kind,
            field: "msg",
            problem: "must be a fluxMsg envelope map",
        });
    }
    // Re-encoding a decoded value gives its deterministic bytes, which the
    // envelope decoder reads with the full validation (field types, limits).
    FluxMsg::from_cbor(&cbor::to_vec(v)).map_err(|source| RecordError::Cbor { kind, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::Meta;

    fn msg() -> FluxMsg {
        let mut m = FluxMsg::new(
            FluxId::from_raw(1_234_567),
            [("mti", Value::from("0100")), ("amount", Value::from(1250))]
                .into_iter()
                .collect::<Map>()
                .into(),
        );
        m.meta = [("conn", "7")].into_iter().collect::<Meta>();
        m.ts = 1_767_225_600_000_000_000;
        m
    }

    #[test]
    fn every_kind_round_trips_and_is_deterministic() {
        let recs = [
            RackRecord::Ingress {
                gear: "in".into(),
                port: "out".into(),
                msg: msg(),
            },
            RackRecord::Egress {
                gear: "sink".into(),
                msg: msg(),
            },
            RackRecord::Completed {
                gear: "sink".into(),
                id: FluxId::from_raw(9),
                ts: 0,
            },
            RackRecord::Completed {
                gear: "sink".into(),
                id: FluxId::from_raw(9),
                ts: 5,
            },
            RackRecord::DeadLetter {
                gear: "map".into(),
                reason: "VRL runtime error".into(),
                msg: msg(),
            },
        ];
        for r in recs {
            let body = r.encode().unwrap();
            assert!(cbor::is_deterministic(&body, Limits::DEFAULT), "{r:?}");
            assert_eq!(RackRecord::decode(r.kind(), &body).unwrap(), r);
            // The spliced encoding equals encoding the decoded value.
            let v = cbor::from_slice(&body, Limits::DEFAULT).unwrap();
            assert_eq!(cbor::to_vec(&v), body);
        }
    }

    #[test]
    fn completed_with_offset_round_trips() {
        let body = encode_completed_at("sink", FluxId::from_raw(9), 5, 1234);
        assert!(cbor::is_deterministic(&body, Limits::DEFAULT));
        assert_eq!(completed_offset(&body).unwrap(), Some(1234));
        assert_eq!(
            RackRecord::decode(COMPLETED, &body).unwrap(),
            RackRecord::Completed {
                gear: "sink".into(),
                id: FluxId::from_raw(9),
                ts: 5
            }
        );
        let plain = encode_completed("sink", FluxId::from_raw(9), 0);
        assert_eq!(completed_offset(&plain).unwrap(), None);
    }

    #[test]
    fn other_kinds_are_not_interpreted() {
        assert_eq!(
            RackRecord::decode(7, b"\xff not cbor").unwrap(),
            RackRecord::Other { kind: 7 }
        );
        assert_eq!(kind_name(7), "rack");
        assert_eq!(kind_name(200), "unknown");
    }

    #[test]
    fn bad_bodies_are_named_errors() {
        let err = RackRecord::decode(INGRESS, b"\xff").unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Cbor {
                    kind: "ingress",
                    ..
                }
            ),
            "{err}"
        );
        let body = encode_completed("g", FluxId::from_raw(1), 0);
        let err = RackRecord::decode(INGRESS, &body).unwrap_err();
        assert_eq!(err.to_string(), "ingress record: field `port` is missing");
        let err = RackRecord::decode(EGRESS, &cbor::to_vec(&Value::from(3))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "egress record: field `<body>` must be a map"
        );
        let bad_msg = encode(&[("gear", "g".into())], None);
        let err = RackRecord::decode(EGRESS, &bad_msg).unwrap_err();
        assert_eq!(err.to_string(), "egress record: field `msg` is missing");
    }
}
