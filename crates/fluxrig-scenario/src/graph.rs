//! `fluxrig scenario graph`: the gear graph as Mermaid or Graphviz dot.

use std::fmt::Write as _;

use crate::Scenario;

/// Output format of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz dot.
    Dot,
}

fn quote_dot(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub(crate) fn render(s: &Scenario, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            let _ = writeln!(out, "flowchart LR");
            for g in &s.gears {
                let _ = writeln!(
                    out,
                    "  {}[\"{}<br/><small>{}</small>\"]",
                    g.name,
                    g.name,
                    g.gear_type.name()
                );
            }
            for w in &s.wires {
                let style = if w.cycle { "-.->" } else { "-->" };
                let _ = writeln!(
                    out,
                    "  {} {style}|{} → {}| {}",
                    w.from.gear, w.from.port, w.to.port, w.to.gear
                );
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph {} {{", quote_dot(&s.name));
            let _ = writeln!(out, "  rankdir=LR;");
            let _ = writeln!(out, "  node [shape=box, fontname=\"Helvetica\"];");
            for g in &s.gears {
                let _ = writeln!(
                    out,
                    "  {} [label={}];",
                    quote_dot(&g.name),
                    quote_dot(&format!("{}\n{}", g.name, g.gear_type.name()))
                );
            }
            for w in &s.wires {
                let style = if w.cycle { ", style=dashed" } else { "" };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={}{style}];",
                    quote_dot(&w.from.gear),
                    quote_dot(&w.to.gear),
                    quote_dot(&format!("{} → {}", w.from.port, w.to.port))
                );
            }
            out.push_str("}\n");
        }
    }
    out
}
