//! `log`: one structured log line per message, sensitive fields masked.

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, Gear, GearError, GearIo, GearKind, PortSpec, Role,
};
use fluxrig_msg::json::JsonValue;
use fluxrig_msg::{FluxMsg, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Log level of the lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// DEBUG.
    Debug,
    /// INFO (default).
    #[default]
    Info,
    /// WARN.
    Warn,
}

fn default_mask() -> Vec<String> {
    [
        "pan",
        "card.pan",
        "track1",
        "track2",
        "card.track2",
        "pin",
        "pin_block",
        "card.pin_block",
        "cvv",
        "card.cvv",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Config of the `log` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level of the log lines.
    #[serde(default)]
    pub level: Level,
    /// Data paths (`card.pan`) whose values are masked in the log: a digit
    /// string of 13–19 digits shows its first six and last four digits,
    /// anything else is replaced entirely. The default covers common card
    /// data names.
    #[serde(default = "default_mask")]
    pub mask: Vec<String>,
}

/// The `log` gear type.
#[derive(Debug)]
pub struct Log;

impl GearKind for Log {
    type Config = LogConfig;
    const NAME: &'static str = "log";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str =
        "Logs each message as one structured line (sensitive fields masked)";
    const DOCS: &'static str = "The line carries the gear, the fluxID and the message's data as JSON, \
        with the configured paths masked. Logs go where the Rack's logs go (stderr, human or JSON).";
    const EXAMPLE: &'static str =
        "- name: audit_log\n  type: log\n  config: {level: info, mask: [card.pan]}";

    fn ports(_config: &LogConfig) -> Vec<PortSpec> {
        vec![PortSpec::input()]
    }

    fn build(config: &LogConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let mask = config
            .mask
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect();
        Ok(Box::new(LogGear {
            level: config.level,
            mask,
        }))
    }
}

struct LogGear {
    level: Level,
    mask: Vec<Vec<String>>,
}

/// The display form of a sensitive value.
pub(crate) fn mask_value(v: &Value) -> Value {
    match v {
        Value::Text(s) if (13..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => {
            Value::from(format!(
                "{}{}{}",
                &s[..6],
                "*".repeat(s.len() - 10),
                &s[s.len() - 4..]
            ))
        }
        _ => Value::from("****"),
    }
}

fn mask_path(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = v.as_map_mut() else { return };
    let Some(inner) = map.get_mut(first) else {
        return;
    };
    if rest.is_empty() {
        *inner = mask_value(inner);
    } else {
        mask_path(inner, rest);
    }
}

impl LogGear {
    fn line(&self, msg: &FluxMsg) -> String {
        let mut data = msg.data.clone();
        for p in &self.mask {
            mask_path(&mut data, p);
        }
        serde_json::to_string(&JsonValue(&data)).unwrap_or_else(|e| format!("<no JSON form: {e}>"))
    }
}

impl Gear for LogGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            while let Some(msg) = io.recv().await {
                let data = self.line(&msg);
                let gear = &*io.ctx().gear;
                match self.level {
                    Level::Debug => tracing::debug!(gear, id = %msg.id, data, "message"),
                    Level::Info => tracing::info!(gear, id = %msg.id, data, "message"),
                    Level::Warn => tracing::warn!(gear, id = %msg.id, data, "message"),
                }
                io.delivered(1).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::FluxId;

    #[test]
    fn masks_pans_and_other_sensitive_values() {
        let g = LogGear {
            level: Level::Info,
            mask: vec![vec!["card".into(), "pan".into()], vec!["cvv".into()]],
        };
        let data: Value = Value::Map(
            [
                (
                    "card",
                    Value::Map([("pan", "4111111111111111")].into_iter().collect()),
                ),
                ("cvv", Value::from("123")),
                ("amount", Value::from(5)),
            ]
            .into_iter()
            .collect(),
        );
        let line = g.line(&FluxMsg::new(FluxId::from_raw(1), data));
        assert!(line.contains("411111******1111"), "{line}");
        assert!(!line.contains("4111111111111111"));
        assert!(line.contains("\"cvv\":\"****\""), "{line}");
        assert!(line.contains("\"amount\":5"));
    }
}
