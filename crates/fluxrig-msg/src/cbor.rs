//! Deterministic CBOR (RFC 8949 §4.2.1) on top of `minicbor`.
//!
//! `minicbor` does the low-level work: reading and writing heads, checking
//! well-formedness and UTF-8. This module adds the deterministic profile:
//!
//! * integers, lengths and tags use the shortest argument (minicbor's encoder
//!   always does);
//! * floats use the shortest of half, single or double precision that keeps
//!   the value exactly; every NaN is written as the canonical `f9 7e00`;
//! * only definite lengths are written, and indefinite lengths are rejected on
//!   input;
//! * map keys are sorted by the bytewise order of their encodings (the
//!   [`Map`] type keeps them sorted), and duplicate keys are rejected.
//!
//! The decoder accepts any well-formed definite-length CBOR within
//! [`Limits`], whatever its serialisation; re-encoding yields the
//! deterministic form. Bytes are deterministic exactly when re-encoding what
//! they decode to gives them back.

use std::cmp::Ordering;
use std::convert::Infallible;

use bytes::Bytes;
use minicbor::data::Type;
use minicbor::encode::Encoder;

use crate::error::DecodeError;
use crate::value::{Integer, Map, Value, key_cmp, text_cmp};

/// Bounds the decoder enforces before it allocates anything for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded message, in bytes.
    pub max_size: usize,
    /// Deepest accepted nesting of arrays, maps and tags.
    pub max_depth: u32,
    /// Most hops accepted in a message's `path`.
    pub max_hops: usize,
}

impl Limits {
    /// 4 MiB messages, nesting depth 64, 256 hops.
    pub const DEFAULT: Limits = Limits {
        max_size: 4 << 20,
        max_depth: 64,
        max_hops: 256,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// A minicbor encoder writing into a `Vec`, which cannot fail.
pub(crate) struct Sink<'a>(Encoder<&'a mut Vec<u8>>);

/// Discards the result of a write into a `Vec`: its only error type is
/// `Infallible`, so there is nothing to handle.
#[inline]
#[allow(clippy::needless_pass_by_value)] // takes the result to consume it
fn infallible<T>(r: Result<T, minicbor::encode::Error<Infallible>>) {
    debug_assert!(r.is_ok(), "writing CBOR into a Vec cannot fail");
}

impl<'a> Sink<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Sink<'a> {
        Sink(Encoder::new(out))
    }

    #[inline]
    pub(crate) fn u64(&mut self, v: u64) {
        infallible(self.0.u64(v));
    }

    #[inline]
    pub(crate) fn text(&mut self, s: &str) {
        infallible(self.0.str(s));
    }

    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        infallible(self.0.bytes(b));
    }

    #[inline]
    pub(crate) fn array(&mut self, len: usize) {
        infallible(self.0.array(len as u64));
    }

    #[inline]
    pub(crate) fn map(&mut self, len: usize) {
        infallible(self.0.map(len as u64));
    }

    #[inline]
    fn integer(&mut self, i: Integer) {
        let v = i.get();
        if let Ok(u) = u64::try_from(v) {
            infallible(self.0.u64(u));
        } else {
            // In range by construction of `Integer`: -2^64 <= v < 0.
            let int = minicbor::data::Int::try_from(v);
            debug_assert!(int.is_ok());
            if let Ok(int) = int {
                infallible(self.0.int(int));
            }
        }
    }

    #[inline]
    fn float(&mut self, x: f64) {
        if x.is_nan() {
            // The canonical NaN of RFC 8949 §4.2.2.
            self.0.writer_mut().extend_from_slice(&[0xf9, 0x7e, 0x00]);
            return;
        }
        let h = half::f16::from_f64(x);
        if h.to_f64().to_bits() == x.to_bits() {
            self.0.writer_mut().push(0xf9);
            self.0
                .writer_mut()
                .extend_from_slice(&h.to_bits().to_be_bytes());
            return;
        }
        #[allow(clippy::cast_possible_truncation)] // checked exact just below
        let s = x as f32;
        if f64::from(s).to_bits() == x.to_bits() {
            infallible(self.0.f32(s));
        } else {
            infallible(self.0.f64(x));
        }
    }

    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Integer(i) => self.integer(*i),
            Value::Bytes(b) => self.bytes(b),
            Value::Text(s) => self.text(s),
            Value::Array(a) => {
                self.array(a.len());
                for x in a {
                    self.value(x);
                }
            }
            Value::Map(m) => self.map_value(m),
            Value::Tag(t, x) => {
                infallible(self.0.tag(minicbor::data::Tag::new(*t)));
                self.value(x);
            }
            Value::Bool(b) => infallible(self.0.bool(*b)),
            Value::Null => infallible(self.0.null()),
            Value::Undefined => infallible(self.0.undefined()),
            Value::Simple(s) => infallible(self.0.simple(s.get())),
            Value::Float(x) => self.float(*x),
        }
    }

    pub(crate) fn map_value(&mut self, m: &Map) {
        self.map(m.len());
        for (k, v) in m {
            self.value(k);
            self.value(v);
        }
    }
}

/// Appends the deterministic encoding of `v` to `out`.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    Sink::new(out).value(v);
}

/// The deterministic encoding of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, &mut out);
    out
}

/// True when the two floats encode identically (all NaNs are one NaN).
pub(crate) fn float_bits_eq(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

// ---------------------------------------------------------------------------
// Decoding

/// A decoder over one input buffer that enforces [`Limits`] and maps
/// minicbor's errors onto [`DecodeError`] with byte offsets.
///
/// The items that make up nearly all of a message (unsigned integers, byte
/// and text strings, array and map heads with a definite length) are read
/// on a fast path that parses their head here; everything else, and every
/// case the fast path does not recognise (truncated heads, indefinite
/// lengths, reserved values), goes to minicbor, which reports what is wrong.
/// minicbor's API reads each head twice (`datatype`, then the typed read)
/// and returns a large error type from every call; together with validating
/// text in runs (see [`Reader::utf8`]) the fast path takes decoding of a
/// typical payment message from about 38,000 to 22,000 instructions
/// (`docs/BENCHMARKS.md`).
pub(crate) struct Reader<'b> {
    pub(crate) d: minicbor::Decoder<'b>,
    input: &'b [u8],
    /// When the input lives in a `Bytes`, byte strings are sliced from it
    /// instead of copied.
    owner: Option<&'b Bytes>,
    pub(crate) limits: Limits,
    /// The current run of ASCII in the input (validated as UTF-8 once), and
    /// where it starts (see [`Reader::utf8`]).
    run: &'b str,
    run_start: usize,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(input: &'b [u8], owner: Option<&'b Bytes>, limits: Limits) -> Reader<'b> {
        Reader {
            d: minicbor::Decoder::new(input),
            input,
            owner,
            limits,
            run: "",
            run_start: 0,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.d.position()
    }

    fn remaining(&self) -> usize {
        self.input.len() - self.d.position()
    }

    /// Maps a minicbor error raised while reading the item that starts at `at`.
    fn err(&self, e: &minicbor::decode::Error, at: usize) -> DecodeError {
        if e.is_end_of_input() {
            DecodeError::Truncated {
                offset: self.input.len(),
            }
        } else {
            DecodeError::Malformed {
                offset: e.position().unwrap_or(at),
                reason: "malformed item",
            }
        }
    }

    /// The type of the next item, rejecting what the deterministic profile
    /// (and well-formedness) rules out.
    #[inline]
    pub(crate) fn peek(&self) -> Result<Type, DecodeError> {
        let at = self.position();
        // The common types, from the initial byte alone (as minicbor does).
        match self.input.get(at) {
            Some(0x00..=0x18) => return Ok(Type::U8),
            Some(0x19) => return Ok(Type::U16),
            Some(0x1a) => return Ok(Type::U32),
            Some(0x1b) => return Ok(Type::U64),
            Some(0x40..=0x5b) => return Ok(Type::Bytes),
            Some(0x60..=0x7b) => return Ok(Type::String),
            Some(0x80..=0x9b) => return Ok(Type::Array),
            Some(0xa0..=0xbb) => return Ok(Type::Map),
            _ => {}
        }
        let ty = self.d.datatype().map_err(|e| self.err(&e, at))?;
        match ty {
            Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
                Err(DecodeError::IndefiniteLength { offset: at })
            }
            Type::Break => Err(DecodeError::Malformed {
                offset: at,
                reason: "unexpected break",
            }),
            Type::Unknown(_) => Err(DecodeError::Malformed {
                offset: at,
                reason: "reserved additional information",
            }),
            ty => Ok(ty),
        }
    }

    /// Reads the head of the next item when it has major type `major` and a
    /// definite argument that is all in the input; returns the item's offset
    /// and the argument. Otherwise reads nothing: the caller takes minicbor's
    /// path, which reports what is wrong.
    #[inline]
    fn definite_head(&mut self, major: u8) -> Option<(usize, u64)> {
        let at = self.position();
        let initial = *self.input.get(at)?;
        if initial >> 5 != major || initial & 0x1f > 27 {
            return None;
        }
        let (arg, head) = declared_length(&self.input[at..])?;
        self.d.set_position(at + head);
        Some((at, arg))
    }

    /// The `len` bytes after the head of the string at `at`, if the input
    /// holds them.
    #[inline]
    fn content(&self, at: usize, len: u64) -> Result<(usize, usize), DecodeError> {
        let start = self.position();
        usize::try_from(len)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= self.input.len())
            .map(|end| (start, end))
            .ok_or_else(|| self.length_error(at))
    }

    /// `input[start..end]` as text, or `None` when it is not valid UTF-8.
    ///
    /// Validating each short string on its own costs more than the rest of
    /// its decoding. So runs of ASCII in the input are found and validated
    /// once, and strings inside a run are sliced from it: text heads are
    /// ASCII, so the keys and text values of a map usually share a run. A
    /// string starting past the current run starts a new one; a string that
    /// is not inside a run (non-ASCII text) is validated on its own. Runs
    /// never overlap, so no byte is scanned for a run twice.
    #[inline]
    fn utf8(&mut self, start: usize, end: usize) -> Option<&'b str> {
        if start >= self.run_start + self.run.len() {
            self.new_run(start);
        }
        start
            .checked_sub(self.run_start)
            .and_then(|from| self.run.get(from..end - self.run_start))
            .or_else(|| std::str::from_utf8(&self.input[start..end]).ok())
    }

    /// Makes the run of ASCII starting at `start` the current run.
    #[inline(never)]
    fn new_run(&mut self, start: usize) {
        let tail = &self.input[start..];
        // ASCII is valid UTF-8, so this never fails.
        self.run = std::str::from_utf8(&tail[..ascii_prefix(tail)]).unwrap_or_default();
        self.run_start = start;
    }

    /// The next item as an unsigned integer when its head plainly says it
    /// is one (the fast path of [`Reader::u64`]); `None` reads nothing.
    #[inline]
    pub(crate) fn try_u64(&mut self) -> Option<u64> {
        self.definite_head(0).map(|(_, v)| v)
    }

    /// The next item as text when its head plainly says it is text (the
    /// fast path of [`Reader::text`]); `None` reads nothing.
    #[inline]
    pub(crate) fn try_text(&mut self) -> Option<Result<&'b str, DecodeError>> {
        let (at, len) = self.definite_head(3)?;
        Some(self.text_content(at, len))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        if let Some(v) = self.try_u64() {
            return Ok(v);
        }
        let at = self.position();
        self.d.u64().map_err(|e| self.err(&e, at))
    }

    /// The content of the text string at `at`, whose head (declaring `len`
    /// bytes) has been read.
    #[inline]
    fn text_content(&mut self, at: usize, len: u64) -> Result<&'b str, DecodeError> {
        let (start, end) = self.content(at, len)?;
        let s = self
            .utf8(start, end)
            .ok_or(DecodeError::InvalidUtf8 { offset: at })?;
        self.d.set_position(end);
        Ok(s)
    }

    pub(crate) fn text(&mut self) -> Result<&'b str, DecodeError> {
        if let Some(s) = self.try_text() {
            return s;
        }
        let at = self.position();
        self.d.str().map_err(|e| {
            if e.is_end_of_input() {
                self.length_error(at)
            } else {
                DecodeError::InvalidUtf8 { offset: at }
            }
        })
    }

    /// A byte string, borrowed from the input.
    pub(crate) fn byte_slice(&mut self) -> Result<&'b [u8], DecodeError> {
        if let Some((at, len)) = self.definite_head(2) {
            let (start, end) = self.content(at, len)?;
            self.d.set_position(end);
            return Ok(&self.input[start..end]);
        }
        let at = self.position();
        self.d.bytes().map_err(|e| {
            if e.is_end_of_input() {
                self.length_error(at)
            } else {
                self.err(&e, at)
            }
        })
    }

    /// A byte string, sliced from the owning buffer when there is one.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let slice = self.byte_slice()?;
        Ok(match self.owner {
            Some(owner) => owner.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }

    /// A string whose declared length runs past the input: say so, naming
    /// the declared length, rather than a bare "truncated".
    fn length_error(&self, at: usize) -> DecodeError {
        match declared_length(&self.input[at..]) {
            Some((len, head)) if len > (self.input.len() - at - head) as u64 => {
                DecodeError::LengthExceedsInput {
                    offset: at,
                    declared: len,
                    available: (self.input.len() - at - head) as u64,
                }
            }
            _ => DecodeError::Truncated {
                offset: self.input.len(),
            },
        }
    }

    /// Reads a definite array header; its length is checked against the
    /// bytes left (each element takes at least one byte).
    pub(crate) fn array(&mut self) -> Result<usize, DecodeError> {
        if let Some((at, len)) = self.definite_head(4) {
            return self.check_count(at, len, 1);
        }
        let at = self.position();
        let len = self.d.array().map_err(|e| self.err(&e, at))?;
        let len = len.ok_or(DecodeError::IndefiniteLength { offset: at })?;
        self.check_count(at, len, 1)
    }

    /// Reads a definite map header; each entry takes at least two bytes.
    pub(crate) fn map(&mut self) -> Result<usize, DecodeError> {
        if let Some((at, len)) = self.definite_head(5) {
            return self.check_count(at, len, 2);
        }
        let at = self.position();
        let len = self.d.map().map_err(|e| self.err(&e, at))?;
        let len = len.ok_or(DecodeError::IndefiniteLength { offset: at })?;
        self.check_count(at, len, 2)
    }

    fn check_count(&self, at: usize, len: u64, min_item: u64) -> Result<usize, DecodeError> {
        let available = self.remaining() as u64;
        if len.saturating_mul(min_item) > available {
            return Err(DecodeError::LengthExceedsInput {
                offset: at,
                declared: len,
                available,
            });
        }
        // Bounded by the input length just above.
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// Decodes one data item of any type.
    #[inline]
    pub(crate) fn value(&mut self, depth: u32) -> Result<Value, DecodeError> {
        // Text and unsigned integers are most items of a message: read them
        // without classifying them first.
        match self.input.get(self.position()).map(|b| b >> 5) {
            Some(0) => {
                if let Some(v) = self.try_u64() {
                    return Ok(Value::Integer(v.into()));
                }
            }
            Some(3) => {
                if let Some(s) = self.try_text() {
                    return s.map(|s| Value::Text(s.into()));
                }
            }
            _ => {}
        }
        self.any_value(depth)
    }

    /// Decodes one data item of any type (the general path of `value`).
    fn any_value(&mut self, depth: u32) -> Result<Value, DecodeError> {
        let at = self.position();
        let ty = self.peek()?;
        let e = |r: &Self, err: minicbor::decode::Error| r.err(&err, at);
        Ok(match ty {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::Integer(self.u64()?.into()),
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
                let i = self.d.int().map_err(|x| e(self, x))?;
                let i = Integer::try_from(i128::from(i)).map_err(|_| DecodeError::Malformed {
                    offset: at,
                    reason: "integer range",
                })?;
                Value::Integer(i)
            }
            Type::F16 | Type::F32 | Type::F64 => {
                Value::Float(self.d.f64().map_err(|x| e(self, x))?)
            }
            Type::Bool => Value::Bool(self.d.bool().map_err(|x| e(self, x))?),
            Type::Null => {
                self.d.null().map_err(|x| e(self, x))?;
                Value::Null
            }
            Type::Undefined => {
                self.d.undefined().map_err(|x| e(self, x))?;
                Value::Undefined
            }
            Type::Simple => {
                let two_byte = self.input.get(at) == Some(&0xf8);
                let s = self.d.simple().map_err(|x| e(self, x))?;
                // A two-byte simple value below 32 is not well-formed
                // (RFC 8949 §3.3); minicbor reads it without complaint.
                match crate::value::Simple::new(s) {
                    Some(s) if !two_byte || s.get() >= 32 => Value::Simple(s),
                    _ => {
                        return Err(DecodeError::Malformed {
                            offset: at,
                            reason: "two-byte simple value below 32",
                        });
                    }
                }
            }
            Type::Bytes => Value::Bytes(self.bytes()?),
            Type::String => Value::Text(self.text()?.into()),
            Type::Array => {
                let len = self.array()?;
                let depth = self.deeper(depth, at)?;
                let mut items = Vec::with_capacity(len.min(64));
                for _ in 0..len {
                    items.push(self.value(depth)?);
                }
                Value::Array(items)
            }
            Type::Map => {
                let len = self.map()?;
                let depth = self.deeper(depth, at)?;
                Value::Map(self.map_entries(len, depth)?)
            }
            Type::Tag => {
                let tag = self.d.tag().map_err(|x| e(self, x))?;
                let depth = self.deeper(depth, at)?;
                Value::Tag(u64::from(tag), Box::new(self.value(depth)?))
            }
            // `peek` has already rejected these.
            Type::BytesIndef
            | Type::StringIndef
            | Type::ArrayIndef
            | Type::MapIndef
            | Type::Break
            | Type::Unknown(_) => {
                return Err(DecodeError::Malformed {
                    offset: at,
                    reason: "unexpected item",
                });
            }
        })
    }

    /// Decodes `len` map entries (after the header), rejecting duplicates.
    pub(crate) fn map_entries(&mut self, len: usize, depth: u32) -> Result<Map, DecodeError> {
        let at = self.position();
        let mut entries: Vec<(Value, Value)> = Vec::with_capacity(len.min(64));
        // Deterministic input has its keys in order: check that as they come
        // and skip sorting. Once a key is out of order, keep the offsets of
        // the keys from there on: keys before it increase strictly, so the
        // later key of any duplicate pair is among them.
        let mut unsorted_from = None;
        let mut offsets = Vec::new();
        for i in 0..len {
            let key_at = self.position();
            let k = self.value(depth)?;
            if unsorted_from.is_none()
                && entries.last().is_some_and(|(prev, _)| {
                    let order = match (prev, &k) {
                        // Nearly all keys: skip the general comparison.
                        (Value::Text(a), Value::Text(b)) => text_cmp(a, b),
                        (a, b) => key_cmp(a, b),
                    };
                    order != Ordering::Less
                })
            {
                unsorted_from = Some(i);
            }
            if unsorted_from.is_some() {
                offsets.push(key_at);
            }
            let v = self.value(depth)?;
            entries.push((k, v));
        }
        match unsorted_from {
            None => Ok(Map::from_sorted(entries)),
            Some(first) => Map::from_entries(entries).map_err(|dup| DecodeError::DuplicateKey {
                offset: dup
                    .checked_sub(first)
                    .and_then(|j| offsets.get(j).copied())
                    .unwrap_or(at),
            }),
        }
    }

    pub(crate) fn deeper(&self, depth: u32, at: usize) -> Result<u32, DecodeError> {
        if depth >= self.limits.max_depth {
            Err(DecodeError::TooDeep {
                offset: at,
                limit: self.limits.max_depth,
            })
        } else {
            Ok(depth + 1)
        }
    }
}

/// The length of the longest prefix of `b` that is ASCII, a word at a time.
fn ascii_prefix(b: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut n = 0;
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if w & HIGH != 0 {
            // The lowest set high bit is the first non-ASCII byte (little endian).
            return n + (w & HIGH).trailing_zeros() as usize / 8;
        }
        n += 8;
    }
    n + words
        .remainder()
        .iter()
        .position(|x| !x.is_ascii())
        .unwrap_or(words.remainder().len())
}

/// The declared length in a byte/text string head, and the head's size.
fn declared_length(input: &[u8]) -> Option<(u64, usize)> {
    let first = *input.first()?;
    let info = first & 0x1f;
    let (len, head) = match info {
        0..=23 => (u64::from(info), 1),
        24 => (u64::from(*input.get(1)?), 2),
        25 => (
            u64::from(u16::from_be_bytes(input.get(1..3)?.try_into().ok()?)),
            3,
        ),
        26 => (
            u64::from(u32::from_be_bytes(input.get(1..5)?.try_into().ok()?)),
            5,
        ),
        27 => (u64::from_be_bytes(input.get(1..9)?.try_into().ok()?), 9),
        _ => return None,
    };
    Some((len, head))
}

/// Decodes exactly one data item from `input` (trailing bytes are an error).
pub fn from_slice(input: &[u8], limits: Limits) -> Result<Value, DecodeError> {
    if input.len() > limits.max_size {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_size,
        });
    }
    let mut r = Reader::new(input, None, limits);
    let v = r.value(0)?;
    if r.position() != input.len() {
        return Err(DecodeError::TrailingBytes {
            offset: r.position(),
        });
    }
    Ok(v)
}

/// True when `input` is one data item already in deterministic form.
pub fn is_deterministic(input: &[u8], limits: Limits) -> bool {
    from_slice(input, limits).is_ok_and(|v| to_vec(&v) == input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_prefix_finds_the_first_high_byte() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert_eq!(ascii_prefix(&clean), len);
            for at in 0..len {
                for high in [0x80, 0xc3, 0xff] {
                    let mut b = clean.clone();
                    b[at] = high;
                    assert_eq!(
                        ascii_prefix(&b),
                        at,
                        "len {len}, high byte {high:#x} at {at}"
                    );
                }
            }
        }
    }

    /// Text around the places where ASCII runs start and end: after binary
    /// items, heads whose length byte is not ASCII, non-ASCII text.
    #[test]
    fn text_in_and_out_of_ascii_runs() {
        let long = "x".repeat(200); // head 78 c8: its length byte is not ASCII
        let items = vec![
            Value::text("id"),
            Value::Bytes(vec![0xff, 0xc3].into()),
            Value::text("after-binary"),
            Value::from(4521), // 19 11a9: breaks the run
            Value::text(long.as_str()),
            Value::text("é€😀"),
            Value::text("ascii-again"),
            Value::text(""),
            Value::text("aé"),
        ];
        let v = Value::Array(items);
        let bytes = to_vec(&v);
        assert_eq!(from_slice(&bytes, Limits::DEFAULT), Ok(v));
    }

    #[test]
    fn invalid_utf8_after_an_ascii_run_is_found() {
        // ["abc", "ab\xff"]: the second string starts inside the run the first
        // began and ends past it.
        let bytes = [0x82, 0x63, b'a', b'b', b'c', 0x63, b'a', b'b', 0xff];
        assert_eq!(
            from_slice(&bytes, Limits::DEFAULT),
            Err(DecodeError::InvalidUtf8 { offset: 5 })
        );
        // A lone continuation byte right after a run.
        let bytes = [0x82, 0x61, b'a', 0x61, 0x80];
        assert_eq!(
            from_slice(&bytes, Limits::DEFAULT),
            Err(DecodeError::InvalidUtf8 { offset: 3 })
        );
    }
}
