//! The fluxMsg envelope and its deterministic CBOR form.
//!
//! On the wire a fluxMsg is one CBOR map with text keys (see
//! `docs/design/fluxmsg.md`):
//!
//! | key     | CBOR                               | default (omitted) |
//! |---------|------------------------------------|-------------------|
//! | `id`    | uint (fluxID)                      | required          |
//! | `ts`    | uint, Unix nanoseconds             | 0                 |
//! | `raw`   | bytes                              | absent            |
//! | `ref`   | uint (fluxID)                      | absent            |
//! | `src`   | uint (fluxEntityID)                | absent            |
//! | `data`  | any item                           | null              |
//! | `meta`  | map text → text                    | empty             |
//! | `path`  | array of `[gear uint, port text, ts uint]` | empty     |
//! | `flags` | uint (u32)                         | 0                 |
//! | `trace` | bytes(25): trace-id, parent-id, flags | absent         |
//!
//! Keys are listed in deterministic order. Any other text key is an
//! extension field: it is kept, in order, through decode and encode.
//! Defaults are omitted; bytes that spell a default out decode fine but are
//! not in deterministic form.

use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use compact_str::CompactString;
use minicbor::data::Type;

use crate::cbor::{Limits, Reader, Sink};
use crate::error::DecodeError;
use crate::id::{EntityId, FluxId};
use crate::value::{Map, Value, text_cmp};

/// System flag bits of a message.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

impl Flags {
    /// The message is delivered again after a Rack restart (replay recovery).
    pub const REDELIVERED: Flags = Flags(1 << 0);
    /// The message was made up by a generator (tests, demos, load).
    pub const SYNTHETIC: Flags = Flags(1 << 1);
    /// Sensitive fields were parked in the coat check and replaced by tokens.
    pub const PARKED: Flags = Flags(1 << 2);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#x})", self.0)
    }
}

/// A W3C trace context (`traceparent`, version 00).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte id of the parent span (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` string or trace byte string is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TraceParseError(&'static str);

impl TraceContext {
    const CBOR_LEN: usize = 25;

    /// True when the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
    ///
    /// Versions above 00 are read by their first four fields, as the W3C
    /// recommendation asks; version `ff` is invalid.
    pub fn parse(s: &str) -> Result<TraceContext, TraceParseError> {
        let b = s.as_bytes();
        if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
            return Err(TraceParseError(
                "traceparent must be 00-<32 hex>-<16 hex>-<2 hex>",
            ));
        }
        let version = hex_byte(&b[0..2]).ok_or(TraceParseError("bad traceparent version"))?;
        if version == 0xff || (version == 0 && b.len() != 55) {
            return Err(TraceParseError("unsupported traceparent version"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParseError(
                "traceparent must be 00-<32 hex>-<16 hex>-<2 hex>",
            ));
        }
        let mut t = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        for (i, out) in t.trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i]).ok_or(TraceParseError("bad trace-id"))?;
        }
        for (i, out) in t.span_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i]).ok_or(TraceParseError("bad parent-id"))?;
        }
        t.flags = hex_byte(&b[53..55]).ok_or(TraceParseError("bad trace-flags"))?;
        t.check()
    }

    fn check(self) -> Result<TraceContext, TraceParseError> {
        if self.trace_id == [0; 16] {
            return Err(TraceParseError("trace-id is all zero"));
        }
        if self.span_id == [0; 8] {
            return Err(TraceParseError("parent-id is all zero"));
        }
        Ok(self)
    }

    fn to_cbor_bytes(self) -> [u8; Self::CBOR_LEN] {
        let mut out = [0; Self::CBOR_LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    fn from_cbor_bytes(b: &[u8]) -> Result<TraceContext, TraceParseError> {
        if b.len() != Self::CBOR_LEN {
            return Err(TraceParseError("trace must be 25 bytes"));
        }
        let mut t = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: b[24],
        };
        t.trace_id.copy_from_slice(&b[..16]);
        t.span_id.copy_from_slice(&b[16..24]);
        t.check()
    }
}

fn hex_byte(b: &[u8]) -> Option<u8> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(nib(b[0])? << 4 | nib(b[1])?)
}

impl fmt::Display for TraceContext {
    /// The `traceparent` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

/// One hop of a message's path: the gear it passed, the port it left by,
/// and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// fluxEntityID of the gear.
    pub gear: EntityId,
    /// Name of the output port.
    pub port: CompactString,
    /// When the message left the port, Unix nanoseconds.
    pub ts: u64,
}

/// Text metadata: routing keys, protocol headers, connection ids.
///
/// Entries stay in deterministic key order (shorter keys first, then
/// bytewise), so iteration order is stable and encoding never sorts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Meta {
    entries: Vec<(CompactString, CompactString)>,
}

impl Meta {
    /// Empty metadata.
    pub fn new() -> Meta {
        Meta::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| text_cmp(k, key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.entries[i].1.as_str())
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(
        &mut self,
        key: impl Into<CompactString>,
        value: impl Into<CompactString>,
    ) -> Option<CompactString> {
        let key = key.into();
        let value = value.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<CompactString> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no metadata.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in deterministic order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> FromIterator<(K, V)> for Meta {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Meta::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// The envelope every message travels in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxMsg {
    /// The message's fluxID.
    pub id: FluxId,
    /// The message this one answers or derives from (JSON and CBOR key `ref`).
    pub reference: Option<FluxId>,
    /// W3C trace context.
    pub trace: Option<TraceContext>,
    /// fluxEntityID of the gear that emitted the message.
    pub src: Option<EntityId>,
    /// Text metadata.
    pub meta: Meta,
    /// Business fields (`null` when there are none).
    pub data: Value,
    /// System flag bits.
    pub flags: Flags,
    /// Original wire bytes, kept bit-perfect.
    pub raw: Option<Bytes>,
    /// Hops the message has taken.
    pub path: Vec<Hop>,
    /// Ingress time, Unix nanoseconds (0 = unknown).
    pub ts: u64,
    /// Extension fields this version does not know, kept as they came.
    extensions: Map,
}

/// Envelope fields, in deterministic order of their keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Field {
    Id,
    Ts,
    Raw,
    Ref,
    Src,
    Data,
    Meta,
    Path,
    Flags,
    Trace,
}

impl Field {
    pub(crate) const ALL: [Field; 10] = [
        Field::Id,
        Field::Ts,
        Field::Raw,
        Field::Ref,
        Field::Src,
        Field::Data,
        Field::Meta,
        Field::Path,
        Field::Flags,
        Field::Trace,
    ];

    /// The field's key in CBOR and JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Ts => "ts",
            Field::Raw => "raw",
            Field::Ref => "ref",
            Field::Src => "src",
            Field::Data => "data",
            Field::Meta => "meta",
            Field::Path => "path",
            Field::Flags => "flags",
            Field::Trace => "trace",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Field> {
        // A match compiles to a switch on the length and one comparison,
        // cheaper than scanning `ALL` (this runs for every envelope key).
        Some(match name {
            "id" => Field::Id,
            "ts" => Field::Ts,
            "raw" => Field::Raw,
            "ref" => Field::Ref,
            "src" => Field::Src,
            "data" => Field::Data,
            "meta" => Field::Meta,
            "path" => Field::Path,
            "flags" => Field::Flags,
            "trace" => Field::Trace,
            _ => return None,
        })
    }
}

/// Why an extension field cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is an envelope field, not an extension")]
pub struct ReservedField(pub String);

impl FluxMsg {
    /// A message with the given id and data, every other field empty.
    pub fn new(id: FluxId, data: Value) -> FluxMsg {
        FluxMsg {
            id,
            reference: None,
            trace: None,
            src: None,
            meta: Meta::new(),
            data,
            flags: Flags::default(),
            raw: None,
            path: Vec::new(),
            ts: 0,
            extensions: Map::new(),
        }
    }

    /// Extension fields (unknown to this version), in deterministic order.
    pub fn extensions(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.extensions
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default(), v))
    }

    /// Sets an extension field. Envelope field names are refused.
    pub fn set_extension(&mut self, name: &str, value: Value) -> Result<(), ReservedField> {
        if Field::from_name(name).is_some() {
            return Err(ReservedField(name.to_owned()));
        }
        self.extensions.insert(Value::text(name), value);
        Ok(())
    }

    // -- encoding ---------------------------------------------------------

    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out);
        out
    }

    /// Appends the deterministic CBOR encoding to `out` (reuse a buffer on
    /// hot paths).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut s = Sink::new(out);
        let present = |f: Field| match f {
            Field::Id => true,
            Field::Ts => self.ts != 0,
            Field::Raw => self.raw.is_some(),
            Field::Ref => self.reference.is_some(),
            Field::Src => self.src.is_some(),
            Field::Data => !self.data.is_null(),
            Field::Meta => !self.meta.is_empty(),
            Field::Path => !self.path.is_empty(),
            Field::Flags => self.flags.0 != 0,
            Field::Trace => self.trace.is_some(),
        };
        let count = Field::ALL.into_iter().filter(|f| present(*f)).count();
        s.map(count + self.extensions.len());
        let mut ext = self.extensions.iter().peekable();
        for field in Field::ALL.into_iter().filter(|f| present(*f)) {
            let name = field.name();
            // Extensions whose keys sort before this field go first.
            while let Some((k, v)) = ext
                .next_if(|(k, _)| text_cmp(k.as_str().unwrap_or_default(), name) == Ordering::Less)
            {
                s.value(k);
                s.value(v);
            }
            s.text(name);
            self.encode_field(field, &mut s);
        }
        for (k, v) in ext {
            s.value(k);
            s.value(v);
        }
    }

    fn encode_field(&self, field: Field, s: &mut Sink<'_>) {
        match field {
            Field::Id => s.u64(self.id.get()),
            Field::Ts => s.u64(self.ts),
            Field::Raw => s.bytes(self.raw.as_deref().unwrap_or_default()),
            Field::Ref => s.u64(self.reference.map_or(0, FluxId::get)),
            Field::Src => s.u64(self.src.map_or(0, EntityId::get)),
            Field::Data => s.value(&self.data),
            Field::Meta => {
                s.map(self.meta.len());
                for (k, v) in self.meta.iter() {
                    s.text(k);
                    s.text(v);
                }
            }
            Field::Path => {
                s.array(self.path.len());
                for hop in &self.path {
                    s.array(3);
                    s.u64(hop.gear.get());
                    s.text(&hop.port);
                    s.u64(hop.ts);
                }
            }
            Field::Flags => s.u64(u64::from(self.flags.0)),
            Field::Trace => {
                s.bytes(
                    &self
                        .trace
                        .map(TraceContext::to_cbor_bytes)
                        .unwrap_or_default(),
                );
            }
        }
    }

    // -- decoding ---------------------------------------------------------

    /// Decodes one message that fills `input` exactly.
    pub fn from_cbor(input: &[u8]) -> Result<FluxMsg, DecodeError> {
        Self::from_cbor_with(input, Limits::DEFAULT)
    }

    /// Decodes one message that fills `input` exactly, under `limits`.
    pub fn from_cbor_with(input: &[u8], limits: Limits) -> Result<FluxMsg, DecodeError> {
        decode_exact(input, None, limits)
    }

    /// Decodes one message from a `Bytes` buffer; `raw` and byte strings in
    /// `data` share the buffer instead of being copied.
    pub fn from_bytes(input: &Bytes, limits: Limits) -> Result<FluxMsg, DecodeError> {
        decode_exact(input, Some(input), limits)
    }

    /// Decodes the first message of a CBOR sequence (RFC 8742); returns it and
    /// the number of bytes it took.
    pub fn decode_prefix(input: &[u8], limits: Limits) -> Result<(FluxMsg, usize), DecodeError> {
        let window = &input[..input.len().min(limits.max_size)];
        let mut r = Reader::new(window, None, limits);
        match decode_envelope(&mut r) {
            Ok(m) => Ok((m, r.position())),
            // Running out of the window means the item is larger than allowed.
            Err(DecodeError::Truncated { .. } | DecodeError::LengthExceedsInput { .. })
                if input.len() > limits.max_size =>
            {
                Err(DecodeError::TooLarge {
                    size: input.len(),
                    limit: limits.max_size,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// True when `input` is one message in deterministic form: re-encoding
    /// what it decodes to gives the same bytes.
    pub fn is_deterministic(input: &[u8]) -> bool {
        Self::from_cbor(input).is_ok_and(|m| m.to_cbor() == input)
    }
}

fn decode_exact(
    input: &[u8],
    owner: Option<&Bytes>,
    limits: Limits,
) -> Result<FluxMsg, DecodeError> {
    if input.len() > limits.max_size {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_size,
        });
    }
    let mut r = Reader::new(input, owner, limits);
    let m = decode_envelope(&mut r)?;
    if r.position() != input.len() {
        return Err(DecodeError::TrailingBytes {
            offset: r.position(),
        });
    }
    Ok(m)
}

fn schema(offset: usize, field: impl Into<String>, reason: &'static str) -> DecodeError {
    DecodeError::Schema {
        offset,
        field: field.into(),
        reason,
    }
}

/// Reads an unsigned integer field; `field` names it in the error (built
/// only then: formatting names on the happy path costs more than decoding).
fn uint(r: &mut Reader<'_>, field: impl FnOnce() -> String) -> Result<u64, DecodeError> {
    if let Some(v) = r.try_u64() {
        return Ok(v);
    }
    let at = r.position();
    match r.peek()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => r.u64(),
        _ => Err(schema(at, field(), "expected an unsigned integer")),
    }
}

fn text<'b>(r: &mut Reader<'b>, field: impl FnOnce() -> String) -> Result<&'b str, DecodeError> {
    if let Some(s) = r.try_text() {
        return s;
    }
    let at = r.position();
    match r.peek()? {
        Type::String => r.text(),
        _ => Err(schema(at, field(), "expected a text string")),
    }
}

fn decode_envelope(r: &mut Reader<'_>) -> Result<FluxMsg, DecodeError> {
    let at = r.position();
    if r.peek()? != Type::Map {
        return Err(schema(at, "<envelope>", "a fluxMsg must be a CBOR map"));
    }
    let len = r.map()?;
    let mut msg = FluxMsg::new(FluxId::from_raw(0), Value::Null);
    let mut seen = [false; Field::ALL.len()];
    let mut ext = Vec::new();
    let mut ext_offsets = Vec::new();
    for _ in 0..len {
        let key_at = r.position();
        let name = text(r, || "<envelope>".to_owned()).map_err(|e| match e {
            DecodeError::Schema { offset, .. } => {
                schema(offset, "<envelope>", "envelope keys must be text")
            }
            e => e,
        })?;
        let Some(field) = Field::from_name(name) else {
            ext_offsets.push(key_at);
            let name = Value::text(name);
            ext.push((name, r.value(1)?));
            continue;
        };
        if std::mem::replace(&mut seen[field as usize], true) {
            return Err(DecodeError::DuplicateKey { offset: key_at });
        }
        decode_field(r, field, &mut msg)?;
    }
    if !seen[Field::Id as usize] {
        return Err(schema(at, "id", "required field is missing"));
    }
    msg.extensions = Map::from_entries(ext).map_err(|i| DecodeError::DuplicateKey {
        offset: ext_offsets[i],
    })?;
    Ok(msg)
}

fn decode_field(r: &mut Reader<'_>, field: Field, msg: &mut FluxMsg) -> Result<(), DecodeError> {
    let at = r.position();
    let name = field.name();
    let named = || name.to_owned();
    match field {
        Field::Id => msg.id = FluxId::from_raw(uint(r, named)?),
        Field::Ts => msg.ts = uint(r, named)?,
        Field::Ref => msg.reference = Some(FluxId::from_raw(uint(r, named)?)),
        Field::Src => msg.src = Some(EntityId::from_raw(uint(r, named)?)),
        Field::Flags => {
            let v = uint(r, named)?;
            msg.flags =
                Flags(u32::try_from(v).map_err(|_| schema(at, name, "flags must fit in 32 bits"))?);
        }
        Field::Raw => {
            if r.peek()? != Type::Bytes {
                return Err(schema(at, name, "expected a byte string"));
            }
            msg.raw = Some(r.bytes()?);
        }
        Field::Trace => {
            if r.peek()? != Type::Bytes {
                return Err(schema(at, name, "expected a byte string"));
            }
            let b = r.byte_slice()?;
            msg.trace =
                Some(TraceContext::from_cbor_bytes(b).map_err(|_| {
                    schema(at, name, "expected 25 bytes: trace-id, parent-id, flags")
                })?);
        }
        Field::Data => msg.data = r.value(1)?,
        Field::Meta => {
            if r.peek()? != Type::Map {
                return Err(schema(at, name, "expected a map of text to text"));
            }
            let len = r.map()?;
            let mut entries: Vec<(CompactString, CompactString)> = Vec::with_capacity(len.min(64));
            // As in `Reader::map_entries`: offsets are kept only from the
            // first key out of order, where any duplicate's later key is.
            let mut unsorted_from = None;
            let mut offsets = Vec::new();
            for i in 0..len {
                let key_at = r.position();
                let k = text(r, || "meta".to_owned())?;
                if unsorted_from.is_none()
                    && entries
                        .last()
                        .is_some_and(|(prev, _)| text_cmp(prev, k) != Ordering::Less)
                {
                    unsorted_from = Some(i);
                }
                if unsorted_from.is_some() {
                    offsets.push(key_at);
                }
                let v = text(r, || format!("meta.{k}"))?;
                entries.push((CompactString::from(k), CompactString::from(v)));
            }
            if let Some(first) = unsorted_from {
                let mut idx: Vec<usize> = (0..entries.len()).collect();
                idx.sort_by(|&a, &b| text_cmp(&entries[a].0, &entries[b].0));
                if let Some(w) = idx.windows(2).find(|w| entries[w[0]].0 == entries[w[1]].0) {
                    let dup = w[0].max(w[1]);
                    return Err(DecodeError::DuplicateKey {
                        offset: dup
                            .checked_sub(first)
                            .and_then(|j| offsets.get(j).copied())
                            .unwrap_or(at),
                    });
                }
                entries.sort_by(|a, b| text_cmp(&a.0, &b.0));
            }
            msg.meta = Meta { entries };
        }
        Field::Path => {
            if r.peek()? != Type::Array {
                return Err(schema(at, name, "expected an array of hops"));
            }
            let len = r.array()?;
            if len > r.limits.max_hops {
                return Err(DecodeError::TooManyHops {
                    offset: at,
                    limit: r.limits.max_hops,
                });
            }
            r.deeper(1, at)?;
            msg.path.reserve_exact(len);
            for i in 0..len {
                msg.path.push(decode_hop(r, i)?);
            }
        }
    }
    Ok(())
}

fn decode_hop(r: &mut Reader<'_>, i: usize) -> Result<Hop, DecodeError> {
    let at = r.position();
    let bad = || schema(at, format!("path[{i}]"), "expected [gear, port, ts]");
    if r.peek()? != Type::Array {
        return Err(bad());
    }
    if r.array()? != 3 {
        return Err(bad());
    }
    let gear = EntityId::from_raw(uint(r, || format!("path[{i}].gear"))?);
    let port = CompactString::from(text(r, || format!("path[{i}].port"))?);
    let ts = uint(r, || format!("path[{i}].ts"))?;
    Ok(Hop { gear, port, ts })
}
