//! Scenario validation: every problem, each at its position.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use fluxrig_gear::CheckContext;
use fluxrig_scenario::{GraphFormat, Scenario};

fn load(text: &str) -> Result<Scenario, String> {
    let ctx = CheckContext {
        base_dir: std::env::temp_dir(),
        data_dir: std::env::temp_dir(),
    };
    Scenario::from_str(text, Path::new("s.yaml"), &fluxrig_gears::find, &ctx)
        .map_err(|p| p.to_string())
}

const QUICKSTART: &str = "meta: {name: quickstart, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 1000, interval: 1ms}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: file_out, config: {path: out/quickstart.jsonl, format: jsonl}}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

#[test]
fn the_quickstart_is_valid() {
    let s = load(QUICKSTART).unwrap();
    assert_eq!(
        (s.name.as_str(), s.version.as_str()),
        ("quickstart", "1.0.0")
    );
    assert_eq!(s.gears.len(), 3);
    assert_eq!(s.wires.len(), 2);
}

#[test]
fn the_repository_example_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml");
    Scenario::load(&file, &fluxrig_gears::find, &std::env::temp_dir()).unwrap();
}

#[test]
fn hash_ignores_formatting_key_order_and_comments() {
    let reordered = "# a comment
wires:
  - to: enrich.in
    from: source.out
  - {to: sink.in, from: enrich.out}
gears:
  - name: source
    config: {interval: 1ms, count: 1000}
    type: generate
  - {type: map, name: enrich, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: file_out, config: {format: jsonl, path: out/quickstart.jsonl}}
meta:
  version: 1.0.0
  name: quickstart
";
    assert_eq!(
        load(QUICKSTART).unwrap().hash,
        load(reordered).unwrap().hash
    );
    let changed = QUICKSTART.replace("count: 1000", "count: 1001");
    assert_ne!(load(QUICKSTART).unwrap().hash, load(&changed).unwrap().hash);
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let bad = "meta: {name: broken}
extra: 1
gears:
  - {name: source, type: generate, config: {count: -1}}
  - {name: enrich, type: mapp}
  - {name: enrich, type: map, config: {source: '.x = nope()'}}
  - {name: sink, type: file_out, config: {path: o.jsonl, formatt: jsonl}}
  - {name: route1, type: route, config: {rules: [{when: 'true', port: a}], default: b}}
wires:
  - {from: source.out, to: sink.in}
  - {from: route1.a, to: ghost.in}
  - {from: sink.out, to: route1.in}
  - {from: source, to: route1.in}
";
    let err = load(bad).unwrap_err();
    let expected = [
        "s.yaml:1:7: meta: missing required key `version`",
        "s.yaml:2:1: scenario: unknown key `extra` (expected one of: meta, racks, gears, wires)",
        "s.yaml:4:52: gear `source`: count: invalid value: integer `-1`, expected u64",
        "s.yaml:5:26: gear `enrich`: unknown gear type `mapp` (see `fluxrig gears`)",
        "s.yaml:6:12: duplicate gear name `enrich` (first declared at 5:12)",
        "s.yaml:6:48: gear `enrich`: source: VRL error at line 1, column 6 of the program: call to undefined function",
        "s.yaml:7:58: gear `sink`: unknown field `formatt`, expected one of `path`, `format`, `envelope`, `mode`",
        "s.yaml:8:12: gear `route1`: required output port `b` is not wired",
        "s.yaml:11:26: wire to nowhere: there is no gear `ghost`",
        // `sink.out` (line 12) is not reported again: gear `sink` is already in error.
        "s.yaml:13:12: from `source` must be `gear.port`",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(want),
            "\n got: {line}\nwant: {want}\n\n{err}"
        );
    }
}

#[test]
fn cycles_need_an_explicit_allowance() {
    let cyclic = "meta: {name: c, version: 1}
gears:
  - {name: src, type: generate, config: {count: 1}}
  - {name: a, type: map, config: {source: '.'}}
  - {name: b, type: route, config: {rules: [{when: '.again == true', port: back}], default: done}}
  - {name: out, type: discard}
wires:
  - {from: src.out, to: a.in}
  - {from: a.out, to: b.in}
  - {from: b.back, to: a.in}
  - {from: b.done, to: out.in}
";
    let err = load(cyclic).unwrap_err();
    assert!(
        err.starts_with("s.yaml:10:5: wire b.back -> a.in closes a cycle (a -> b -> a)"),
        "{err}"
    );
    let allowed = cyclic.replace(
        "{from: b.back, to: a.in}",
        "{from: b.back, to: a.in, cycle: true}",
    );
    load(&allowed).unwrap();
}

#[test]
fn wire_options_are_checked() {
    let s = QUICKSTART.replace(
        "{from: source.out, to: enrich.in}",
        "{from: source.out, to: enrich.in, capacity: 0, when_full: sometimes}",
    );
    let err = load(&s).unwrap_err();
    assert!(
        err.contains("capacity must be an integer from 1 to 1048576"),
        "{err}"
    );
    assert!(
        err.contains("when_full must be `block` or `drop_newest`"),
        "{err}"
    );
}

#[test]
fn racks_select_their_gears() {
    let s = load(
        "meta: {name: r, version: 1}
racks: [{name: edge}, {name: core}]
gears:
  - {name: a, type: generate, rack: edge, config: {count: 1}}
  - {name: b, type: discard, rack: edge}
  - {name: c, type: generate, rack: core, config: {count: 1}}
  - {name: d, type: discard, rack: core}
wires:
  - {from: a.out, to: b.in}
  - {from: c.out, to: d.in}
",
    )
    .unwrap();
    let edge = s.for_rack(Some("edge")).unwrap();
    assert_eq!(
        edge.gears
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(edge.wires.len(), 1);
    assert!(
        s.for_rack(None)
            .unwrap_err()
            .0
            .contains("choose one with --rack")
    );
    assert!(s.for_rack(Some("nope")).is_err());
}

#[test]
fn graphs_render_every_gear_and_wire() {
    let s = load(QUICKSTART).unwrap();
    let mermaid = s.graph(GraphFormat::Mermaid);
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert!(mermaid.contains("source -->|out → in| enrich"));
    let dot = s.graph(GraphFormat::Dot);
    assert!(
        dot.contains("\"enrich\" -> \"sink\" [label=\"out → in\"];"),
        "{dot}"
    );
}

#[test]
fn malformed_yaml_is_one_problem_with_a_position() {
    let err = load("meta: {name: x\ngears: [").unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("s.yaml:"), "{err}");
}
