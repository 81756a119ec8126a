//! Loading a scenario: walk the YAML tree, collect every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fluxrig_config::{Node, NodeKind, Pos, Problem, Problems};
use fluxrig_gear::{CheckContext, PortDir, WhenFull};
use sha2::{Digest, Sha256};

use crate::{
    DEFAULT_CAPACITY, Endpoint, GearSpec, RackSpec, Registry, Scenario, WireSpec, canonical_hash,
    gear_entity, has_port,
};

/// Collects problems while walking.
struct Walk {
    problems: Vec<Problem>,
}

impl Walk {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem::new(pos, message));
    }

    /// The entries of a mapping, reporting unknown keys; `None` (and a
    /// problem) when the node is not a mapping.
    fn mapping<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<BTreeMap<&'a str, &'a Node>> {
        let Some(entries) = node.as_map() else {
            self.err(
                node.pos,
                format!("{what} must be a mapping, not {}", node.type_name()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            match k.as_str() {
                Some(key) if allowed.contains(&key) => {
                    out.insert(key, v);
                }
                Some(key) => self.err(
                    k.pos,
                    format!(
                        "{what}: unknown key `{key}` (expected one of: {})",
                        allowed.join(", ")
                    ),
                ),
                None => self.err(k.pos, format!("{what}: keys must be strings")),
            }
        }
        Some(out)
    }

    fn required<'a>(
        &mut self,
        map: &BTreeMap<&str, &'a Node>,
        key: &str,
        what: &str,
        at: Pos,
    ) -> Option<&'a Node> {
        let n = map.get(key).copied();
        if n.is_none() {
            self.err(at, format!("{what}: missing required key `{key}`"));
        }
        n
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        let t = node.scalar_text();
        if t.is_none() {
            self.err(
                node.pos,
                format!("{what} must be a string, not {}", node.type_name()),
            );
        }
        t
    }

    fn name(&mut self, node: &Node, what: &str) -> Option<String> {
        let name = self.text(node, what)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.err(
                node.pos,
                format!("{what} `{name}` must be letters, digits, `_` or `-`"),
            );
            return None;
        }
        Some(name)
    }

    fn seq<'a>(&mut self, node: &'a Node, what: &str) -> &'a [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            NodeKind::Null => &[],
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a list, not {}", node.type_name()),
                );
                &[]
            }
        }
    }
}

fn endpoint(w: &mut Walk, node: &Node, what: &str) -> Option<Endpoint> {
    let s = w.text(node, what)?;
    match s.split_once('.') {
        Some((g, p)) if !g.is_empty() && !p.is_empty() && !p.contains('.') => Some(Endpoint {
            gear: g.to_owned(),
            port: p.to_owned(),
        }),
        _ => {
            w.err(node.pos, format!("{what} `{s}` must be `gear.port`"));
            None
        }
    }
}

pub(crate) fn load(
    text: &str,
    file: &Path,
    registry: &Registry,
    ctx: &CheckContext,
) -> Result<Scenario, Problems> {
    let file_name = file.display().to_string();
    let root =
        fluxrig_config::parse(text).map_err(|p| Problems::new(file_name.clone(), vec![p]))?;
    let mut w = Walk {
        problems: Vec::new(),
    };
    let top = w
        .mapping(&root, "scenario", &["meta", "racks", "gears", "wires"])
        .unwrap_or_default();

    // meta
    let (mut name, mut version) = (String::new(), String::new());
    if let Some(meta) = w.required(&top, "meta", "scenario", root.pos)
        && let Some(m) = w.mapping(meta, "meta", &["name", "version", "description"])
    {
        if let Some(n) = w.required(&m, "name", "meta", meta.pos) {
            name = w.text(n, "meta.name").unwrap_or_default();
        }
        if let Some(v) = w.required(&m, "version", "meta", meta.pos) {
            version = w.text(v, "meta.version").unwrap_or_default();
        }
        if let Some(d) = m.get("description") {
            w.text(d, "meta.description");
        }
    }

    // racks
    let mut racks: Vec<RackSpec> = Vec::new();
    if let Some(node) = top.get("racks") {
        for (i, r) in w.seq(node, "racks").iter().enumerate() {
            let what = format!("racks[{i}]");
            let Some(m) = w.mapping(r, &what, &["name", "description"]) else {
                continue;
            };
            let Some(n) = w.required(&m, "name", &what, r.pos) else {
                continue;
            };
            let Some(rn) = w.name(n, "rack name") else {
                continue;
            };
            if let Some(first) = racks.iter().find(|x| x.name == rn) {
                w.err(
                    n.pos,
                    format!(
                        "duplicate rack name `{rn}` (first declared at {})",
                        first.pos
                    ),
                );
                continue;
            }
            racks.push(RackSpec {
                name: rn,
                pos: n.pos,
            });
        }
    }

    // gears
    let mut gears: Vec<GearSpec> = Vec::new();
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    let gears_node = w.required(&top, "gears", "scenario", root.pos);
    let empty = Node {
        kind: NodeKind::Null,
        pos: root.pos,
    };
    for (i, g) in gears_node
        .map(|n| w.seq(n, "gears"))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let what = format!("gears[{i}]");
        let Some(m) = w.mapping(g, &what, &["name", "type", "rack", "config"]) else {
            continue;
        };
        let gname = w
            .required(&m, "name", &what, g.pos)
            .and_then(|n| w.name(n, "gear name").map(|s| (s, n.pos)));
        if let Some((gn, pos)) = &gname {
            if let Some(first) = seen.get(gn) {
                w.err(
                    *pos,
                    format!("duplicate gear name `{gn}` (first declared at {first})"),
                );
            } else {
                seen.insert(gn.clone(), *pos);
            }
        }
        let label = gname
            .as_ref()
            .map_or_else(|| what.clone(), |(n, _)| format!("gear `{n}`"));
        let rack = m.get("rack").and_then(|r| {
            let rn = w.text(r, "rack")?;
            if !racks.iter().any(|x| x.name == rn) {
                w.err(
                    r.pos,
                    format!("{label}: rack `{rn}` is not declared in `racks`"),
                );
            }
            Some(rn)
        });
        let Some(type_node) = w.required(&m, "type", &what, g.pos) else {
            continue;
        };
        let Some(type_name) = w.text(type_node, "type") else {
            continue;
        };
        let Some(gear_type) = registry(&type_name) else {
            w.err(
                type_node.pos,
                format!("{label}: unknown gear type `{type_name}` (see `fluxrig gears`)"),
            );
            continue;
        };
        let config = m.get("config").copied().unwrap_or(&empty);
        let prepared = match gear_type.prepare(config, ctx) {
            Ok(p) => p,
            Err(problems) => {
                for p in problems {
                    w.err(p.pos, format!("{label}: {}", p.message));
                }
                continue;
            }
        };
        let Some((gn, pos)) = gname else { continue };
        let mut h = Sha256::new();
        h.update(type_name.as_bytes());
        h.update([0]);
        h.update(canonical_hash(config));
        let entity = gear_entity(&gn);
        gears.push(GearSpec {
            name: gn,
            pos,
            gear_type,
            rack,
            prepared,
            fingerprint: h.finalize().into(),
            entity,
        });
    }
    let valid_gears: BTreeSet<&str> = gears.iter().map(|g| g.name.as_str()).collect();
    let mut entities = BTreeMap::new();
    for g in &gears {
        if let Some(other) = entities.insert(g.entity, &g.name) {
            w.err(
                g.pos,
                format!(
                    "gear `{}`: its id collides with gear `{other}`; rename one of them",
                    g.name
                ),
            );
        }
    }

    // wires
    let mut wires: Vec<WireSpec> = Vec::new();
    // Every port some wire names, valid or not: a port named by a broken
    // wire is not reported again as unwired.
    let mut mentioned: BTreeSet<Endpoint> = BTreeSet::new();
    if let Some(node) = top.get("wires") {
        for (i, wn) in w.seq(node, "wires").iter().enumerate() {
            let what = format!("wires[{i}]");
            let Some(m) = w.mapping(wn, &what, &["from", "to", "capacity", "when_full", "cycle"])
            else {
                continue;
            };
            let from = w
                .required(&m, "from", &what, wn.pos)
                .and_then(|n| endpoint(&mut w, n, "from").map(|e| (e, n.pos)));
            let to = w
                .required(&m, "to", &what, wn.pos)
                .and_then(|n| endpoint(&mut w, n, "to").map(|e| (e, n.pos)));
            mentioned.extend(from.iter().chain(&to).map(|(e, _)| e.clone()));
            let mut ok = true;
            for (end, dir) in [(&from, PortDir::Out), (&to, PortDir::In)] {
                let Some((e, pos)) = end else {
                    ok = false;
                    continue;
                };
                match gears.iter().find(|g| g.name == e.gear) {
                    Some(g) if has_port(g, &e.port, dir) => {}
                    Some(g) => {
                        ok = false;
                        let kind = if dir == PortDir::Out {
                            "output"
                        } else {
                            "input"
                        };
                        let ports: Vec<_> = g
                            .ports()
                            .iter()
                            .filter(|p| p.dir == dir)
                            .map(|p| p.name.to_string())
                            .collect();
                        let have = if ports.is_empty() {
                            "none".to_owned()
                        } else {
                            ports.join(", ")
                        };
                        w.err(
                            *pos,
                            format!(
                                "gear `{}` ({}) has no {kind} port `{}` ({kind} ports: {have})",
                                g.name,
                                g.gear_type.name(),
                                e.port
                            ),
                        );
                    }
                    // A gear whose own definition failed was reported already.
                    None if seen.contains_key(&e.gear)
                        && !valid_gears.contains(e.gear.as_str()) =>
                    {
                        ok = false;
                    }
                    None => {
                        ok = false;
                        w.err(
                            *pos,
                            format!("wire to nowhere: there is no gear `{}`", e.gear),
                        );
                    }
                }
            }
            let capacity = match m.get("capacity") {
                None => DEFAULT_CAPACITY,
                Some(n) => match n.kind {
                    NodeKind::Int(c) if (1..=1 << 20).contains(&c) => {
                        usize::try_from(c).unwrap_or(DEFAULT_CAPACITY)
                    }
                    _ => {
                        w.err(n.pos, "capacity must be an integer from 1 to 1048576");
                        DEFAULT_CAPACITY
                    }
                },
            };
            let when_full = match m.get("when_full").map(|n| (n, n.as_str())) {
                None | Some((_, Some("block"))) => WhenFull::Block,
                Some((_, Some("drop_newest"))) => WhenFull::DropNewest,
                Some((n, _)) => {
                    w.err(n.pos, "when_full must be `block` or `drop_newest`");
                    WhenFull::Block
                }
            };
            let cycle = match m.get("cycle").map(|n| (n, &n.kind)) {
                None => false,
                Some((_, NodeKind::Bool(b))) => *b,
                Some((n, _)) => {
                    w.err(n.pos, "cycle must be true or false");
                    false
                }
            };
            if let (true, Some((from, _)), Some((to, _))) = (ok, from, to) {
                if let Some(prev) = wires.iter().find(|x| x.from == from && x.to == to) {
                    w.err(
                        wn.pos,
                        format!(
                            "duplicate wire {from} -> {to} (first declared at {})",
                            prev.pos
                        ),
                    );
                    continue;
                }
                wires.push(WireSpec {
                    from,
                    to,
                    capacity,
                    when_full,
                    cycle,
                    pos: wn.pos,
                });
            }
        }
    }

    // required ports
    for g in &gears {
        for p in g.ports().iter().filter(|p| p.required) {
            let wired = mentioned.contains(&Endpoint {
                gear: g.name.clone(),
                port: p.name.to_string(),
            });
            if !wired {
                let kind = if p.dir == PortDir::Out {
                    "output"
                } else {
                    "input"
                };
                w.err(
                    g.pos,
                    format!(
                        "gear `{}`: required {kind} port `{}` is not wired",
                        g.name, p.name
                    ),
                );
            }
        }
    }

    // cycles
    if let Some((wire, path)) = find_cycle(&gears, &wires) {
        w.err(
            wire.pos,
            format!(
                "wire {} closes a cycle ({}); mark one of its wires with `cycle: true` to allow it",
                wire.label(),
                path.join(" -> ")
            ),
        );
    }

    if !w.problems.is_empty() {
        return Err(Problems::new(file_name, w.problems));
    }
    Ok(Scenario {
        name,
        version,
        racks,
        gears,
        wires,
        file: file.to_path_buf(),
        hash: canonical_hash(&root),
    })
}

/// The first cycle among wires not marked `cycle: true`: the wire that
/// closes it and the gears along it.
fn find_cycle<'a>(
    gears: &[GearSpec],
    wires: &'a [WireSpec],
) -> Option<(&'a WireSpec, Vec<String>)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        g: &str,
        wires: &'a [WireSpec],
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<(&'a WireSpec, Vec<String>)> {
        marks.insert(g.to_owned(), Mark::Active);
        stack.push(g.to_owned());
        for w in wires.iter().filter(|w| !w.cycle && w.from.gear == g) {
            match marks.get(&w.to.gear).copied().unwrap_or(Mark::New) {
                Mark::Active => {
                    let start = stack.iter().position(|s| *s == w.to.gear).unwrap_or(0);
                    let mut path = stack[start..].to_vec();
                    path.push(w.to.gear.clone());
                    return Some((w, path));
                }
                Mark::New => {
                    if let Some(found) = visit(&w.to.gear, wires, marks, stack) {
                        return Some(found);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(g.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for g in gears {
        if marks.get(&g.name).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(found) = visit(&g.name, wires, &mut marks, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}
