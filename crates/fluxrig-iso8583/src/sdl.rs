//! The Spec Definition Language: YAML dialect files, loaded strictly and
//! checked as a whole.
//!
//! The format is described in `docs/design/sdl.md`. In short:
//!
//! ```yaml
//! sdl: 1
//! name: my-dialect
//! version: "1.0"
//! mti: ascii                 # ascii | ebcdic | bcd
//! bitmap: hex                # binary | hex
//! defaults: { text: ascii, numeric: ascii, binary: binary, prefix: ascii }
//! elements:
//!   2:  { name: PAN, type: n, var: LL, max: 19, alias: card.pan, sensitivity: pan }
//!   4:  { name: Amount, type: n, fixed: 12, alias: amount.transaction }
//! messages:
//!   "0100": { response: "0110", mandatory: [2, 4], echo: [2, 4] }
//! ```
//!
//! Unknown keys are errors. Parse errors stop at the first problem (YAML
//! cannot be trusted past it); once parsed, every semantic problem is
//! reported, each with its `line:column`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::spec::{
    BitmapEncoding, CharType, Element, Encoding, Format, Length, Limits, MAX_ELEMENT, MessageRule,
    MtiEncoding, Pad, PrefixEncoding, Sensitivity, Spec, Subfield, Subfields, TlvTag, Usage,
};

/// Largest SDL file accepted, in bytes.
pub const MAX_SDL_SIZE: usize = 1 << 20;

/// One problem in a dialect file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// A dialect file that cannot be used: every problem found, each printed
/// as `FILE:LINE:COL: message` on its own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file name used in messages.
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The YAML model.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    sdl: Spanned<u64>,
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    mti: Spanned<MtiEncoding>,
    bitmap: Spanned<BitmapEncoding>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    elements: Spanned<BTreeMap<String, Spanned<RawElement>>>,
    #[serde(default)]
    messages: BTreeMap<String, Spanned<RawMessage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    text: Option<Spanned<Encoding>>,
    #[serde(default)]
    numeric: Option<Spanned<Encoding>>,
    #[serde(default)]
    binary: Option<Spanned<Encoding>>,
    #[serde(default)]
    prefix: Option<Spanned<PrefixEncoding>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(clippy::upper_case_acronyms)] // the SDL spelling of ISO 8583 prefixes
enum VarKind {
    L,
    LL,
    LLL,
    LLLL,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Left,
    Right,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPad {
    side: Side,
    char: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElement {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<CharType>,
    #[serde(default)]
    fixed: Option<Spanned<u64>>,
    #[serde(default)]
    var: Option<Spanned<VarKind>>,
    #[serde(default)]
    max: Option<Spanned<u64>>,
    #[serde(default)]
    prefix: Option<Spanned<PrefixEncoding>>,
    #[serde(default)]
    encoding: Option<Spanned<Encoding>>,
    #[serde(default)]
    pad: Option<Spanned<RawPad>>,
    #[serde(default)]
    alias: Option<Spanned<String>>,
    #[serde(default)]
    sensitivity: Option<Spanned<Sensitivity>>,
    #[serde(default)]
    subfields: Option<Spanned<RawSubfields>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    Positional,
    Bitmap,
    Tlv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubfields {
    layout: Spanned<Layout>,
    #[serde(default)]
    bitmap: Option<Spanned<BitmapEncoding>>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<RawSubfield>>,
    #[serde(default)]
    tags: BTreeMap<String, Spanned<RawTag>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubfield {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<CharType>,
    #[serde(default)]
    fixed: Option<Spanned<u64>>,
    #[serde(default)]
    var: Option<Spanned<VarKind>>,
    #[serde(default)]
    max: Option<Spanned<u64>>,
    #[serde(default)]
    prefix: Option<Spanned<PrefixEncoding>>,
    #[serde(default)]
    encoding: Option<Spanned<Encoding>>,
    #[serde(default)]
    pad: Option<Spanned<RawPad>>,
    #[serde(default)]
    sensitivity: Option<Spanned<Sensitivity>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    name: Spanned<String>,
    #[serde(default)]
    sensitivity: Option<Spanned<Sensitivity>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    response: Option<Spanned<String>>,
    #[serde(default)]
    mandatory: Vec<Spanned<u64>>,
    #[serde(default)]
    optional: Vec<Spanned<u64>>,
    #[serde(default)]
    forbidden: Vec<Spanned<u64>>,
    #[serde(default)]
    echo: Vec<Spanned<u64>>,
}

// ---------------------------------------------------------------------------
// Loading.

/// Loads a dialect from a file; problems are reported against its path.
pub fn load_file(path: &Path) -> Result<Spec, LoadError> {
    let file = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| LoadError {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }],
    })?;
    let text = String::from_utf8(text).map_err(|e| LoadError {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        }],
    })?;
    load_str(&file, &text)
}

/// Loads a dialect from YAML text; `file` names it in problems.
pub fn load_str(file: &str, yaml: &str) -> Result<Spec, LoadError> {
    let fail = |problems: Vec<Problem>| LoadError {
        file: file.to_owned(),
        problems,
    };
    if yaml.len() > MAX_SDL_SIZE {
        return Err(fail(vec![Problem {
            line: 0,
            column: 0,
            message: format!(
                "file of {} bytes is over the limit of {MAX_SDL_SIZE}",
                yaml.len()
            ),
        }]));
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let raw: RawSpec = serde_saphyr::from_str_with_options(yaml, options)
        .map_err(|e| fail(vec![parse_problem(&e)]))?;
    let mut cx = Checker::default();
    let spec = cx.compile(raw);
    cx.problems.sort_by_key(|p| (p.line, p.column));
    match spec {
        spec if cx.problems.is_empty() => Ok(spec),
        _ => Err(fail(cx.problems)),
    }
}

fn parse_problem(e: &serde_saphyr::Error) -> Problem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    // The rendered message may end with its own position; keep one copy.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    Problem {
        line,
        column,
        message,
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

/// The shared fields of an element and a subfield.
struct RawFormat<'a> {
    kind: &'a Spanned<CharType>,
    fixed: Option<&'a Spanned<u64>>,
    var: Option<&'a Spanned<VarKind>>,
    max: Option<&'a Spanned<u64>>,
    prefix: Option<&'a Spanned<PrefixEncoding>>,
    encoding: Option<&'a Spanned<Encoding>>,
    pad: Option<&'a Spanned<RawPad>>,
}

#[derive(Clone, Copy)]
struct Defaults {
    text: Encoding,
    numeric: Encoding,
    binary: Encoding,
    prefix: PrefixEncoding,
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

fn is_segment(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// `de` followed by digits: the key of elements without alias.
fn is_de_key(s: &str) -> bool {
    s.len() > 2 && s.starts_with("de") && s.as_bytes()[2..].iter().all(u8::is_ascii_digit)
}

fn is_mti(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|c| c.is_ascii_digit())
}

impl Checker {
    fn at(&mut self, loc: Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    fn compile(&mut self, raw: RawSpec) -> Spec {
        if raw.sdl.value != 1 {
            self.at(
                raw.sdl.referenced,
                format!(
                    "unsupported sdl version {} (this fluxrig reads 1)",
                    raw.sdl.value
                ),
            );
        }
        if !is_name(&raw.name.value) {
            self.at(
                raw.name.referenced,
                "name must be 1-64 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
            );
        }
        if raw.version.value.is_empty() {
            self.at(raw.version.referenced, "version must not be empty");
        }
        let d = raw.defaults.unwrap_or_default();
        let defaults = Defaults {
            text: self.default_enc(
                d.text.as_ref(),
                Encoding::Ascii,
                &[Encoding::Ascii, Encoding::Ebcdic],
                "text",
            ),
            numeric: self.default_enc(
                d.numeric.as_ref(),
                Encoding::Ascii,
                &[Encoding::Ascii, Encoding::Ebcdic, Encoding::Bcd],
                "numeric",
            ),
            binary: self.default_enc(
                d.binary.as_ref(),
                Encoding::Binary,
                &[Encoding::Binary, Encoding::Hex],
                "binary",
            ),
            prefix: d.prefix.map_or(PrefixEncoding::Ascii, |p| p.value),
        };

        let mut elements: Vec<Option<Element>> = vec![None; usize::from(MAX_ELEMENT) + 1];
        let mut alias_at: BTreeMap<String, (Location, u8)> = BTreeMap::new();
        for (key, el) in &raw.elements.value {
            let loc = el.referenced;
            let number = match key.parse::<u8>() {
                Ok(1) => {
                    self.at(
                        loc,
                        "element 1 is the secondary bitmap: the codec writes it, do not define it",
                    );
                    continue;
                }
                Ok(n) if (2..=MAX_ELEMENT).contains(&n) && !key.starts_with('0') => n,
                _ => {
                    self.at(
                        loc,
                        format!("element key `{key}` is not a number in 2..=128"),
                    );
                    continue;
                }
            };
            let e = &el.value;
            let format = self.format(
                &format!("element {number}"),
                &RawFormat {
                    kind: &e.kind,
                    fixed: e.fixed.as_ref(),
                    var: e.var.as_ref(),
                    max: e.max.as_ref(),
                    prefix: e.prefix.as_ref(),
                    encoding: e.encoding.as_ref(),
                    pad: e.pad.as_ref(),
                },
                defaults,
                loc,
            );
            let subfields = e
                .subfields
                .as_ref()
                .and_then(|s| self.subfields(number, format.as_ref(), s, defaults));
            let mut path = vec![format!("de{number}")];
            if let Some(alias) = &e.alias {
                let a = &alias.value;
                let segs: Vec<&str> = a.split('.').collect();
                if !segs.iter().all(|s| is_segment(s)) {
                    self.at(
                        alias.referenced,
                        format!(
                            "alias `{a}` must be dot-separated segments of a-z, 0-9, '_' starting with a letter"
                        ),
                    );
                } else if segs[0] == "mti" || is_de_key(segs[0]) {
                    self.at(
                        alias.referenced,
                        format!("alias `{a}` starts with a reserved key (`mti`, `de<n>`)"),
                    );
                } else if let Some((_, other)) = alias_at.get(a) {
                    self.at(
                        alias.referenced,
                        format!("alias `{a}` is already used by element {other}"),
                    );
                } else {
                    alias_at.insert(a.clone(), (alias.referenced, number));
                    path = segs.iter().map(|s| (*s).to_owned()).collect();
                }
            }
            if e.name.value.trim().is_empty() {
                self.at(e.name.referenced, "name must not be empty");
            }
            if let Some(format) = format {
                elements[usize::from(number)] = Some(Element {
                    number,
                    name: e.name.value.clone(),
                    format,
                    alias: e.alias.as_ref().map(|a| a.value.clone()),
                    sensitivity: e.sensitivity.as_ref().map(|s| s.value),
                    subfields,
                    description: e.description.clone(),
                    path,
                });
            }
        }
        // An alias may not be a prefix of another: `card` and `card.pan`
        // would need the same key to be text and a map.
        let aliases: Vec<(&String, &(Location, u8))> = alias_at.iter().collect();
        for (a, (_, n)) in &aliases {
            for (b, (loc, m)) in &aliases {
                if b.len() > a.len() && b.starts_with(a.as_str()) && b.as_bytes()[a.len()] == b'.' {
                    self.at(
                        *loc,
                        format!(
                            "alias `{b}` of element {m} nests under alias `{a}` of element {n}"
                        ),
                    );
                }
            }
        }
        if raw.elements.value.is_empty() {
            self.at(
                raw.elements.referenced,
                "a dialect needs at least one element",
            );
        }

        let mut messages = BTreeMap::new();
        for (mti, m) in &raw.messages {
            if !is_mti(mti) {
                self.at(
                    m.referenced,
                    format!("message key `{mti}` is not a 4-digit MTI"),
                );
                continue;
            }
            let declared: BTreeSet<u8> = raw
                .elements
                .value
                .keys()
                .filter_map(|k| k.parse::<u8>().ok())
                .filter(|n| (2..=MAX_ELEMENT).contains(n))
                .collect();
            let rule = self.message(mti, &m.value, &declared);
            messages.insert(mti.clone(), rule);
        }
        for (mti, m) in &raw.messages {
            if let Some(r) = &m.value.response
                && is_mti(&r.value)
                && !raw.messages.contains_key(&r.value)
            {
                self.at(
                    r.referenced,
                    format!(
                        "response `{}` of message {mti} is not listed under messages",
                        r.value
                    ),
                );
            }
        }

        let mut spec = Spec {
            name: raw.name.value,
            version: raw.version.value,
            description: raw.description,
            mti: raw.mti.value,
            bitmap: raw.bitmap.value,
            elements,
            messages,
            hash: crate::spec::SpecHash::default(),
            limits: Limits::DEFAULT,
            table: Vec::new(),
            by_alias: std::collections::HashMap::new(),
            classified: Vec::new(),
        };
        spec.classified = crate::spec::Classified::of(&spec.elements);
        spec.table = spec
            .elements
            .iter()
            .map(|e| e.as_ref().map(|e| e.format.clone()))
            .collect();
        spec.by_alias = spec
            .elements
            .iter()
            .flatten()
            .filter_map(|e| e.alias.clone().map(|a| (a, e.number)))
            .collect();
        spec.compute_hash();
        spec
    }

    fn default_enc(
        &mut self,
        v: Option<&Spanned<Encoding>>,
        fallback: Encoding,
        allowed: &[Encoding],
        what: &str,
    ) -> Encoding {
        match v {
            None => fallback,
            Some(s) if allowed.contains(&s.value) => s.value,
            Some(s) => {
                self.at(
                    s.referenced,
                    format!(
                        "`{}` cannot encode {what} data (use one of {})",
                        s.value.as_str(),
                        allowed
                            .iter()
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                fallback
            }
        }
    }

    fn format(
        &mut self,
        what: &str,
        f: &RawFormat<'_>,
        defaults: Defaults,
        loc: Location,
    ) -> Option<Format> {
        let kind = f.kind.value;
        let encoding = match f.encoding {
            Some(e) => {
                let ok = match kind {
                    CharType::B => matches!(e.value, Encoding::Binary | Encoding::Hex),
                    CharType::N | CharType::Z => {
                        matches!(e.value, Encoding::Ascii | Encoding::Ebcdic | Encoding::Bcd)
                    }
                    _ => matches!(e.value, Encoding::Ascii | Encoding::Ebcdic),
                };
                if !ok {
                    self.at(
                        e.referenced,
                        format!(
                            "{what}: encoding `{}` does not fit type `{}`",
                            e.value.as_str(),
                            kind.as_str()
                        ),
                    );
                    return None;
                }
                e.value
            }
            None => match kind {
                CharType::B => defaults.binary,
                CharType::N | CharType::Z => defaults.numeric,
                _ => defaults.text,
            },
        };
        let prefix = f.prefix.map_or(defaults.prefix, |p| p.value);
        let length = match (f.fixed, f.var, f.max) {
            (Some(n), None, None) => {
                if n.value == 0 || n.value > 9999 {
                    self.at(
                        n.referenced,
                        format!("{what}: fixed length must be 1..=9999"),
                    );
                    return None;
                }
                Length::Fixed(usize::try_from(n.value).unwrap_or(usize::MAX))
            }
            (None, Some(v), Some(max)) => {
                let digits = match v.value {
                    VarKind::L => 1,
                    VarKind::LL => 2,
                    VarKind::LLL => 3,
                    VarKind::LLLL => 4,
                };
                let cap = prefix.capacity(digits);
                let m = usize::try_from(max.value).unwrap_or(usize::MAX);
                if m == 0 || m > cap {
                    self.at(
                        max.referenced,
                        format!(
                            "{what}: max must be 1..={cap} for a {:?} prefix in {}",
                            v.value,
                            prefix.as_str()
                        ),
                    );
                    return None;
                }
                Length::Var {
                    digits,
                    max: m,
                    prefix,
                }
            }
            (Some(n), Some(_), _) => {
                self.at(
                    n.referenced,
                    format!("{what}: give either `fixed` or `var`, not both"),
                );
                return None;
            }
            (Some(_), None, Some(m)) => {
                self.at(
                    m.referenced,
                    format!("{what}: `max` goes with `var`, not with `fixed`"),
                );
                return None;
            }
            (None, Some(v), None) => {
                self.at(v.referenced, format!("{what}: `var` needs `max`"));
                return None;
            }
            (None, None, _) => {
                self.at(
                    loc,
                    format!("{what}: needs `fixed: N` or `var: LL` with `max: N`"),
                );
                return None;
            }
        };
        if encoding == Encoding::Hex && length.max() % 2 != 0 && matches!(length, Length::Fixed(_))
        {
            self.at(
                f.fixed.map_or(loc, |s| s.referenced),
                format!("{what}: a hex-encoded fixed length must be even"),
            );
        }
        let pad = match f.pad {
            Some(p) => {
                let c = p.value.char.value.as_bytes();
                let ok = c.len() == 1
                    && match encoding {
                        Encoding::Bcd => crate::hex::nibble(c[0]).is_some(),
                        _ => (0x20..0x7f).contains(&c[0]),
                    };
                if !ok {
                    self.at(
                        p.value.char.referenced,
                        format!(
                            "{what}: pad char must be one printable ASCII character (a hex digit for BCD)"
                        ),
                    );
                    return None;
                }
                if kind == CharType::B {
                    self.at(
                        p.referenced,
                        format!("{what}: binary data cannot be padded"),
                    );
                    return None;
                }
                Some(Pad {
                    left: p.value.side == Side::Left,
                    char: c[0].to_ascii_uppercase(),
                })
            }
            None => match (kind, encoding) {
                (CharType::B | CharType::Xn, _)
                | (CharType::Z, Encoding::Ascii | Encoding::Ebcdic) => None,
                (CharType::Z, _) => Some(Pad {
                    left: false,
                    char: b'F',
                }),
                (CharType::N, _) => Some(Pad {
                    left: true,
                    char: b'0',
                }),
                _ => Some(Pad {
                    left: false,
                    char: b' ',
                }),
            },
        };
        Some(Format {
            kind,
            length,
            encoding,
            pad,
        })
    }

    fn subfields(
        &mut self,
        number: u8,
        parent: Option<&Format>,
        s: &Spanned<RawSubfields>,
        defaults: Defaults,
    ) -> Option<Subfields> {
        let parent = parent?;
        let raw = &s.value;
        let in_text = parent.kind != CharType::B;
        match raw.layout.value {
            Layout::Tlv => {
                if in_text {
                    self.at(
                        raw.layout.referenced,
                        format!("element {number}: tlv subfields need a binary (type b) element"),
                    );
                }
                if !raw.fields.is_empty() || raw.bitmap.is_some() {
                    self.at(
                        s.referenced,
                        format!(
                            "element {number}: tlv subfields take `tags`, not `fields` or `bitmap`"
                        ),
                    );
                }
                let mut tags = BTreeMap::new();
                for (tag, t) in &raw.tags {
                    let b = tag.as_bytes();
                    let ok = (2..=8).contains(&b.len())
                        && b.len() % 2 == 0
                        && b.iter()
                            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
                    if !ok {
                        self.at(
                            t.referenced,
                            format!(
                                "element {number}: tag `{tag}` must be 2-8 uppercase hex digits"
                            ),
                        );
                        continue;
                    }
                    tags.insert(
                        tag.clone(),
                        TlvTag {
                            name: t.value.name.value.clone(),
                            sensitivity: t.value.sensitivity.as_ref().map(|s| s.value),
                            description: t.value.description.clone(),
                        },
                    );
                }
                Some(Subfields::Tlv { tags })
            }
            layout @ (Layout::Positional | Layout::Bitmap) => {
                if !raw.tags.is_empty() {
                    self.at(
                        s.referenced,
                        format!("element {number}: `tags` are for tlv subfields"),
                    );
                }
                if layout == Layout::Positional && raw.bitmap.is_some() {
                    self.at(
                        s.referenced,
                        format!("element {number}: `bitmap` is for bitmap subfields"),
                    );
                }
                if raw.fields.is_empty() {
                    self.at(
                        s.referenced,
                        format!("element {number}: subfields need `fields`"),
                    );
                    return None;
                }
                // Inside a text element, subfields are text too.
                let sub_defaults = if in_text {
                    Defaults {
                        text: Encoding::Ascii,
                        numeric: Encoding::Ascii,
                        binary: Encoding::Hex,
                        prefix: PrefixEncoding::Ascii,
                    }
                } else {
                    defaults
                };
                let mut fields = BTreeMap::new();
                for (key, f) in &raw.fields {
                    let n = match key.parse::<u8>() {
                        Ok(n) if (1..=64).contains(&n) && !key.starts_with('0') => n,
                        _ => {
                            self.at(
                                f.referenced,
                                format!("element {number}: subfield key `{key}` is not a number in 1..=64"),
                            );
                            continue;
                        }
                    };
                    let v = &f.value;
                    let what = format!("element {number}.{n}");
                    let Some(format) = self.format(
                        &what,
                        &RawFormat {
                            kind: &v.kind,
                            fixed: v.fixed.as_ref(),
                            var: v.var.as_ref(),
                            max: v.max.as_ref(),
                            prefix: v.prefix.as_ref(),
                            encoding: v.encoding.as_ref(),
                            pad: v.pad.as_ref(),
                        },
                        sub_defaults,
                        f.referenced,
                    ) else {
                        continue;
                    };
                    if in_text {
                        let text_enc = matches!(format.encoding, Encoding::Ascii | Encoding::Hex);
                        let text_prefix = match format.length {
                            Length::Var { prefix, .. } => prefix == PrefixEncoding::Ascii,
                            Length::Fixed(_) => true,
                        };
                        if !text_enc || !text_prefix {
                            self.at(
                                f.referenced,
                                format!("{what}: inside a text element, subfields use ascii (or hex) encoding and ascii prefixes"),
                            );
                            continue;
                        }
                    }
                    if layout == Layout::Positional && n as usize != fields.len() + 1 {
                        self.at(
                            f.referenced,
                            format!(
                                "{what}: positional subfields are numbered 1, 2, 3… without gaps"
                            ),
                        );
                    }
                    fields.insert(
                        n,
                        Subfield {
                            name: v.name.value.clone(),
                            format,
                            sensitivity: v.sensitivity.as_ref().map(|s| s.value),
                            description: v.description.clone(),
                        },
                    );
                }
                Some(match layout {
                    Layout::Positional => Subfields::Positional { fields },
                    _ => Subfields::Bitmap {
                        hex: raw
                            .bitmap
                            .as_ref()
                            .map_or(in_text, |b| b.value == BitmapEncoding::Hex),
                        fields,
                    },
                })
            }
        }
    }

    fn message(&mut self, mti: &str, m: &RawMessage, declared: &BTreeSet<u8>) -> MessageRule {
        let mut usage = BTreeMap::new();
        let check = |cx: &mut Checker, n: &Spanned<u64>| -> Option<u8> {
            match u8::try_from(n.value) {
                Ok(e) if declared.contains(&e) => Some(e),
                _ => {
                    cx.at(
                        n.referenced,
                        format!("message {mti}: element {} is not defined", n.value),
                    );
                    None
                }
            }
        };
        for (list, u) in [
            (&m.mandatory, Usage::Mandatory),
            (&m.optional, Usage::Optional),
            (&m.forbidden, Usage::Forbidden),
        ] {
            for n in list {
                if let Some(e) = check(self, n)
                    && usage.insert(e, u).is_some()
                {
                    self.at(
                        n.referenced,
                        format!("message {mti}: element {e} is listed twice"),
                    );
                }
            }
        }
        let mut echo = BTreeSet::new();
        for n in &m.echo {
            if let Some(e) = check(self, n) {
                echo.insert(e);
            }
        }
        if let Some(r) = &m.response
            && !is_mti(&r.value)
        {
            self.at(
                r.referenced,
                format!("message {mti}: response `{}` is not a 4-digit MTI", r.value),
            );
        }
        MessageRule {
            name: m.name.clone(),
            response: m.response.as_ref().map(|r| r.value.clone()),
            usage,
            echo: echo.into_iter().collect(),
        }
    }
}
