//! A serde deserializer over a [`Node`] whose errors know where they are.
//!
//! Errors raised while deserializing a value are tagged, as they bubble up,
//! with the position of the innermost node they came out of and the path of
//! keys and indexes that leads there. An unknown field points at the key; a
//! wrong type at the value; a missing field at the mapping that lacks it.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use crate::{Node, NodeKind, Pos, Problem};

/// A deserialization error with its position and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// What is wrong.
    pub message: String,
    /// Where, once known.
    pub pos: Option<Pos>,
    /// Path segments from the root of the deserialized value, innermost last.
    path: Vec<String>,
}

impl DeError {
    /// The path of the offending value (`a.b[2].c`), empty at the root.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            if !seg.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }

    fn within(mut self, seg: String) -> Self {
        self.path.push(seg);
        self
    }

    /// As a [`Problem`], the path prefixed by `prefix` (e.g. `gears[2].config`).
    pub fn into_problem(self, fallback: Pos, prefix: &str) -> Problem {
        let path = self.path();
        let full = match (prefix.is_empty(), path.is_empty()) {
            (true, _) => path,
            (false, true) => prefix.to_owned(),
            (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
            (false, false) => format!("{prefix}.{path}"),
        };
        let message = if full.is_empty() {
            self.message
        } else {
            format!("{full}: {}", self.message)
        };
        Problem::new(self.pos.unwrap_or(fallback), message)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if let Some(pos) = self.pos {
            write!(f, "{pos}: ")?;
        }
        if path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{path}: {}", self.message)
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            pos: None,
            path: Vec::new(),
        }
    }
}

/// Deserializes `T` from a node. Errors carry the position and path.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node))
}

struct NodeDe<'a>(&'a Node);

impl NodeDe<'_> {
    fn invalid_type(&self, exp: &dyn de::Expected) -> DeError {
        let unexp = match &self.0.kind {
            NodeKind::Null => de::Unexpected::Unit,
            NodeKind::Bool(b) => de::Unexpected::Bool(*b),
            NodeKind::Int(i) => de::Unexpected::Signed(*i),
            NodeKind::UInt(u) => de::Unexpected::Unsigned(*u),
            NodeKind::Float(f) => de::Unexpected::Float(*f),
            NodeKind::Str(s) => de::Unexpected::Str(s),
            NodeKind::Seq(_) => de::Unexpected::Seq,
            NodeKind::Map(_) => de::Unexpected::Map,
        };
        <DeError as de::Error>::invalid_type(unexp, exp).at(self.0.pos)
    }
}

macro_rules! forward_to_any {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.deserialize_any(v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let pos = self.0.pos;
        let r = match &self.0.kind {
            NodeKind::Null => v.visit_unit(),
            NodeKind::Bool(b) => v.visit_bool(*b),
            NodeKind::Int(i) => v.visit_i64(*i),
            NodeKind::UInt(u) => v.visit_u64(*u),
            NodeKind::Float(f) => v.visit_f64(*f),
            NodeKind::Str(s) => v.visit_borrowed_str(s),
            NodeKind::Seq(items) => v.visit_seq(Seq {
                items: items.iter(),
                index: 0,
            }),
            NodeKind::Map(entries) => v.visit_map(Map {
                entries: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.at(pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0.kind {
            NodeKind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.0.pos;
        match &self.0.kind {
            NodeKind::Str(_) => v.visit_enum(Enum {
                tag: self.0,
                content: None,
            }),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (k, c) = &entries[0];
                v.visit_enum(Enum {
                    tag: k,
                    content: Some(c),
                })
            }
            _ => Err(self.invalid_type(&"a string or a single-key mapping")),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // Strings accept any scalar written plainly where a string is meant
        // (`version: 1.0`); the node's text is what the user wrote.
        match &self.0.kind {
            NodeKind::Str(s) => v.visit_borrowed_str(s),
            NodeKind::Int(_) | NodeKind::UInt(_) | NodeKind::Float(_) | NodeKind::Bool(_) => {
                let text = self.0.scalar_text().unwrap_or_default();
                v.visit_string(text).map_err(|e: DeError| e.at(self.0.pos))
            }
            _ => Err(self.invalid_type(&v)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_string(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.0.kind {
            NodeKind::Map(_) => self.deserialize_any(v),
            // An absent block (`config:` with nothing after it) is an empty mapping.
            NodeKind::Null => v
                .visit_map(Map {
                    entries: [].iter(),
                    value: None,
                })
                .map_err(|e| e.at(self.0.pos)),
            _ => Err(self.invalid_type(&v)),
        }
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let i = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e| e.at(item.pos).within(format!("[{i}]")))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, &'a Node)>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((k, v));
        seed.deserialize(NodeDe(k))
            .map(Some)
            .map_err(|e| e.at(k.pos))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((k, v)) = self.value.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        let seg = k.scalar_text().unwrap_or_else(|| "?".to_owned());
        seed.deserialize(NodeDe(v))
            .map_err(|e| e.at(v.pos).within(seg))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Enum<'a> {
    tag: &'a Node,
    content: Option<&'a Node>,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = DeError;
    type Variant = Variant<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Variant<'de>), DeError> {
        let tag = seed
            .deserialize(NodeDe(self.tag))
            .map_err(|e| e.at(self.tag.pos))?;
        Ok((
            tag,
            Variant {
                tag: self.tag,
                content: self.content,
            },
        ))
    }
}

struct Variant<'a> {
    tag: &'a Node,
    content: Option<&'a Node>,
}

impl<'de> Variant<'de> {
    fn content(&self) -> Result<&'de Node, DeError> {
        self.content.ok_or_else(|| {
            <DeError as de::Error>::custom("this variant needs a value").at(self.tag.pos)
        })
    }

    fn seg(&self) -> String {
        self.tag.scalar_text().unwrap_or_default()
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None => Ok(()),
            Some(c) if c.kind == NodeKind::Null => Ok(()),
            Some(c) => Err(<DeError as de::Error>::custom("this variant takes no value").at(c.pos)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let c = self.content()?;
        seed.deserialize(NodeDe(c))
            .map_err(|e| e.at(c.pos).within(self.seg()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        let c = self.content()?;
        de::Deserializer::deserialize_seq(NodeDe(c), v).map_err(|e| e.within(self.seg()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let c = self.content()?;
        de::Deserializer::deserialize_map(NodeDe(c), v).map_err(|e| e.within(self.seg()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "snake_case")]
    enum Mode {
        Lines,
        Jsonl,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        mode: Mode,
        inner: Inner,
        list: Vec<Inner>,
        opt: Option<u8>,
    }

    fn err(yaml: &str) -> DeError {
        from_node::<Cfg>(&parse(yaml).unwrap()).unwrap_err()
    }

    const OK: &str =
        "name: x\nmode: jsonl\ninner: {count: 3}\nlist:\n  - count: 1\n    tags: [a]\n";

    #[test]
    fn deserializes_nested_values() {
        let c: Cfg = from_node(&parse(OK).unwrap()).unwrap();
        assert_eq!(c.mode, Mode::Jsonl);
        assert_eq!(c.inner.count, 3);
        assert_eq!(c.list[0].tags, ["a"]);
        assert_eq!(c.opt, None);
    }

    #[test]
    fn unknown_field_points_at_the_key() {
        let e = err(&OK.replace("inner: {count: 3}", "inner: {count: 3, cuont: 4}"));
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 3,
                column: 19
            }),
            "{e}"
        );
        assert_eq!(e.path(), "inner");
        assert!(e.message.contains("unknown field `cuont`"), "{e}");
    }

    #[test]
    fn wrong_type_points_at_the_value_with_its_path() {
        let e = err(&OK.replace("  - count: 1", "  - count: 70000"));
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 5,
                column: 12
            }),
            "{e}"
        );
        assert_eq!(e.path(), "list[0].count");
    }

    #[test]
    fn missing_field_points_at_the_mapping() {
        let e = err(&OK.replace("inner: {count: 3}", "inner: {tags: []}"));
        assert_eq!(e.pos, Some(Pos { line: 3, column: 8 }), "{e}");
        assert!(e.message.contains("missing field `count`"), "{e}");
    }

    #[test]
    fn bad_enum_variant_points_at_the_value() {
        let e = err(&OK.replace("mode: jsonl", "mode: csv"));
        assert_eq!(e.pos, Some(Pos { line: 2, column: 7 }), "{e}");
        assert!(e.message.contains("unknown variant `csv`"), "{e}");
    }

    #[test]
    fn problem_prefixes_the_path() {
        let e = err(&OK.replace("mode: jsonl", "mode: csv"));
        let p = e.into_problem(Pos::default(), "gears[1].config");
        assert!(
            p.message
                .starts_with("gears[1].config.mode: unknown variant"),
            "{p}"
        );
    }
}
