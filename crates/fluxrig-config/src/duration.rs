//! Durations written the way people write them: `1ms`, `2s`, `1m 30s`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in configuration: a string such as `0s`, `250ms`, `2s`, `1m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The duration as `std::time::Duration`.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration `{s}` ({e}); write e.g. 250ms, 2s, 1m"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            f.write_str("0s")
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ns, us, ms, s, m, h), e.g. `250ms`, `2s`, `1m 30s`.",
            "pattern": "^\\s*\\d+\\s*[a-z]+(\\s*\\d+\\s*[a-z]+)*\\s*$",
            "examples": ["1ms", "2s", "1m 30s"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d: Duration = "1ms".parse().unwrap();
        assert_eq!(d.get(), std::time::Duration::from_millis(1));
        assert_eq!("0s".parse::<Duration>().unwrap().to_string(), "0s");
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m 30s");
        assert!(
            "fast"
                .parse::<Duration>()
                .unwrap_err()
                .contains("invalid duration `fast`")
        );
    }
}
