//! The CBOR value tree carried in a fluxMsg's `data` field.
//!
//! [`Value`] models every CBOR data item that the deterministic profile allows
//! (RFC 8949 §4.2.1): integers in the full CBOR range, floats, byte and text
//! strings, arrays, maps, tags and simple values. Indefinite lengths do not
//! exist in this model; they are normalised away by the decoder.
//!
//! Equality follows the encoding: two values are equal exactly when their
//! deterministic encodings are equal. So `0.0 != -0.0`, `NaN == NaN`, and an
//! integer `1` differs from a float `1.0`.
//!
//! [`Map`] keeps its entries sorted by the bytewise order of the encoded keys
//! at all times, so encoding never sorts and lookups are binary searches.

use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use compact_str::CompactString;

/// A CBOR integer: any value in `-2^64 ..= 2^64 - 1`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Integer(i128);

impl Integer {
    /// The smallest CBOR integer, `-2^64`.
    pub const MIN: Integer = Integer(-(1_i128 << 64));
    /// The largest CBOR integer, `2^64 - 1`.
    pub const MAX: Integer = Integer(u64::MAX as i128);

    /// The integer as an `i128` (always in range).
    pub fn get(self) -> i128 {
        self.0
    }

    /// The integer as an `i64`, when it fits.
    pub fn as_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }

    /// The integer as a `u64`, when it fits.
    pub fn as_u64(self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }
}

impl fmt::Debug for Integer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Integer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

macro_rules! integer_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Integer {
            fn from(v: $t) -> Self {
                Integer(i128::from(v))
            }
        }
    )*};
}
integer_from!(u8, u16, u32, u64, i8, i16, i32, i64);

/// The error of converting an `i128` outside the CBOR integer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("integer {0} is outside the CBOR range -2^64..=2^64-1")]
pub struct IntegerOutOfRange(pub i128);

impl TryFrom<i128> for Integer {
    type Error = IntegerOutOfRange;

    fn try_from(v: i128) -> Result<Self, Self::Error> {
        if (Self::MIN.0..=Self::MAX.0).contains(&v) {
            Ok(Integer(v))
        } else {
            Err(IntegerOutOfRange(v))
        }
    }
}

/// A CBOR simple value that has no meaning of its own: 0..=19 or 32..=255
/// (20..=23 are false, true, null and undefined; 24..=31 are reserved).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Simple(u8);

impl Simple {
    /// The simple value `v`, unless `v` is one of 20..=31.
    pub fn new(v: u8) -> Option<Simple> {
        (!(20..32).contains(&v)).then_some(Simple(v))
    }

    /// The simple value's number.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A CBOR data item.
#[derive(Clone)]
pub enum Value {
    /// Major types 0 and 1.
    Integer(Integer),
    /// Major type 2.
    Bytes(Bytes),
    /// Major type 3 (always valid UTF-8).
    Text(CompactString),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5.
    Map(Map),
    /// Major type 6: a tag number and its content.
    Tag(u64, Box<Value>),
    /// `false` / `true`.
    Bool(bool),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// A simple value other than false, true, null and undefined.
    Simple(Simple),
    /// A floating-point number; encoded in the shortest of half, single or
    /// double precision that keeps its value exactly.
    Float(f64),
}

impl Value {
    /// A text value.
    pub fn text(s: impl Into<CompactString>) -> Value {
        Value::Text(s.into())
    }

    /// An integer value from anything that converts into [`Integer`].
    pub fn int(i: impl Into<Integer>) -> Value {
        Value::Integer(i.into())
    }

    /// The text, when this is a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this is an integer value.
    pub fn as_integer(&self) -> Option<Integer> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The map, when this is a map value.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The map, mutably, when this is a map value.
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks up a text key, when this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The CBOR major type this value encodes with (7 for simple values and floats).
    pub(crate) fn major(&self) -> u8 {
        match self {
            Value::Integer(i) if i.0 >= 0 => 0,
            Value::Integer(_) => 1,
            Value::Bytes(_) => 2,
            Value::Text(_) => 3,
            Value::Array(_) => 4,
            Value::Map(_) => 5,
            Value::Tag(..) => 6,
            Value::Bool(_)
            | Value::Null
            | Value::Undefined
            | Value::Simple(_)
            | Value::Float(_) => 7,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "h'{}'", hex(b)),
            Value::Text(s) => write!(f, "{:?}", s.as_str()),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Map(m) => fmt::Debug::fmt(m, f),
            Value::Tag(t, v) => write!(f, "{t}({v:?})"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
            Value::Undefined => f.write_str("undefined"),
            Value::Simple(s) => write!(f, "simple({})", s.get()),
            Value::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// Lowercase hex of some bytes (hashes, raw payloads in messages and
/// reports).
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Tag(ta, a), Value::Tag(tb, b)) => ta == tb && a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Null, Value::Null) | (Value::Undefined, Value::Undefined) => true,
            (Value::Simple(a), Value::Simple(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => crate::cbor::float_bits_eq(*a, *b),
            _ => false,
        }
    }
}

impl Eq for Value {}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(Integer::from(v))
            }
        }
    )*};
}
value_from_int!(u8, u16, u32, u64, i8, i16, i32, i64);

/// Compares two keys by the bytewise order of their deterministic encodings
/// (RFC 8949 §4.2.1), without encoding them in the common cases.
pub(crate) fn key_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        // Same-length headers encode the length; shorter strings sort first.
        (Value::Text(a), Value::Text(b)) => text_cmp(a, b),
        (Value::Bytes(a), Value::Bytes(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        // Shortest-form arguments are monotonic in the value within a major
        // type; for negative integers the argument is -1-n, so order flips.
        (Value::Integer(x), Value::Integer(y)) if (x.0 >= 0) == (y.0 >= 0) => {
            if x.0 >= 0 {
                x.cmp(y)
            } else {
                y.cmp(x)
            }
        }
        _ if a.major() != b.major() => a.major().cmp(&b.major()),
        _ => {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            crate::cbor::encode_value(a, &mut ea);
            crate::cbor::encode_value(b, &mut eb);
            ea.cmp(&eb)
        }
    }
}

/// The deterministic order of two text keys: length first, then bytes.
#[inline]
pub(crate) fn text_cmp(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A CBOR map whose entries stay sorted by the deterministic key order.
///
/// Keys are unique. Insertion order never matters: two maps with the same
/// entries are equal and encode to the same bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Map {
    entries: Vec<(Value, Value)>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Map {
        Map {
            entries: Vec::with_capacity(n),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &Value) -> Result<usize, usize> {
        match key {
            // Nearly all keys; the same order without the general comparison.
            Value::Text(text) => self.find_text(text),
            _ => self.entries.binary_search_by(|(k, _)| key_cmp(k, key)),
        }
    }

    fn find_text(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| match k {
            Value::Text(k) => text_cmp(k, key),
            // Every major type except 6 and 7 sorts before text only when its
            // major type number is lower.
            other => other.major().cmp(&3),
        })
    }

    /// The value under a text key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find_text(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value under a text key, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find_text(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// The value under any key.
    pub fn get_value(&self, key: &Value) -> Option<&Value> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// Inserts or replaces an entry; returns the previous value.
    pub fn insert(&mut self, key: impl Into<Value>, value: impl Into<Value>) -> Option<Value> {
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

    /// Removes the entry under a text key.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find_text(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// The entries in deterministic order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Value, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Mutable access to the values, in deterministic key order.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut Value> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Wraps entries already in strictly increasing key order.
    pub(crate) fn from_sorted(entries: Vec<(Value, Value)>) -> Map {
        debug_assert!(
            entries
                .windows(2)
                .all(|w| key_cmp(&w[0].0, &w[1].0) == Ordering::Less)
        );
        Map { entries }
    }

    /// Builds a map from entries that may come in any order.
    ///
    /// Returns the index (in `entries`) of a duplicate key, if any.
    pub(crate) fn from_entries(mut entries: Vec<(Value, Value)>) -> Result<Map, usize> {
        if !entries
            .windows(2)
            .all(|w| key_cmp(&w[0].0, &w[1].0) == Ordering::Less)
        {
            // Stable sort keeps the first occurrence first, so the duplicate we
            // name is the later one in the input.
            let mut idx: Vec<usize> = (0..entries.len()).collect();
            idx.sort_by(|&a, &b| key_cmp(&entries[a].0, &entries[b].0));
            if let Some(w) = idx
                .windows(2)
                .find(|w| key_cmp(&entries[w[0]].0, &entries[w[1]].0) == Ordering::Equal)
            {
                return Err(w[0].max(w[1]));
            }
            entries.sort_by(|a, b| key_cmp(&a.0, &b.0));
        }
        Ok(Map { entries })
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<Value>, V: Into<Value>> FromIterator<(K, V)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Value, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Value, Value)>,
        fn(&'a (Value, Value)) -> (&'a Value, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_order_is_length_first_then_bytes() {
        let m: Map = [("bb", 1), ("a", 2), ("ab", 3), ("c", 4)]
            .into_iter()
            .collect();
        let keys: Vec<_> = m
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["a", "c", "ab", "bb"]);
    }

    #[test]
    fn integer_keys_sort_before_text_and_negative_after_positive() {
        let m: Map = [
            (Value::text("a"), 0),
            (Value::int(-1), 1),
            (Value::int(10), 2),
            (Value::int(-100), 3),
            (Value::int(1000), 4),
        ]
        .into_iter()
        .collect();
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            [
                Value::int(10),
                Value::int(1000),
                Value::int(-1),
                Value::int(-100),
                Value::text("a")
            ]
        );
    }

    #[test]
    fn text_lookup_skips_other_key_types() {
        let m: Map = [
            (Value::int(1), 1),
            (Value::text("x"), 2),
            (Value::Bool(true), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(m.get("x"), Some(&Value::int(2)));
        assert_eq!(m.get("y"), None);
    }

    #[test]
    fn from_entries_reports_duplicate() {
        let e = vec![
            (Value::text("b"), Value::Null),
            (Value::text("a"), Value::Null),
            (Value::text("b"), Value::Null),
        ];
        assert_eq!(Map::from_entries(e), Err(2));
    }

    #[test]
    fn integer_range_is_enforced() {
        assert!(Integer::try_from(-(1_i128 << 64)).is_ok());
        assert!(Integer::try_from(-(1_i128 << 64) - 1).is_err());
        assert!(Integer::try_from(i128::from(u64::MAX) + 1).is_err());
    }

    #[test]
    fn float_equality_follows_encoding() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
        assert_ne!(Value::Float(1.0), Value::int(1));
    }
}
