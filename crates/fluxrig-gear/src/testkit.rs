//! Runs one gear against in-memory inputs, on real lanes, and collects
//! what it emits on each port and what it dead-letters.
//!
//! ```text
//! let run = TestKit::new(&Typed::<MapGear>::new(), "source: '.x = 1'")
//!     .inputs(vec![msg])
//!     .run()
//!     .await?;
//! assert_eq!(run.outputs["out"].len(), 1);
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxrig_msg::{EntityId, EntityType, FluxMsg, IdGenerator};
use tokio_util::sync::CancellationToken;

use crate::io::{DeadLetter, DeadLetters, GearIo, IoParts, OutputPort, RunContext};
use crate::kind::{BuildContext, CheckContext, GearType};
use crate::lane::{Inbox, LaneSet, WhenFull, lane};
use crate::stats::{GearStats, StatsSnapshot};
use crate::{GearError, PortDir};

/// Dead letters kept in memory.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters(Mutex<Vec<DeadLetter>>);

impl MemoryDeadLetters {
    /// The letters recorded so far.
    pub fn take(&self) -> Vec<DeadLetter> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl DeadLetters for MemoryDeadLetters {
    fn record(&self, letter: DeadLetter) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(letter);
    }
}

/// What a gear did in a test run.
#[derive(Debug)]
pub struct TestRun {
    /// Messages emitted, by port name (every declared output port has an entry).
    pub outputs: BTreeMap<String, Vec<FluxMsg>>,
    /// Messages dead-lettered.
    pub dead_letters: Vec<DeadLetter>,
    /// The gear's counters at the end.
    pub stats: StatsSnapshot,
    /// How the gear's `run` ended.
    pub result: Result<(), String>,
}

/// A one-gear test harness.
#[allow(missing_debug_implementations)]
pub struct TestKit<'a> {
    gear_type: &'a dyn GearType,
    config: String,
    inputs: Vec<FluxMsg>,
    unwired: Vec<String>,
    cancel_after: Option<Duration>,
    base_dir: PathBuf,
    journal: Option<Arc<dyn crate::journal::Journal>>,
    tracer: Option<Arc<fluxrig_telemetry::Tracer>>,
}

impl<'a> TestKit<'a> {
    /// A harness for `gear_type` with its config as YAML.
    pub fn new(gear_type: &'a dyn GearType, config_yaml: &str) -> TestKit<'a> {
        TestKit {
            gear_type,
            config: config_yaml.to_owned(),
            inputs: Vec::new(),
            unwired: Vec::new(),
            cancel_after: None,
            base_dir: std::env::current_dir().unwrap_or_default(),
            journal: None,
            tracer: None,
        }
    }

    /// Give the gear a journal (the Rack gives it its write-ahead log).
    #[must_use]
    pub fn journal(mut self, journal: Arc<dyn crate::journal::Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Give the gear a tracer (hop spans go to its queue).
    #[must_use]
    pub fn tracer(mut self, tracer: Arc<fluxrig_telemetry::Tracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Messages fed to the `in` port, in order; the input closes after them.
    #[must_use]
    pub fn inputs(mut self, inputs: Vec<FluxMsg>) -> Self {
        self.inputs = inputs;
        self
    }

    /// Leave the `error` port unwired (failures go to the dead-letter log).
    #[must_use]
    pub fn unwired_error(self) -> Self {
        self.unwired("error")
    }

    /// Leave the output `port` unwired.
    #[must_use]
    pub fn unwired(mut self, port: &str) -> Self {
        self.unwired.push(port.to_owned());
        self
    }

    /// Cancel the gear after this long (endless sources).
    #[must_use]
    pub fn cancel_after(mut self, d: Duration) -> Self {
        self.cancel_after = Some(d);
        self
    }

    /// Resolve relative paths in the config against `dir`.
    #[must_use]
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Prepares, builds and runs the gear to completion.
    pub async fn run(self) -> Result<TestRun, String> {
        let node = fluxrig_config::parse(&self.config).map_err(|p| p.to_string())?;
        let check = CheckContext {
            base_dir: self.base_dir.clone(),
            data_dir: self.base_dir.clone(),
        };
        let prepared = self.gear_type.prepare(&node, &check).map_err(|ps| {
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let entity = EntityId::new(EntityType::Gear, 0, 1).unwrap_or_default();
        let bctx = BuildContext {
            gear: Arc::from("under_test"),
            entity,
            base_dir: self.base_dir.clone(),
            data_dir: self.base_dir.clone(),
            wal_sync: fluxrig_wal::SyncPolicy::Always,
        };
        let mut gear = prepared.build(&bctx).map_err(|e| e.to_string())?;

        let has_input = prepared.ports().iter().any(|p| p.dir == PortDir::In);
        let inbox = if has_input {
            let (tx, rx) = lane(64, WhenFull::Block, "test -> in");
            let inputs = self.inputs;
            tokio::spawn(async move {
                for m in inputs {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
            Some(Inbox::new(vec![rx]))
        } else {
            None
        };

        let mut outputs = Vec::new();
        let mut collectors = Vec::new();
        for p in prepared.ports().iter().filter(|p| p.dir == PortDir::Out) {
            let name = p.name.to_string();
            let lanes = if self.unwired.contains(&name) {
                Vec::new()
            } else {
                let (tx, mut rx) = lane(64, WhenFull::Block, format!("{name} -> test"));
                let key = name.clone();
                collectors.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(m) = rx.recv().await {
                        got.push(m);
                    }
                    (key, got)
                }));
                vec![tx]
            };
            outputs.push(OutputPort {
                name: name.as_str().into(),
                lanes: Arc::new(LaneSet::new(lanes)),
            });
        }

        let dead = Arc::new(MemoryDeadLetters::default());
        let stats = Arc::new(GearStats::default());
        let cancel = CancellationToken::new();
        let ctx = RunContext {
            gear: Arc::clone(&bctx.gear),
            gear_type: self.gear_type.name(),
            entity,
            ids: Arc::new(IdGenerator::new(0)),
            cancel: cancel.clone(),
            dead_letters: Arc::clone(&dead) as Arc<dyn DeadLetters>,
            stats: Arc::clone(&stats),
            journal: self.journal.clone(),
            gate: Arc::new(crate::Gate::new(Arc::clone(&bctx.gear))),
            admission: crate::Admission::default(),
            role: self.gear_type.role(),
            tracer: self.tracer.clone(),
        };
        if let Some(d) = self.cancel_after {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                c.cancel();
            });
        }
        let mut io = GearIo::new(IoParts {
            inbox,
            outputs,
            ctx,
        });
        let result = gear
            .run(&mut io)
            .await
            .map_err(|e: GearError| e.to_string());
        drop(io); // closes the output lanes so the collectors finish
        drop(gear);
        let mut by_port = BTreeMap::new();
        for c in collectors {
            let (k, v) = c.await.map_err(|e| e.to_string())?;
            by_port.insert(k, v);
        }
        Ok(TestRun {
            outputs: by_port,
            dead_letters: dead.take(),
            stats: stats.snapshot(),
            result,
        })
    }
}
