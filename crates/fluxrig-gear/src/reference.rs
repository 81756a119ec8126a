//! The generated reference page of a gear type (Markdown), from its
//! declaration and the JSON Schema of its config: `fluxrig gears doc NAME`
//! prints it and `docs/gears/NAME.md` is this text, checked by a test.

use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::kind::{CheckContext, GearType};
use crate::{PortDir, PortSpec};

/// Ports as far as they can be known without a config (routes declare
/// theirs from the config).
fn static_ports(t: &dyn GearType) -> Option<Vec<PortSpec>> {
    let example = fluxrig_config::parse(t.example()).ok()?;
    let entry = example.as_seq().and_then(|s| s.first()).unwrap_or(&example);
    let config = entry
        .get("config")
        .cloned()
        .unwrap_or(fluxrig_config::Node {
            kind: fluxrig_config::NodeKind::Null,
            pos: entry.pos,
        });
    let prepared = t.prepare(&config, &CheckContext::default()).ok()?;
    Some(prepared.ports().to_vec())
}

fn resolve<'a>(schema: &'a Json, v: &'a Json) -> &'a Json {
    match v
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => schema.get("$defs").and_then(|d| d.get(name)).unwrap_or(v),
        None => v,
    }
}

/// A short type description of a property schema.
fn type_of(schema: &Json, prop: &Json) -> String {
    if prop
        .get("$ref")
        .and_then(Json::as_str)
        .is_some_and(|r| r.ends_with("/Duration"))
    {
        return "duration".to_owned();
    }
    let prop = resolve(schema, prop);
    if let Some(variants) = prop
        .get("oneOf")
        .or_else(|| prop.get("anyOf"))
        .and_then(Json::as_array)
    {
        let consts: Vec<String> = variants
            .iter()
            .filter_map(|v| {
                let v = resolve(schema, v);
                v.get("const")
                    .or_else(|| v.get("enum").and_then(|e| e.get(0)))
                    .and_then(Json::as_str)
                    .map(|c| format!("`{c}`"))
            })
            .collect();
        if consts.len() == variants.len() {
            return consts.join(" \\| ");
        }
        let types: Vec<String> = variants
            .iter()
            .filter(|v| v.get("type").and_then(Json::as_str) != Some("null"))
            .map(|v| type_of(schema, v))
            .collect();
        return types.join(" \\| ");
    }
    if let Some(e) = prop.get("enum").and_then(Json::as_array) {
        return e
            .iter()
            .filter_map(Json::as_str)
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match prop.get("type") {
        Some(Json::String(t)) if t == "array" => {
            let item = prop
                .get("items")
                .map_or_else(|| "any".to_owned(), |i| type_of(schema, i));
            format!("list of {item}")
        }
        Some(Json::String(t)) if t == "object" && prop.get("properties").is_some() => {
            "mapping".to_owned()
        }
        Some(Json::String(t)) if t == "object" => "mapping".to_owned(),
        Some(Json::String(t)) => match t.as_str() {
            "string" if prop.get("title").and_then(Json::as_str) == Some("Duration") => {
                "duration".to_owned()
            }
            other => other.to_owned(),
        },
        Some(Json::Array(ts)) => ts
            .iter()
            .filter_map(Json::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" \\| "),
        _ if prop.get("pattern").is_some() => "duration".to_owned(),
        _ => "any".to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The reference page of a gear type.
pub fn render(t: &dyn GearType) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# `{}`\n", t.name());
    let _ = writeln!(out, "{}.\n", t.summary());
    let _ = writeln!(out, "Role: **{}**.\n", t.role().name());
    let _ = writeln!(out, "{}\n", t.docs());

    out.push_str("## Ports\n\n");
    match static_ports(t) {
        Some(ports) => {
            if ports != crate::PortSpec::defaults(t.role()) {
                out.push_str("For the example config below:\n\n");
            }
            out.push_str("| port | direction | required | what |\n|---|---|---|---|\n");
            for p in ports {
                let dir = if p.dir == PortDir::In { "in" } else { "out" };
                let req = if p.required { "yes" } else { "no" };
                let _ = writeln!(
                    out,
                    "| `{}` | {dir} | {req} | {} |",
                    p.name,
                    one_line(&p.doc)
                );
            }
            out.push('\n');
        }
        None => out.push_str("Declared by the config.\n\n"),
    }

    out.push_str("## Config\n\n");
    let schema = t.schema();
    let json = schema.as_value();
    let props = json.get("properties").and_then(Json::as_object);
    let required: Vec<&str> = json
        .get("required")
        .and_then(Json::as_array)
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    match props {
        Some(props) if !props.is_empty() => {
            out.push_str(
                "| key | type | required | default | description |\n|---|---|---|---|---|\n",
            );
            for (name, prop) in props {
                let req = if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    "no"
                };
                let default = prop
                    .get("default")
                    .filter(|d| !d.is_null())
                    .map(|d| format!("`{}`", serde_json::to_string(d).unwrap_or_default()))
                    .unwrap_or_default();
                let desc = prop
                    .get("description")
                    .or_else(|| resolve(json, prop).get("description"))
                    .and_then(Json::as_str)
                    .map(one_line)
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| `{name}` | {} | {req} | {default} | {desc} |",
                    type_of(json, prop)
                );
            }
            out.push('\n');
        }
        _ => out.push_str("None.\n\n"),
    }
    out.push_str("## Example\n\n```yaml\n");
    out.push_str(t.example());
    out.push_str("\n```\n");
    out
}
