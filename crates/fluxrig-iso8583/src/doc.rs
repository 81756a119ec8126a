//! Human documentation of a dialect (`fluxrig spec doc`).

use std::fmt::Write as _;

use crate::spec::{Element, Format, Length, Spec, Subfields, Usage};

fn length(f: &Format) -> String {
    match f.length {
        Length::Fixed(n) => format!("{n}"),
        Length::Var {
            digits,
            max,
            prefix,
        } => format!(
            "{}VAR ..{max} ({} prefix)",
            "L".repeat(usize::from(digits)),
            prefix.as_str()
        ),
    }
}

fn pad(f: &Format) -> String {
    f.pad.map_or_else(String::new, |p| {
        format!(
            "{} '{}'",
            if p.left { "left" } else { "right" },
            char::from(p.char)
        )
    })
}

struct Row {
    cells: [String; 9],
}

fn rows(spec: &Spec) -> Vec<Row> {
    let mut out = Vec::new();
    for el in spec.elements() {
        out.push(row(el, &el.number.to_string(), &el.name, &el.format));
        match &el.subfields {
            Some(Subfields::Positional { fields } | Subfields::Bitmap { fields, .. }) => {
                for (n, sf) in fields {
                    let mut r = row(el, &format!("{}.{n}", el.number), &sf.name, &sf.format);
                    r.cells[6] = format!("{}.sf{n}", el.data_path().join("."));
                    sf.sensitivity
                        .map_or("", |s| s.as_str())
                        .clone_into(&mut r.cells[7]);
                    out.push(r);
                }
            }
            Some(Subfields::Tlv { tags }) => {
                for (tag, t) in tags {
                    out.push(Row {
                        cells: [
                            format!("{}.{tag}", el.number),
                            t.name.clone(),
                            "b".into(),
                            "TLV".into(),
                            String::new(),
                            String::new(),
                            format!("tag {tag}"),
                            t.sensitivity.map_or("", |s| s.as_str()).to_owned(),
                            String::new(),
                        ],
                    });
                }
            }
            None => {}
        }
    }
    out
}

fn row(el: &Element, num: &str, name: &str, f: &Format) -> Row {
    Row {
        cells: [
            num.to_owned(),
            name.to_owned(),
            f.kind.as_str().to_owned(),
            length(f),
            f.encoding.as_str().to_owned(),
            pad(f),
            el.data_path().join("."),
            el.sensitivity.map_or("", |s| s.as_str()).to_owned(),
            el.description.clone().unwrap_or_default(),
        ],
    }
}

const HEAD: [&str; 9] = [
    "DE",
    "Name",
    "Type",
    "Length",
    "Encoding",
    "Pad",
    "Data path",
    "Sensitivity",
    "Notes",
];

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn usage_list(spec: &Spec, mti: &str, u: Usage) -> String {
    spec.message(mti).map_or_else(String::new, |m| {
        m.usage
            .iter()
            .filter(|(_, x)| **x == u)
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// The dialect as Markdown.
pub fn to_markdown(spec: &Spec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} {}\n", spec.name(), spec.version());
    if let Some(d) = spec.description() {
        let _ = writeln!(s, "{d}\n");
    }
    let _ = writeln!(s, "- Spec hash (SHA-256): `{}`", spec.hash());
    let _ = writeln!(
        s,
        "- MTI: {:?}; bitmaps: {:?}\n",
        spec.mti_encoding(),
        spec.bitmap_encoding()
    );
    let _ = writeln!(s, "## Data elements\n");
    let _ = writeln!(s, "| {} |", HEAD.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(HEAD.len()));
    for r in rows(spec) {
        let cells: Vec<String> = r.cells.iter().map(|c| md_escape(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    if spec.messages().next().is_some() {
        let _ = writeln!(s, "\n## Messages\n");
        let _ = writeln!(
            s,
            "| MTI | Name | Response | Mandatory | Forbidden | Echoed in response |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (mti, m) in spec.messages() {
            let echo: Vec<String> = m.echo.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "| {mti} | {} | {} | {} | {} | {} |",
                md_escape(m.name.as_deref().unwrap_or("")),
                m.response.as_deref().unwrap_or(""),
                usage_list(spec, mti, Usage::Mandatory),
                usage_list(spec, mti, Usage::Forbidden),
                echo.join(", ")
            );
        }
    }
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The dialect as a standalone HTML page.
pub fn to_html(spec: &Spec) -> String {
    let mut s = String::new();
    let title = html_escape(&format!("{} {}", spec.name(), spec.version()));
    let _ = write!(
        s,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>\n\
         <h1>{title}</h1>\n"
    );
    if let Some(d) = spec.description() {
        let _ = writeln!(s, "<p>{}</p>", html_escape(d));
    }
    let _ = writeln!(
        s,
        "<p>Spec hash (SHA-256): <code>{}</code></p>",
        spec.hash()
    );
    let _ = writeln!(s, "<h2>Data elements</h2>\n<table>\n<tr>");
    for h in HEAD {
        let _ = write!(s, "<th>{h}</th>");
    }
    let _ = writeln!(s, "</tr>");
    for r in rows(spec) {
        let _ = write!(s, "<tr>");
        for c in &r.cells {
            let _ = write!(s, "<td>{}</td>", html_escape(c));
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</table>");
    if spec.messages().next().is_some() {
        let _ = writeln!(
            s,
            "<h2>Messages</h2>\n<table>\n<tr><th>MTI</th><th>Name</th><th>Response</th>\
             <th>Mandatory</th><th>Forbidden</th><th>Echoed</th></tr>"
        );
        for (mti, m) in spec.messages() {
            let echo: Vec<String> = m.echo.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "<tr><td>{mti}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(m.name.as_deref().unwrap_or("")),
                m.response.as_deref().unwrap_or(""),
                usage_list(spec, mti, Usage::Mandatory),
                usage_list(spec, mti, Usage::Forbidden),
                echo.join(", ")
            );
        }
        let _ = writeln!(s, "</table>");
    }
    s.push_str("</body></html>\n");
    s
}
