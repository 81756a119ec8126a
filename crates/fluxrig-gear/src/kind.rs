//! Gear types: the typed trait a gear implements and its type-erased form
//! the registry holds.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use fluxrig_config::{Node, Pos, Problem, from_node};
use fluxrig_msg::EntityId;
use serde::de::DeserializeOwned;

use crate::{BuildError, Gear, PortSpec, Role};

/// Where relative paths in a config resolve, and where the Rack keeps data.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    /// The scenario file's directory.
    pub base_dir: PathBuf,
    /// The Rack's data directory.
    pub data_dir: PathBuf,
}

/// What a gear is told when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The gear's name in the scenario.
    pub gear: Arc<str>,
    /// The gear's fluxEntityID.
    pub entity: EntityId,
    /// The scenario file's directory.
    pub base_dir: PathBuf,
    /// The Rack's data directory.
    pub data_dir: PathBuf,
    /// The Rack's WAL sync policy (`fluxrig run --wal-sync`): gears that
    /// keep a log of their own (the conductor's) sync it the same way.
    pub wal_sync: fluxrig_wal::SyncPolicy,
}

impl BuildContext {
    /// Resolves a path from a config against the scenario's directory.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A problem a gear finds in its config beyond what serde checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Path inside the config (`source`, `rules[1].when`); empty for the
    /// whole config.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A gear type, implemented once per built-in gear.
pub trait GearKind: Send + Sync + 'static {
    /// The config (serde `deny_unknown_fields`; doc comments on every
    /// field: they are the user documentation).
    type Config: DeserializeOwned + schemars::JsonSchema + Send + Sync + fmt::Debug + 'static;
    /// The type's name in scenarios (`generate`, `map`, …).
    const NAME: &'static str;
    /// Source, transform or sink.
    const ROLE: Role;
    /// One line: what it does.
    const SUMMARY: &'static str;
    /// More documentation (Markdown), shown by `fluxrig gears doc`.
    const DOCS: &'static str;
    /// An example gear entry (YAML), shown by `fluxrig gears doc`.
    const EXAMPLE: &'static str;

    /// The ports of a gear with this config.
    fn ports(_config: &Self::Config) -> Vec<PortSpec> {
        PortSpec::defaults(Self::ROLE)
    }

    /// Checks beyond the types (programs compile, files exist…).
    fn check(_config: &Self::Config, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        Vec::new()
    }

    /// Builds a running instance. Resources that can fail where the user
    /// should hear about it before anything starts (bind a listener, open a
    /// file) are acquired here.
    fn build(config: &Self::Config, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError>;
}

/// A gear type as the registry holds it.
pub trait GearType: Send + Sync + fmt::Debug {
    /// The type's name.
    fn name(&self) -> &'static str;
    /// Source, transform or sink.
    fn role(&self) -> Role;
    /// One line: what it does.
    fn summary(&self) -> &'static str;
    /// More documentation (Markdown).
    fn docs(&self) -> &'static str;
    /// An example gear entry (YAML).
    fn example(&self) -> &'static str;
    /// The JSON Schema of the config.
    fn schema(&self) -> schemars::Schema;
    /// Deserializes and checks a config; every problem with its position.
    fn prepare(&self, config: &Node, ctx: &CheckContext)
    -> Result<Arc<dyn Prepared>, Vec<Problem>>;
}

/// A checked config, ready to build gears from (again, after a failure).
pub trait Prepared: Send + Sync + fmt::Debug {
    /// The gear's ports.
    fn ports(&self) -> &[PortSpec];
    /// Builds a running instance.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError>;
}

/// The [`GearType`] of a [`GearKind`].
pub struct Typed<K>(PhantomData<fn() -> K>);

impl<K: GearKind> fmt::Debug for Typed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Typed({})", K::NAME)
    }
}

impl<K> Typed<K> {
    /// The erased type of `K`.
    pub const fn new() -> Typed<K> {
        Typed(PhantomData)
    }
}

impl<K> Default for Typed<K> {
    fn default() -> Self {
        Typed::new()
    }
}

struct PreparedConfig<K: GearKind> {
    config: K::Config,
    ports: Vec<PortSpec>,
}

impl<K: GearKind> fmt::Debug for PreparedConfig<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("type", &K::NAME)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K: GearKind> Prepared for PreparedConfig<K> {
    fn ports(&self) -> &[PortSpec] {
        &self.ports
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        K::build(&self.config, ctx)
    }
}

impl<K: GearKind> GearType for Typed<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn role(&self) -> Role {
        K::ROLE
    }

    fn summary(&self) -> &'static str {
        K::SUMMARY
    }

    fn docs(&self) -> &'static str {
        K::DOCS
    }

    fn example(&self) -> &'static str {
        K::EXAMPLE
    }

    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(K::Config)
    }

    fn prepare(&self, node: &Node, ctx: &CheckContext) -> Result<Arc<dyn Prepared>, Vec<Problem>> {
        let config: K::Config = from_node(node).map_err(|e| vec![e.into_problem(node.pos, "")])?;
        let issues = K::check(&config, ctx);
        if !issues.is_empty() {
            return Err(issues
                .into_iter()
                .map(|i| {
                    let pos = node_at(node, &i.path).map_or(node.pos, |n| n.pos);
                    let message = if i.path.is_empty() {
                        i.message
                    } else {
                        format!("{}: {}", i.path, i.message)
                    };
                    Problem::new(pos, message)
                })
                .collect());
        }
        let ports = K::ports(&config);
        Ok(Arc::new(PreparedConfig::<K> { config, ports }))
    }
}

/// The node at a path such as `rules[1].when` (best effort, for positions).
fn node_at<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            node = node.get(key)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            node = node.as_seq()?.get(i)?;
        }
    }
    Some(node)
}

/// The position a [`ConfigIssue`] path points at inside `config` (exposed
/// for gears that report issues found later, at build time).
pub fn issue_pos(config: &Node, path: &str) -> Pos {
    node_at(config, path).map_or(config.pos, |n| n.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nodes_by_path() {
        let n = fluxrig_config::parse("rules:\n  - when: a\n  - when: b\nx: {y: 1}\n").unwrap();
        assert_eq!(node_at(&n, "rules[1].when").unwrap().as_str(), Some("b"));
        assert_eq!(node_at(&n, "x.y").unwrap().pos.line, 4);
        assert!(node_at(&n, "rules[5]").is_none());
        assert_eq!(issue_pos(&n, "nope").line, 1);
    }
}
