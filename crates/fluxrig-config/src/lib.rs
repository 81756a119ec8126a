//! YAML with source positions.
//!
//! fluxrig's configuration files (scenarios, gear configs) are YAML, and every
//! error in them must name `file:line:column`. This crate parses YAML (with
//! `serde-saphyr`) into a [`Node`] tree that keeps the position of every key
//! and value, and deserializes typed configs from a node with
//! [`from_node`], whose errors carry the position and the path of the
//! offending key or value.
//!
//! Validation reports every problem at once: callers walk the tree, collect
//! [`Problem`]s and fail only at the end.

mod de;
mod duration;
mod node;

pub use de::{DeError, from_node};
pub use duration::Duration;
pub use node::{Node, NodeKind, Pos};

use std::fmt;

/// One problem in a configuration file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending key or value starts.
    pub pos: Pos,
    /// What is wrong (lowercase, no trailing period, no secret values).
    pub message: String,
}

impl Problem {
    /// A problem at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> Problem {
        Problem {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// Every problem found in one file, printed as `FILE:LINE:COL: message`
/// lines in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    /// The file's name as the user gave it.
    pub file: String,
    /// The problems, sorted by position.
    pub problems: Vec<Problem>,
}

impl Problems {
    /// Collects `problems` for `file`, sorted by position (stable for ties).
    pub fn new(file: impl Into<String>, mut problems: Vec<Problem>) -> Problems {
        problems.sort_by_key(|p| (p.pos.line, p.pos.column));
        Problems {
            file: file.into(),
            problems,
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{p}", self.file)?;
        }
        Ok(())
    }
}

/// Parses one YAML document into a [`Node`] tree.
///
/// YAML syntax errors (and duplicate keys) come back as a [`Problem`] with
/// the parser's position.
pub fn parse(text: &str) -> Result<Node, Problem> {
    node::parse(text)
}
