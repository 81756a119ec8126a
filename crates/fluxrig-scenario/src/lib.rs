//! Scenarios: the declarative YAML blueprint of a Rack.
//!
//! ```yaml
//! meta: {name: quickstart, version: 1.0.0}
//! gears:
//!   - {name: source, type: generate, config: {count: 1000, interval: 1ms}}
//!   - {name: sink, type: file_out, config: {path: out/q.jsonl}}
//! wires:
//!   - {from: source.out, to: sink.in}
//! ```
//!
//! Loading is strict and reports every problem at once, each with the
//! position of the offending key or value: unknown keys, unknown gear
//! types, invalid gear configs (checked by each gear type), unknown ports,
//! duplicate names, wires to nowhere, cycles without an explicit
//! allowance, required ports left unwired.
//!
//! A scenario's identity is the SHA-256 of its canonical form: the YAML
//! tree as deterministic CBOR, so formatting, comments and key order do not
//! change it.

mod graph;
mod load;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fluxrig_config::{Node, Pos, Problems};
use fluxrig_gear::{CheckContext, GearType, PortDir, PortSpec, Prepared, Role, WhenFull};
use fluxrig_msg::{EntityId, EntityType};
use sha2::{Digest, Sha256};

pub use graph::GraphFormat;

/// Where gear types come from (the built-in table, in the binary).
pub type Registry = dyn Fn(&str) -> Option<&'static dyn GearType> + Sync;

/// A declared rack.
#[derive(Debug, Clone)]
pub struct RackSpec {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub pos: Pos,
}

/// A gear of the scenario, its config checked.
#[derive(Debug, Clone)]
pub struct GearSpec {
    /// Unique name (letters, digits, `_`, `-`).
    pub name: String,
    /// Position of the name.
    pub pos: Pos,
    /// The gear type.
    pub gear_type: &'static dyn GearType,
    /// The rack it runs on, if the scenario declares racks.
    pub rack: Option<String>,
    /// The checked config.
    pub prepared: Arc<dyn Prepared>,
    /// SHA-256 of the type and canonical config: equal fingerprints mean an
    /// unchanged gear (live swap keeps it running).
    pub fingerprint: [u8; 32],
    /// Stable fluxEntityID derived from the name.
    pub entity: EntityId,
}

impl GearSpec {
    /// The gear's ports.
    pub fn ports(&self) -> &[PortSpec] {
        self.prepared.ports()
    }

    /// The gear's role.
    pub fn role(&self) -> Role {
        self.gear_type.role()
    }
}

/// One end of a wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Gear name.
    pub gear: String,
    /// Port name.
    pub port: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.gear, self.port)
    }
}

/// A wire between two ports.
#[derive(Debug, Clone)]
pub struct WireSpec {
    /// The output port.
    pub from: Endpoint,
    /// The input port.
    pub to: Endpoint,
    /// Lane capacity, in messages.
    pub capacity: usize,
    /// What the lane does when full.
    pub when_full: WhenFull,
    /// This wire may close a cycle.
    pub cycle: bool,
    /// Where it is declared.
    pub pos: Pos,
}

impl WireSpec {
    /// `from -> to`.
    pub fn label(&self) -> String {
        format!("{} -> {}", self.from, self.to)
    }
}

/// Lane capacity when a wire does not set one.
pub const DEFAULT_CAPACITY: usize = 1024;

/// A loaded, valid scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `meta.name`.
    pub name: String,
    /// `meta.version`.
    pub version: String,
    /// Declared racks (may be empty).
    pub racks: Vec<RackSpec>,
    /// Gears in file order.
    pub gears: Vec<GearSpec>,
    /// Wires in file order.
    pub wires: Vec<WireSpec>,
    /// The file it came from, as given.
    pub file: PathBuf,
    /// SHA-256 of the canonical form.
    pub hash: [u8; 32],
}

/// Why a scenario cannot be run on a rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackChoiceError(pub String);

impl std::fmt::Display for RackChoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RackChoiceError {}

impl Scenario {
    /// Loads and validates a scenario file. Relative paths in gear configs
    /// resolve against the file's directory.
    pub fn load(path: &Path, registry: &Registry, data_dir: &Path) -> Result<Scenario, Problems> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems::new(
                file.clone(),
                vec![fluxrig_config::Problem::new(
                    Pos { line: 1, column: 1 },
                    format!("cannot read the file: {e}"),
                )],
            )
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let ctx = CheckContext {
            base_dir,
            data_dir: data_dir.to_path_buf(),
        };
        Scenario::from_str(&text, path, registry, &ctx)
    }

    /// Validates scenario text; `file` names it in problems.
    pub fn from_str(
        text: &str,
        file: &Path,
        registry: &Registry,
        ctx: &CheckContext,
    ) -> Result<Scenario, Problems> {
        load::load(text, file, registry, ctx)
    }

    /// The hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    /// The gear called `name`.
    pub fn gear(&self, name: &str) -> Option<&GearSpec> {
        self.gears.iter().find(|g| g.name == name)
    }

    /// Renders the gear graph.
    pub fn graph(&self, format: GraphFormat) -> String {
        graph::render(self, format)
    }

    /// The part of the scenario one rack runs: its gears and the wires
    /// between them. With declared racks `rack` picks one (it may be omitted
    /// when there is exactly one); gears without `rack` run everywhere.
    /// Wires that cross racks need a bus, which this version does not have.
    pub fn for_rack(&self, rack: Option<&str>) -> Result<Scenario, RackChoiceError> {
        let chosen = match (rack, self.racks.as_slice()) {
            (None, []) => return Ok(self.clone()),
            (Some(r), []) => {
                return Err(RackChoiceError(format!(
                    "--rack {r}: the scenario declares no racks"
                )));
            }
            (None, [only]) => only.name.clone(),
            (None, _) => {
                let names: Vec<_> = self.racks.iter().map(|r| r.name.as_str()).collect();
                return Err(RackChoiceError(format!(
                    "the scenario declares several racks ({}): choose one with --rack",
                    names.join(", ")
                )));
            }
            (Some(r), racks) => {
                if !racks.iter().any(|x| x.name == r) {
                    return Err(RackChoiceError(format!(
                        "rack `{r}` is not declared in the scenario"
                    )));
                }
                r.to_owned()
            }
        };
        let here = |g: &GearSpec| g.rack.as_deref().is_none_or(|r| r == chosen);
        let mut out = self.clone();
        out.gears.retain(here);
        let names: BTreeSet<&str> = out.gears.iter().map(|g| g.name.as_str()).collect();
        for w in &self.wires {
            let (a, b) = (
                names.contains(w.from.gear.as_str()),
                names.contains(w.to.gear.as_str()),
            );
            if a != b {
                return Err(RackChoiceError(format!(
                    "wire {} crosses racks: wires between racks need a NATS bus, which this version does not support yet",
                    w.label()
                )));
            }
        }
        out.wires.retain(|w| names.contains(w.from.gear.as_str()));
        Ok(out)
    }
}

pub(crate) use fluxrig_msg::hex;

/// SHA-256 of a node's canonical form (deterministic CBOR).
pub fn canonical_hash(node: &Node) -> [u8; 32] {
    Sha256::digest(fluxrig_msg::cbor::to_vec(&node.to_value())).into()
}

/// A stable entity id for a gear name: the top 40 bits of its SHA-256.
pub(crate) fn gear_entity(name: &str) -> EntityId {
    let h = Sha256::digest(name.as_bytes());
    let seq = u64::from_be_bytes([0, 0, 0, h[0], h[1], h[2], h[3], h[4]]);
    EntityId::new(EntityType::Gear, 0, seq).unwrap_or_default()
}

/// True for an input port of the gear.
pub(crate) fn has_port(spec: &GearSpec, port: &str, dir: PortDir) -> bool {
    spec.ports().iter().any(|p| p.name == port && p.dir == dir)
}
