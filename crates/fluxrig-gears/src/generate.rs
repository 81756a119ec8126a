//! `generate`: synthetic messages at a rate or a count.

use std::time::Duration as StdDuration;

use fluxrig_config::Duration;
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, Role,
};
use fluxrig_msg::{Flags, FluxMsg, Map, Value};
use schemars::JsonSchema;
use serde::Deserialize;
use vrl::compiler::runtime::Runtime;

use crate::vrl::Vrl;

/// Config of the `generate` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// How many messages to make. Omit it for an endless stream (until the
    /// Rack stops).
    #[serde(default)]
    pub count: Option<u64>,
    /// Time between two messages; `0s` makes them as fast as the wires take
    /// them.
    #[serde(default)]
    pub interval: Duration,
    /// A VRL program applied to each new message: `.seq` is already set, the
    /// program adds or changes fields (a failing program dead-letters the message).
    #[serde(default)]
    pub mapping: Option<String>,
}

/// The `generate` gear type.
#[derive(Debug)]
pub struct Generate;

impl GearKind for Generate {
    type Config = GenerateConfig;
    const NAME: &'static str = "generate";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str =
        "Makes synthetic messages at a rate or up to a count (tests, demos, load)";
    const DOCS: &'static str = "Each message's `data` starts as `{\"seq\": n}` with n = 1, 2, 3, …; \
        then the optional `mapping` program runs on it. Messages carry the SYNTHETIC flag, a fresh \
        fluxID and the time they were made. With `count` the gear ends after that many messages and a \
        scenario whose sources have all ended exits once everything is delivered. With `interval: 0s` \
        it produces as fast as the wires accept (back-pressure paces it).";
    const EXAMPLE: &'static str = "- name: source\n  type: generate\n  config: {count: 1000, interval: 1ms, mapping: '.amount = 100 * int!(.seq)'}";

    fn check(config: &GenerateConfig, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        match &config.mapping {
            Some(src) => Vrl::compile(src)
                .err()
                .map(|e| ConfigIssue::new("mapping", e))
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }

    fn build(config: &GenerateConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let mapping = config
            .mapping
            .as_deref()
            .map(Vrl::compile)
            .transpose()
            .map_err(BuildError)?;
        Ok(Box::new(GenerateGear {
            count: config.count,
            interval: config.interval.get(),
            mapping,
            runtime: Runtime::default(),
            next: 1,
        }))
    }
}

struct GenerateGear {
    count: Option<u64>,
    interval: StdDuration,
    mapping: Option<Vrl>,
    runtime: Runtime,
    /// The next sequence number; kept across restarts so none repeats.
    next: u64,
}

impl GenerateGear {
    async fn produce(&mut self, io: &mut GearIo) -> Result<(), GearError> {
        let mut ticker = (!self.interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(self.interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        while self.count.is_none_or(|c| self.next <= c) {
            if let Some(t) = ticker.as_mut() {
                tokio::select! {
                    biased;
                    () = io.cancelled() => return Ok(()),
                    _ = t.tick() => {}
                }
            } else if io.is_cancelled() {
                return Ok(());
            }
            let seq = self.next;
            self.next += 1;
            let mut data = Map::with_capacity(1);
            data.insert("seq", seq);
            let mut msg = FluxMsg::new(io.new_id(), Value::Map(data));
            msg.ts = fluxrig_gear::now_ns();
            msg.src = Some(io.ctx().entity);
            msg.flags.insert(Flags::SYNTHETIC);
            if let Some(m) = &self.mapping
                && let Err(e) = m.run(&mut self.runtime, &mut msg)
            {
                io.fail(msg, format!("mapping: {e}")).await;
                continue;
            }
            io.send(msg).await;
            if ticker.is_none() && seq.is_multiple_of(1024) {
                // Stay fair to other tasks when nothing paces us.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
}

impl Gear for GenerateGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(self.produce(io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::TestKit;

    #[tokio::test]
    async fn counts_from_one_and_applies_the_mapping() {
        let t = Typed::<Generate>::new();
        let run = TestKit::new(
            &t,
            "{count: 5, interval: 0s, mapping: '.double = int!(.seq) * 2'}",
        )
        .run()
        .await
        .unwrap();
        let out = &run.outputs["out"];
        let seqs: Vec<_> = out
            .iter()
            .map(|m| m.data.get("seq").cloned().unwrap())
            .collect();
        assert_eq!(seqs, (1..=5).map(Value::from).collect::<Vec<_>>());
        assert_eq!(out[4].data.get("double"), Some(&Value::from(10)));
        assert!(out.windows(2).all(|w| w[0].id < w[1].id));
        assert!(
            out.iter()
                .all(|m| m.flags.contains(Flags::SYNTHETIC) && m.path.len() == 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endless_with_interval_stops_when_cancelled() {
        let t = Typed::<Generate>::new();
        let run = TestKit::new(&t, "{interval: 10ms}")
            .cancel_after(StdDuration::from_millis(95))
            .run()
            .await
            .unwrap();
        let n = run.outputs["out"].len();
        assert!((9..=11).contains(&n), "{n} messages in 95 ms at 10 ms");
    }

    #[tokio::test]
    async fn bad_mapping_is_a_config_error_with_position() {
        let t = Typed::<Generate>::new();
        let err = TestKit::new(&t, "count: 1\nmapping: '.x = nope()'\n")
            .run()
            .await
            .unwrap_err();
        assert!(
            err.starts_with("2:10: mapping: VRL error at line 1, column 6"),
            "{err}"
        );
    }
}
