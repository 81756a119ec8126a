//! Masking for every display path: PANs as BIN (first 6) + last 4, every
//! other classified value fully masked.

use fluxrig_msg::Value;

use crate::spec::{Sensitivity, Spec, Subfields};

/// A PAN with all but the first six and last four digits replaced by `*`.
/// PANs shorter than 13 characters are masked entirely (BIN and last four
/// would reveal too much of them).
pub fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n < 13 {
        return "*".repeat(n);
    }
    pan.chars()
        .enumerate()
        .map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' })
        .collect()
}

/// A classified value as it may be shown.
pub fn mask_text(sensitivity: Sensitivity, text: &str) -> String {
    match sensitivity {
        Sensitivity::Pan => mask_pan(text),
        _ => "*".repeat(text.chars().count()),
    }
}

fn mask_all(v: &mut Value, s: Sensitivity) {
    match v {
        Value::Text(t) => *v = Value::text(mask_text(s, t)),
        Value::Map(m) => m.values_mut().for_each(|x| mask_all(x, s)),
        Value::Array(a) => a.iter_mut().for_each(|x| mask_all(x, s)),
        _ => {}
    }
}

/// Masks, in a data tree laid out by [`crate::to_value`], every element,
/// subfield and TLV tag the dialect classifies.
pub fn mask_data(spec: &Spec, data: &mut Value) {
    visit_classified(spec, data, &mut |_, s, v| mask_all(v, s));
}

/// Calls `f` on every value of a data tree (laid out by [`crate::to_value`])
/// that the dialect classifies: whole elements, subfields (`sf<n>`) and TLV
/// values, with a label naming the place (`card.pan`, `de48.sf3`,
/// `de55.5A`) and the class. An element whose structured form is not used
/// (raw text where subfields are declared) is passed whole as `pii`.
pub fn visit_classified(
    spec: &Spec,
    data: &mut Value,
    f: &mut dyn FnMut(&str, Sensitivity, &mut Value),
) {
    for c in &spec.classified {
        let Some(el) = spec.element(c.number) else {
            continue;
        };
        let Some(v) = get_path_mut(data, el.data_path()) else {
            continue;
        };
        if let Some(s) = el.sensitivity {
            f(&c.label, s, v);
            continue;
        }
        match (&el.subfields, v) {
            (Some(Subfields::Positional { .. } | Subfields::Bitmap { .. }), Value::Map(m)) => {
                for (key, label, s) in &c.subfields {
                    if let Some(v) = m.get_mut(key) {
                        f(label, *s, v);
                    }
                }
            }
            (Some(Subfields::Tlv { tags }), Value::Array(items)) => {
                for item in items {
                    let tag = item.get("tag").and_then(Value::as_str).map(str::to_owned);
                    if let (Some(tag), Value::Map(m)) = (tag, item)
                        && let Some(s) = tags
                            .get(&tag.to_ascii_uppercase())
                            .and_then(|t| t.sensitivity)
                        && let Some(v) = m.get_mut("value")
                    {
                        f(&format!("{}.{}", c.label, tag.to_ascii_uppercase()), s, v);
                    }
                }
            }
            // Structured form not used (raw text): the whole element.
            (_, v) => f(&c.label, Sensitivity::Pii, v),
        }
    }
}

fn get_path_mut<'v>(data: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter()
        .try_fold(data, |v, k| v.as_map_mut()?.get_mut(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_keeps_bin_and_last_four() {
        assert_eq!(mask_pan("4111111111111111"), "411111******1111");
        assert_eq!(mask_pan("4111111111111"), "411111***1111");
        assert_eq!(mask_pan("411111111111"), "************");
        assert_eq!(mask_text(Sensitivity::Track, "4111=2512"), "*********");
    }
}
