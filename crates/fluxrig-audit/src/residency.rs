//! Data residency: which fields never leave the Rack's local vault.
//!
//! A scenario declares a policy; anything that leaves the Rack — an
//! `audit export --residency`, later the Mixer uplink — passes through
//! [`Residency::apply_to_msg`] (a fluxMsg) or [`Residency::apply_to_row`]
//! (an archive row's `data` and `meta` JSON). The local archive itself keeps
//! everything: the policy governs what leaves, not what is recorded.
//!
//! Paths are dotted data paths, as the ISO 8583 data layout and VRL name
//! them (`card.pan`, `merchant.name_location`):
//!
//! - a path starting with `meta.` names a `meta` key (the rest, dots
//!   included: `meta.iso8583.spec`);
//! - any other path names a place in `data`; `*` matches any key; when the
//!   path meets an array, it applies to each element (`icc.value` removes
//!   `value` from every TLV of DE 55).
//!
//! `metadata_only: true` lets only the envelope's metadata leave: `data`,
//! the promoted columns, `raw` and extension fields are removed, `meta`
//! stays (minus `local_only` keys).
//!
//! ```
//! use fluxrig_audit::Residency;
//! use fluxrig_msg::{FluxId, FluxMsg};
//!
//! let policy = Residency { local_only: vec!["card".into(), "meta.conn".into()], metadata_only: false };
//! policy.validate().unwrap();
//! let mut msg = fluxrig_msg::json::from_json_str(
//!     r#"{"id":"1","meta":{"conn":"7","route":"a"},"data":{"card":{"pan":"4111111111111111"},"amount":5}}"#,
//! ).unwrap();
//! policy.apply_to_msg(&mut msg);
//! assert_eq!(
//!     fluxrig_msg::json::to_json_string(&msg).unwrap(),
//!     r#"{"id":"1","meta":{"route":"a"},"data":{"amount":5}}"#
//! );
//! ```

use fluxrig_msg::{FluxMsg, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::AuditError;
use crate::schema::paths;

/// A scenario's data-residency policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    /// Data paths (`card.pan`, `icc.*.value`) and `meta.KEY` entries that
    /// never leave the Rack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_only: Vec<String>,
    /// Only metadata leaves the Rack: no `data`, promoted fields, `raw` or
    /// extension fields.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata_only: bool,
}

enum Target<'a> {
    Meta(&'a str),
    Data(Vec<&'a str>),
}

impl Residency {
    /// True when the policy lets everything leave.
    pub fn is_empty(&self) -> bool {
        self.local_only.is_empty() && !self.metadata_only
    }

    /// Checks every path: not empty, no empty segment.
    pub fn validate(&self) -> Result<(), AuditError> {
        for p in &self.local_only {
            let bad = match p.strip_prefix("meta.") {
                Some(key) => key.is_empty(),
                None => p == "meta" || p.is_empty() || p.split('.').any(str::is_empty),
            };
            if bad {
                return Err(AuditError::Invalid(format!(
                    "residency: `{p}` is not a data path (dotted keys, e.g. `card.pan`) or `meta.KEY`"
                )));
            }
        }
        Ok(())
    }

    fn targets(&self) -> impl Iterator<Item = Target<'_>> {
        self.local_only
            .iter()
            .map(|p| match p.strip_prefix("meta.") {
                Some(key) => Target::Meta(key),
                None => Target::Data(p.split('.').collect()),
            })
    }

    /// Removes what must stay local from a message about to leave the Rack.
    pub fn apply_to_msg(&self, msg: &mut FluxMsg) {
        if self.is_empty() {
            return;
        }
        // The original wire bytes hold every field: they never leave under
        // a policy.
        msg.raw = None;
        for t in self.targets() {
            match t {
                Target::Meta(k) => {
                    msg.meta.remove(k);
                }
                Target::Data(path) => remove_value(&mut msg.data, &path),
            }
        }
        if self.metadata_only {
            msg.data = Value::Null;
            let names: Vec<String> = msg.extensions().map(|(k, _)| k.to_owned()).collect();
            if !names.is_empty() {
                // Rebuild without extensions: only the envelope's own fields stay.
                let mut bare = FluxMsg::new(msg.id, Value::Null);
                bare.reference = msg.reference;
                bare.trace = msg.trace;
                bare.src = msg.src;
                bare.meta = std::mem::take(&mut msg.meta);
                bare.flags = msg.flags;
                bare.path = std::mem::take(&mut msg.path);
                bare.ts = msg.ts;
                *msg = bare;
            }
        }
    }

    /// Applies the policy to an archive row: `data` and `meta` are JSON text
    /// (either may be absent). Returns the new `data` and `meta`.
    pub fn apply_to_row(
        &self,
        data: Option<&str>,
        meta: Option<&str>,
    ) -> (Option<String>, Option<String>) {
        let data = if self.metadata_only {
            None
        } else {
            data.map(|d| match serde_json::from_str::<Json>(d) {
                Ok(mut j) => {
                    for t in self.targets() {
                        if let Target::Data(path) = t {
                            remove_json(&mut j, &path);
                        }
                    }
                    j.to_string()
                }
                // Not JSON (cannot happen for rows this crate wrote): it
                // cannot be filtered, so it does not leave.
                Err(_) => "null".to_owned(),
            })
        };
        let meta = meta.map(|m| match serde_json::from_str::<Json>(m) {
            Ok(Json::Object(mut obj)) => {
                for t in self.targets() {
                    if let Target::Meta(k) = t {
                        obj.remove(k);
                    }
                }
                Json::Object(obj).to_string()
            }
            _ => "{}".to_owned(),
        });
        (data, meta)
    }

    /// Whether a promoted column must be emptied: under `metadata_only`,
    /// or when a `local_only` path covers, or lies inside, the column's
    /// data path ([`crate::schema::paths`]).
    pub fn hides_column(&self, column: &str) -> bool {
        let Some(&(_, path)) = paths::ALL.iter().find(|(c, _)| *c == column) else {
            return false;
        };
        if self.metadata_only {
            return true;
        }
        let col: Vec<&str> = path.split('.').collect();
        self.targets().any(|t| match t {
            Target::Data(p) => p.iter().zip(&col).all(|(a, b)| a == b || *a == "*"),
            Target::Meta(_) => false,
        })
    }
}

fn remove_value(v: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Array(items) => {
            for item in items {
                remove_value(item, path);
            }
        }
        Value::Map(m) => {
            if *first == "*" {
                if rest.is_empty() {
                    *m = fluxrig_msg::Map::new();
                } else {
                    for child in m.values_mut() {
                        remove_value(child, rest);
                    }
                }
            } else if rest.is_empty() {
                m.remove(first);
            } else if let Some(child) = m.get_mut(first) {
                remove_value(child, rest);
            }
        }
        _ => {}
    }
}

fn remove_json(v: &mut Json, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match v {
        Json::Array(items) => {
            for item in items {
                remove_json(item, path);
            }
        }
        Json::Object(m) => {
            if *first == "*" {
                if rest.is_empty() {
                    m.clear();
                } else {
                    for child in m.values_mut() {
                        remove_json(child, rest);
                    }
                }
            } else if rest.is_empty() {
                m.remove(*first);
            } else if let Some(child) = m.get_mut(*first) {
                remove_json(child, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::json;

    fn policy(paths: &[&str], metadata_only: bool) -> Residency {
        Residency {
            local_only: paths.iter().map(|p| (*p).to_owned()).collect(),
            metadata_only,
        }
    }

    const MSG: &str = r#"{"id":"9","meta":{"conn":"7","iso8583.spec":"ab"},"raw":"AAE=",
        "data":{"mti":"0100","card":{"pan":"4111111111111111","expiry":"2612"},
                "icc":[{"tag":"9F02","value":"01"},{"tag":"9F03","value":"02"}],
                "amount":{"transaction":"000000001250"}},"ext":{"x":1}}"#;

    #[test]
    fn removes_paths_wildcards_and_array_elements() {
        let mut m = json::from_json_str(MSG).unwrap();
        policy(&["card.pan", "icc.value", "meta.iso8583.spec"], false).apply_to_msg(&mut m);
        assert_eq!(
            json::to_json_string(&m).unwrap(),
            r#"{"id":"9","meta":{"conn":"7"},"data":{"icc":[{"tag":"9F02"},{"tag":"9F03"}],"mti":"0100","card":{"expiry":"2612"},"amount":{"transaction":"000000001250"}},"ext":{"x":1}}"#
        );
        let mut m = json::from_json_str(MSG).unwrap();
        policy(&["*.pan", "amount.*"], false).apply_to_msg(&mut m);
        let out = json::to_json_string(&m).unwrap();
        assert!(!out.contains("4111"), "{out}");
        assert!(out.contains(r#""amount":{}"#), "{out}");
    }

    #[test]
    fn metadata_only_keeps_the_envelope() {
        let mut m = json::from_json_str(MSG).unwrap();
        policy(&["meta.conn"], true).apply_to_msg(&mut m);
        assert_eq!(
            json::to_json_string(&m).unwrap(),
            r#"{"id":"9","meta":{"iso8583.spec":"ab"}}"#
        );
    }

    #[test]
    fn an_empty_policy_changes_nothing() {
        let mut m = json::from_json_str(MSG).unwrap();
        let before = m.clone();
        Residency::default().apply_to_msg(&mut m);
        assert_eq!(m, before);
        assert!(Residency::default().is_empty());
    }

    #[test]
    fn rows_and_promoted_columns() {
        let p = policy(&["card", "amount.transaction", "meta.conn"], false);
        let (data, meta) = p.apply_to_row(
            Some(
                r#"{"card":{"pan":"4111111111111111"},"amount":{"transaction":"1"},"mti":"0100"}"#,
            ),
            Some(r#"{"conn":"7","route":"x"}"#),
        );
        let parsed = |s: Option<String>| serde_json::from_str::<Json>(&s.unwrap()).unwrap();
        assert_eq!(
            parsed(data),
            serde_json::json!({"amount": {}, "mti": "0100"})
        );
        assert_eq!(parsed(meta), serde_json::json!({"route": "x"}));
        assert!(p.hides_column("amount"));
        assert!(!p.hides_column("mti"));
        assert!(!p.hides_column("gear"));
        assert!(policy(&["amount"], false).hides_column("amount"));
        assert!(policy(&["*.transaction"], false).hides_column("currency"));
        assert!(policy(&[], true).hides_column("mti"));
        assert_eq!(
            policy(&[], true).apply_to_row(Some("{}"), None),
            (None, None)
        );
    }

    #[test]
    fn bad_paths_are_refused_and_the_type_is_strict() {
        for bad in ["", "a..b", "meta.", "meta", ".a"] {
            assert!(policy(&[bad], false).validate().is_err(), "{bad:?}");
        }
        policy(&["card.pan", "meta.conn", "icc.*.value"], false)
            .validate()
            .unwrap();
        let p: Residency =
            serde_json::from_str(r#"{"local_only":["card.pan"],"metadata_only":true}"#).unwrap();
        assert_eq!(p, policy(&["card.pan"], true));
        assert!(serde_json::from_str::<Residency>(r#"{"local":["x"]}"#).is_err());
    }
}
