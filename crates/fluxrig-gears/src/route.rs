//! `route`: content-based routing to named ports.

use std::collections::BTreeSet;

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, PortRef, PortSpec, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;
use vrl::compiler::runtime::Runtime;

use crate::vrl::{Vrl, is_true};

/// One routing rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A VRL condition on the message (`.amount > 100`); the rule matches
    /// when it evaluates to `true`.
    pub when: String,
    /// The output port matching messages leave by.
    pub port: String,
}

/// Config of the `route` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Rules, tried in order; the first that matches wins.
    pub rules: Vec<Rule>,
    /// The port for messages no rule matches.
    pub default: String,
}

/// The `route` gear type.
#[derive(Debug)]
pub struct Route;

fn port_names(config: &RouteConfig) -> BTreeSet<&str> {
    config
        .rules
        .iter()
        .map(|r| r.port.as_str())
        .chain([config.default.as_str()])
        .collect()
}

fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !matches!(name, "in" | "error")
}

impl GearKind for Route {
    type Config = RouteConfig;
    const NAME: &'static str = "route";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str =
        "Sends each message to the port of the first rule whose condition holds";
    const DOCS: &'static str = "The output ports are the names the rules and `default` declare; each \
        must be wired. Conditions are VRL expressions evaluated on the message (they do not change it). \
        A condition that fails at run time sends the message to `error` with the reason.";
    const EXAMPLE: &'static str = "- name: split\n  type: route\n  config:\n    rules:\n      - {when: '.amount > 1000', port: big}\n      - {when: 'starts_with(string!(.pan), \"4\")', port: visa}\n    default: other";

    fn ports(config: &RouteConfig) -> Vec<PortSpec> {
        let mut ports = vec![PortSpec::input()];
        ports.extend(
            port_names(config)
                .into_iter()
                .map(|p| PortSpec::named_output(p.to_owned(), format!("messages routed to `{p}`"))),
        );
        ports.push(PortSpec::error());
        ports
    }

    fn check(config: &RouteConfig, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            if let Err(e) = Vrl::compile_condition(&r.when) {
                issues.push(ConfigIssue::new(format!("rules[{i}].when"), e));
            }
            if !valid_port_name(&r.port) {
                issues.push(ConfigIssue::new(
                    format!("rules[{i}].port"),
                    format!("`{}` is not a valid port name (letters, digits, _ and -; not `in` or `error`)", r.port),
                ));
            }
        }
        if !valid_port_name(&config.default) {
            issues.push(ConfigIssue::new(
                "default",
                format!("`{}` is not a valid port name", config.default),
            ));
        }
        issues
    }

    fn build(config: &RouteConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let rules = config
            .rules
            .iter()
            .map(|r| {
                Ok((
                    Vrl::compile_condition(&r.when).map_err(BuildError)?,
                    r.port.clone(),
                ))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Box::new(RouteGear {
            rules,
            default: config.default.clone(),
            runtime: Runtime::default(),
        }))
    }
}

struct RouteGear {
    rules: Vec<(Vrl, String)>,
    default: String,
    runtime: Runtime,
}

impl RouteGear {
    fn resolve(&self, io: &GearIo) -> Result<(Vec<PortRef>, PortRef), GearError> {
        let find = |name: &str| {
            io.port(name)
                .ok_or_else(|| GearError::Other(format!("port `{name}` missing")))
        };
        let rules = self
            .rules
            .iter()
            .map(|(_, p)| find(p))
            .collect::<Result<_, _>>()?;
        Ok((rules, find(&self.default)?))
    }
}

impl Gear for RouteGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let (rule_ports, default) = self.resolve(io)?;
            'next: while let Some(mut msg) = io.recv().await {
                for (i, (cond, _)) in self.rules.iter().enumerate() {
                    // Conditions see a copy: routing never changes the message.
                    let mut probe = msg.clone();
                    match cond.run(&mut self.runtime, &mut probe) {
                        Ok(v) if is_true(&v) => {
                            io.emit(rule_ports[i], msg).await;
                            continue 'next;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            io.fail(msg, format!("rules[{i}].when: {e}")).await;
                            continue 'next;
                        }
                    }
                }
                let _ = &mut msg;
                io.emit(default, msg).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_gear::testkit::TestKit;
    use fluxrig_gear::{GearType, Typed};
    use fluxrig_msg::{FluxId, FluxMsg, Value};

    fn msg(amount: i64) -> FluxMsg {
        FluxMsg::new(
            FluxId::from_raw(1),
            Value::Map([("amount", amount)].into_iter().collect()),
        )
    }

    const CFG: &str = "rules:\n  - {when: '.amount > 100', port: big}\n  - {when: '.amount < 0', port: refund}\ndefault: small\n";

    #[tokio::test]
    async fn a_condition_that_fails_at_run_time_sends_the_message_to_error() {
        let t = Typed::<Route>::new();
        let odd = FluxMsg::new(
            FluxId::from_raw(2),
            Value::Map([("amount", "lots")].into_iter().collect()),
        );
        let run = TestKit::new(&t, CFG)
            .inputs(vec![odd, msg(1)])
            .run()
            .await
            .unwrap();
        assert_eq!(run.outputs["small"].len(), 1);
        let err = &run.outputs["error"];
        assert_eq!(err.len(), 1);
        let reason = err[0].meta.get("error.reason").unwrap();
        assert!(
            reason.starts_with("rules[0].when: VRL runtime error"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn first_matching_rule_wins_else_default() {
        let t = Typed::<Route>::new();
        let run = TestKit::new(&t, CFG)
            .inputs(vec![msg(500), msg(5), msg(-1), msg(101)])
            .run()
            .await
            .unwrap();
        let amounts = |p: &str| -> Vec<Value> {
            run.outputs[p]
                .iter()
                .map(|m| m.data.get("amount").cloned().unwrap())
                .collect()
        };
        assert_eq!(amounts("big"), [Value::from(500), Value::from(101)]);
        assert_eq!(amounts("small"), [Value::from(5)]);
        assert_eq!(amounts("refund"), [Value::from(-1)]);
    }

    #[tokio::test]
    async fn declares_one_port_per_name() {
        let node = fluxrig_config::parse(CFG).unwrap();
        let p = Typed::<Route>::new()
            .prepare(&node, &CheckContext::default())
            .unwrap();
        let names: Vec<_> = p.ports().iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, ["in", "big", "refund", "small", "error"]);
    }

    #[tokio::test]
    async fn bad_condition_and_port_are_reported_with_positions() {
        let t = Typed::<Route>::new();
        let err = TestKit::new(
            &t,
            "rules:\n  - {when: '.a >', port: 'x y'}\ndefault: error\n",
        )
        .run()
        .await
        .unwrap_err();
        let lines: Vec<_> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].starts_with("2:12: rules[0].when: VRL error at line 1, column 5"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("2:26: rules[0].port: `x y` is not a valid port name"),
            "{err}"
        );
        assert!(lines[2].starts_with("3:10: default:"), "{err}");
    }
}
