//! `map`: transforms messages with a VRL program.

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;
use vrl::compiler::runtime::Runtime;

use crate::vrl::Vrl;

/// Config of the `map` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// The VRL program. It runs on the message's `data` (`.field`); the
    /// envelope is metadata: `%id`, `%ref`, `%src`, `%ts`, `%flags` (read-only)
    /// and `%meta` (an object of strings, written back).
    pub source: String,
}

/// The `map` gear type.
#[derive(Debug)]
pub struct MapGearKind;

impl GearKind for MapGearKind {
    type Config = MapConfig;
    const NAME: &'static str = "map";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str = "Transforms each message with a VRL program";
    const DOCS: &'static str = "The program is compiled when the scenario is validated: a program that \
        does not compile stops the Rack before anything starts, with the line and column inside the \
        program. At run time a VRL error (a failed `!` function, `abort`, a value VRL cannot hold such as \
        an integer above 2^63) sends the original message unchanged to the `error` port with \
        `error.reason` in its meta (the dead-letter log when `error` is not wired).";
    const EXAMPLE: &'static str = "- name: enrich\n  type: map\n  config:\n    source: |\n      .double = int!(.seq) * 2\n      %meta.route = \"fast\"";

    fn check(config: &MapConfig, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        Vrl::compile(&config.source)
            .err()
            .map(|e| ConfigIssue::new("source", e))
            .into_iter()
            .collect()
    }

    fn build(config: &MapConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(MapGear {
            program: Vrl::compile(&config.source).map_err(BuildError)?,
            runtime: Runtime::default(),
        }))
    }
}

struct MapGear {
    program: Vrl,
    runtime: Runtime,
}

impl Gear for MapGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            while let Some(mut msg) = io.recv().await {
                match self.program.run(&mut self.runtime, &mut msg) {
                    Ok(_) => io.send(msg).await,
                    Err(e) => io.fail(msg, e).await,
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::TestKit;
    use fluxrig_msg::{FluxId, FluxMsg, Value};

    fn msg(seq: Value) -> FluxMsg {
        FluxMsg::new(
            FluxId::from_raw(1),
            Value::Map([("seq", seq)].into_iter().collect()),
        )
    }

    #[tokio::test]
    async fn maps_and_sends_failures_unchanged_to_error() {
        let t = Typed::<MapGearKind>::new();
        let run = TestKit::new(&t, "source: '.double = int!(.seq) * 2'")
            .inputs(vec![
                msg(Value::from(2)),
                msg(Value::from("x")),
                msg(Value::from(5)),
            ])
            .run()
            .await
            .unwrap();
        let out: Vec<_> = run.outputs["out"]
            .iter()
            .map(|m| m.data.get("double").cloned())
            .collect();
        assert_eq!(out, [Some(Value::from(4)), Some(Value::from(10))]);
        let err = &run.outputs["error"];
        assert_eq!(err.len(), 1);
        assert_eq!(
            err[0].data,
            msg(Value::from("x")).data,
            "the original message, unchanged"
        );
        assert!(
            err[0]
                .meta
                .get("error.reason")
                .unwrap()
                .contains("VRL runtime error")
        );
        assert_eq!(err[0].meta.get("error.gear"), Some("under_test"));
        assert_eq!(run.stats.errors, 1);
    }

    #[tokio::test]
    async fn unwired_error_goes_to_the_dead_letter_log() {
        let t = Typed::<MapGearKind>::new();
        let run = TestKit::new(&t, "source: 'abort'")
            .unwired_error()
            .inputs(vec![msg(Value::from(1))])
            .run()
            .await
            .unwrap();
        assert!(run.outputs["out"].is_empty());
        assert_eq!(run.dead_letters.len(), 1);
        assert!(
            run.dead_letters[0].reason.starts_with("aborted"),
            "{}",
            run.dead_letters[0].reason
        );
    }

    #[tokio::test]
    async fn program_that_does_not_compile_names_line_and_column() {
        let t = Typed::<MapGearKind>::new();
        let err = TestKit::new(&t, "source: |\n  .a = 1\n  .b = upcase(\n")
            .run()
            .await
            .unwrap_err();
        assert!(
            err.contains("source: VRL error at line 3, column 1 of the program: syntax error"),
            "{err}"
        );
    }
}
