//! The spanned YAML tree.

use std::fmt;

use fluxrig_msg::{Map, Value};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::Problem;

/// A position in a YAML file (1-based line and column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub kind: NodeKind,
    /// Where it starts in the file.
    pub pos: Pos,
}

/// The value of a YAML node, with YAML 1.2 core scalar resolution applied
/// (plain `true`, `12`, `1.5`, `null` are typed; quoted scalars are text).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `null`, `~` or an empty value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (negative or fitting in i64).
    Int(i64),
    /// A non-negative integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their positions, entries their file order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The string, when this node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, when this node is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, when this node is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under a string key, when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The scalar as text, for places that accept any scalar as a string
    /// (`version: 1.0` and `version: "1.0"` both name version 1.0).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Str(s) => Some(s.clone()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::UInt(u) => Some(u.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            NodeKind::Bool(b) => Some(b.to_string()),
            NodeKind::Null | NodeKind::Seq(_) | NodeKind::Map(_) => None,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) | NodeKind::UInt(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The node as a CBOR value, positions dropped: the canonical form used
    /// to hash configuration (formatting and key order do not matter).
    ///
    /// Mapping keys become text when they are scalars; other keys keep their
    /// CBOR shape.
    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::UInt(u) => Value::from(*u),
            NodeKind::Float(f) => Value::Float(*f),
            NodeKind::Str(s) => Value::from(s.as_str()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.scalar_text().map_or_else(|| k.to_value(), Value::from),
                            v.to_value(),
                        )
                    })
                    .collect::<Map>(),
            ),
        }
    }
}

fn pos_of(s: &serde_saphyr::Location) -> Pos {
    Pos {
        line: u32::try_from(s.line()).unwrap_or(u32::MAX),
        column: u32::try_from(s.column()).unwrap_or(u32::MAX),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let spanned: Spanned<NodeKind> = Spanned::deserialize(d)?;
        Ok(Node {
            kind: spanned.value,
            pos: pos_of(&spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NodeKind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeKind, E> {
        Ok(i64::try_from(v).map_or(NodeKind::UInt(v), NodeKind::Int))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeKind, E> {
        i64::try_from(v)
            .map(NodeKind::Int)
            .or_else(|_| u64::try_from(v).map(NodeKind::UInt))
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeKind, E> {
        u64::try_from(v)
            .map(|u| self.visit_u64::<E>(u))
            .map_err(|_| E::custom("integer out of range"))?
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeKind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(NodeKind::Map(entries))
    }
}

/// YAML 1.2 core resolution: only `true`/`false` are booleans (`n`, `no`,
/// `off` stay text — the "Norway problem" of YAML 1.1), duplicate keys are
/// errors, and the parser's default budget bounds hostile input.
fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o
}

pub(crate) fn parse(text: &str) -> Result<Node, Problem> {
    match serde_saphyr::from_str_with_options::<Option<Node>>(text, options()) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Ok(Node {
            kind: NodeKind::Null,
            pos: Pos { line: 1, column: 1 },
        }),
        Err(e) => {
            let pos = e
                .location()
                .map_or(Pos { line: 1, column: 1 }, |l| pos_of(&l));
            Err(Problem::new(pos, short_message(&e)))
        }
    }
}

/// The parser's message without its snippet and position (we print those
/// ourselves as `file:line:col:`).
fn short_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    // Drop a trailing " at line X, column Y" the parser may add.
    let first = first.split(" at line ").next().unwrap_or(first);
    first.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(m[0].1.pos, Pos { line: 1, column: 4 });
        assert_eq!(m[1].0.pos, Pos { line: 2, column: 1 });
        let seq = m[1].1.as_seq().unwrap();
        assert_eq!(seq[0].pos, Pos { line: 3, column: 5 });
        assert_eq!(seq[1].get("c").unwrap().kind, NodeKind::Bool(true));
    }

    #[test]
    fn scalars_are_typed_and_quoted_ones_are_text() {
        let n =
            parse("i: 12\nf: 1.5\ns: '12'\nn: null\nb: false\nu: 18446744073709551615\n").unwrap();
        assert_eq!(n.get("i").unwrap().kind, NodeKind::Int(12));
        assert_eq!(n.get("f").unwrap().kind, NodeKind::Float(1.5));
        assert_eq!(n.get("s").unwrap().kind, NodeKind::Str("12".into()));
        assert_eq!(n.get("n").unwrap().kind, NodeKind::Null);
        assert_eq!(n.get("b").unwrap().kind, NodeKind::Bool(false));
        assert_eq!(n.get("u").unwrap().kind, NodeKind::UInt(u64::MAX));
    }

    #[test]
    fn yaml_1_1_booleans_stay_text() {
        let n = parse(
            "n: no
y: off
",
        )
        .unwrap();
        assert_eq!(n.get("n").unwrap().kind, NodeKind::Str("no".into()));
        assert_eq!(n.get("y").unwrap().kind, NodeKind::Str("off".into()));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let p = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(p.pos.line >= 2, "{p}");
        assert!(!p.message.is_empty());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let p = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(p.pos.line, 2, "{p}");
    }

    #[test]
    fn canonical_value_ignores_formatting_and_key_order() {
        let a = parse("b: 1\na: {y: [1, 2], x: 'z'}\n").unwrap().to_value();
        let b = parse("a:\n  x: z\n  y:\n    - 1\n    - 2\nb: 1\n")
            .unwrap()
            .to_value();
        assert_eq!(fluxrig_msg::cbor::to_vec(&a), fluxrig_msg::cbor::to_vec(&b));
    }
}
