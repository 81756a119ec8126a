//! `discard`: counts and drops messages (benchmarks, tests).

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, Gear, GearError, GearIo, GearKind, PortSpec, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Config of the `discard` gear (it has none).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

/// The `discard` gear type.
#[derive(Debug)]
pub struct Discard;

impl GearKind for Discard {
    type Config = DiscardConfig;
    const NAME: &'static str = "discard";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str = "Counts messages and drops them (for benchmarks and tests)";
    const DOCS: &'static str =
        "Every message taken counts as delivered; nothing is written anywhere.";
    const EXAMPLE: &'static str = "- name: sink\n  type: discard";

    fn ports(_config: &DiscardConfig) -> Vec<PortSpec> {
        vec![PortSpec::input()]
    }

    fn build(_config: &DiscardConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(DiscardGear))
    }
}

struct DiscardGear;

impl Gear for DiscardGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let mut batch = Vec::with_capacity(256);
            while let Some(m) = io.recv().await {
                batch.push(m);
                io.try_recv_many(&mut batch, 255);
                io.delivered(batch.len() as u64).await?;
                batch.clear();
            }
            Ok(())
        })
    }
}
