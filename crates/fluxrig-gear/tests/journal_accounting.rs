//! A sink's deliveries are recorded against the right messages when some
//! of them fail on the way (`fail` or `fail_now`): the journal's record of
//! completions is what decides what is replayed after a crash.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fluxrig_gear::journal::{Delivery, Ingress, Journal, JournalError};
use fluxrig_gear::testkit::TestKit;
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, Gear, GearError, GearIo, GearKind, PortSpec, Role, Typed,
};
use fluxrig_msg::{FluxId, FluxMsg, Value};

/// Records which messages were reported delivered (our own logic's fake;
/// the real journal is the Rack's WAL, tested in fluxrig-rack).
#[derive(Debug, Default)]
struct Recording {
    completed: Mutex<Vec<FluxId>>,
}

impl Journal for Recording {
    fn ingress<'a>(
        &'a self,
        _port: &'a str,
        _msg: &'a FluxMsg,
    ) -> BoxFuture<'a, Result<Ingress, JournalError>> {
        Box::pin(async { Err(JournalError("not a source".into())) })
    }

    fn received(&self, _msg: &FluxMsg) -> Option<Option<Bytes>> {
        Some(None)
    }

    fn delivered(&self, done: Vec<Delivery>) -> BoxFuture<'_, Result<(), JournalError>> {
        self.completed
            .lock()
            .unwrap()
            .extend(done.iter().map(|d| d.id));
        Box::pin(async { Ok(()) })
    }

    fn committed_offset(&self) -> Option<u64> {
        None
    }

    fn sync_output(&self) -> bool {
        false
    }
}

/// A sink that fails every message whose `data` is `"bad"` (with `fail_now`
/// when `now` is set) and delivers the others one at a time.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PickyConfig {
    now: bool,
}

#[derive(Debug)]
struct Picky;

impl GearKind for Picky {
    type Config = PickyConfig;
    const NAME: &'static str = "picky";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str = "test sink";
    const DOCS: &'static str = "test sink";
    const EXAMPLE: &'static str = "- name: s\n  type: picky\n  config: {now: true}";

    fn ports(_config: &PickyConfig) -> Vec<PortSpec> {
        vec![PortSpec::input()]
    }

    fn build(config: &PickyConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(PickyGear { now: config.now }))
    }
}

struct PickyGear {
    now: bool,
}

impl Gear for PickyGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            while let Some(m) = io.recv().await {
                if m.data == Value::from("bad") {
                    if self.now {
                        io.fail_now(m, "bad");
                    } else {
                        io.fail(m, "bad").await;
                    }
                } else {
                    io.delivered(1).await?;
                }
            }
            Ok(())
        })
    }
}

async fn completed_with(now: bool) -> Vec<FluxId> {
    let journal = Arc::new(Recording::default());
    let inputs = ["good", "bad", "good", "bad", "good"]
        .iter()
        .zip(1..)
        .map(|(d, i)| FluxMsg::new(FluxId::from_raw(i), Value::from(*d)))
        .collect();
    let kind = Typed::<Picky>::new();
    let run = TestKit::new(&kind, &format!("now: {now}"))
        .unwired_error()
        .inputs(inputs)
        .journal(Arc::clone(&journal) as Arc<dyn Journal>)
        .run()
        .await
        .unwrap();
    assert_eq!(run.result, Ok(()));
    // fail_now records without waiting: let its task run.
    tokio::task::yield_now().await;
    let mut done = journal.completed.lock().unwrap().clone();
    done.sort_unstable();
    done
}

#[tokio::test]
async fn every_message_is_completed_once_whether_failed_or_delivered() {
    let all: Vec<FluxId> = (1..=5).map(FluxId::from_raw).collect();
    assert_eq!(completed_with(false).await, all, "with fail");
    assert_eq!(completed_with(true).await, all, "with fail_now");
}
