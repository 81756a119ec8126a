//! The Rack runtime.
//!
//! A [`Rack`] runs the gears of a scenario, each in its own task under a
//! supervisor, joined by bounded lanes (one per wire). It ends by itself when
//! every gear has finished — finite sources done and everything delivered —
//! or when told to stop: sources are cancelled, the others drain what is in
//! their lanes and finish, under a deadline.
//!
//! A running Rack can **swap** to a new version of its scenario without
//! downtime: gears whose type and config are unchanged keep running (with
//! their connections and listeners); changed gears are built beside the old
//! ones; wires move atomically; an old gear drains its input and finishes
//! before its replacement starts, and the replacement emits into the same
//! lanes, so downstream sees every old output before any new one.
//!
//! Every message entering through a source is recorded in the Rack's
//! **write-ahead log** (`<data>/wal/`) before it reaches a wire, and every
//! delivery by a sink is recorded after it; at start, messages accepted but
//! not completed by every sink they reach are replayed (or handed to a
//! [`Compensator`]). See `docs/design/rack-durability.md`.

mod dead_letters;
mod journal;
mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxrig_gear::{
    Admission, AtRest, BuildContext, DeadLetters, Gate, GearIo, GearStats, Inbox, InboxAdder,
    IoParts, Lane, LaneSet, OutputPort, PortDir, RunContext, StatsSnapshot, WeakLane, lane,
};
use fluxrig_msg::{FluxMsg, IdGenerator};
use fluxrig_scenario::{Endpoint, GearSpec, Scenario};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use dead_letters::DeadLetterLog;
pub use fluxrig_telemetry::RackSnapshot;
pub use fluxrig_wal::SyncPolicy;
pub use journal::{Compensator, IDEMPOTENCY_WINDOW, LogCompensator, RecoveryPolicy};

use crate::journal::{RackJournal, Recovered};

use crate::supervisor::{Supervised, supervise};

/// How a Rack runs.
#[derive(Debug, Clone)]
pub struct RackOptions {
    /// Where the Rack keeps its state (id high-water mark, dead letters,
    /// the write-ahead log `wal/`, the audit archive `archive/`, pending
    /// buffers `pending/`).
    pub data_dir: PathBuf,
    /// Machine id of the Rack's fluxID generator (0 = unassigned).
    pub machine: u16,
    /// How long gears may take to drain after a stop (or a swap) before
    /// they are cancelled.
    pub drain_timeout: Duration,
    /// When the write-ahead log (`<data>/wal/`) syncs, and so when sources
    /// acknowledge (default `always`: a group-committed sync before any
    /// acknowledgement).
    pub wal_sync: SyncPolicy,
    /// What happens at start to messages accepted and not completed before
    /// a crash (default: replay them).
    pub recovery: RecoveryPolicy,
    /// The hook of [`RecoveryPolicy::Compensate`] (default: log each one).
    pub compensator: Arc<dyn Compensator>,
    /// How often the background compactor turns closed WAL segments into
    /// the Parquet audit archive (`<data>/archive/`); `None` turns it off.
    pub compact_every: Option<Duration>,
    /// What protects messages before they are written to disk (WAL,
    /// dead letters); `fluxrig run` installs the coat check's, which
    /// encrypts raw card frames and masks classified fields.
    pub at_rest: Option<Arc<dyn AtRest>>,
    /// Where gears hand their hop spans (`fluxrig run` installs one when
    /// OTLP export is configured); `None`: no spans, `trace` passes through.
    pub tracer: Option<Arc<fluxrig_telemetry::Tracer>>,
}

impl Default for RackOptions {
    fn default() -> Self {
        RackOptions {
            data_dir: PathBuf::from("data"),
            machine: 0,
            drain_timeout: Duration::from_secs(30),
            wal_sync: SyncPolicy::Always,
            recovery: RecoveryPolicy::Replay,
            compensator: Arc::new(LogCompensator),
            compact_every: Some(Duration::from_secs(30)),
            at_rest: None,
            tracer: None,
        }
    }
}

/// Why a Rack cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RackError {
    /// Gears that could not be built, each with the gear's name.
    #[error("{}", .0.join("\n"))]
    Build(Vec<String>),
    /// The data directory or the id state is unusable.
    #[error("{0}")]
    State(String),
}

/// A gear's counters, for status displays.
#[derive(Debug, Clone)]
pub struct GearStatus {
    /// The gear's name.
    pub name: String,
    /// The gear's type.
    pub gear_type: &'static str,
    /// Its counters.
    pub stats: StatsSnapshot,
}

/// What changed in a swap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapReport {
    /// Gears that kept running.
    pub kept: Vec<String>,
    /// Gears replaced by a new version.
    pub replaced: Vec<String>,
    /// Gears added.
    pub added: Vec<String>,
    /// Gears removed.
    pub removed: Vec<String>,
}

enum Command {
    Apply(
        Box<Scenario>,
        oneshot::Sender<Result<SwapReport, RackError>>,
    ),
    Stop,
}

/// What handles observe of the running topology: every current gear
/// (name, type, counters, output ports) and every wire.
#[derive(Debug, Default)]
struct Observed {
    gears: Vec<ObservedGear>,
    wires: Vec<WeakLane>,
}

#[derive(Debug)]
struct ObservedGear {
    name: String,
    gear_type: &'static str,
    stats: Arc<GearStats>,
    outputs: BTreeMap<String, Arc<LaneSet>>,
}

/// The observed topology, shared with handles.
type SharedStatus = Arc<Mutex<Observed>>;

/// Controls a running Rack.
#[derive(Debug, Clone)]
pub struct RackHandle {
    tx: mpsc::Sender<Command>,
    status: SharedStatus,
    rack: Arc<str>,
    started: std::time::Instant,
    wal: fluxrig_wal::WalMeter,
    tracer: Option<Arc<fluxrig_telemetry::Tracer>>,
}

/// Why a port cannot be tapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// No gear of that name.
    #[error("no gear `{0}` in the running scenario")]
    NoGear(String),
    /// The gear has no such output port.
    #[error("gear `{gear}` has no output port `{port}` (it has: {known})")]
    NoPort {
        /// The gear.
        gear: String,
        /// The port asked for.
        port: String,
        /// The gear's output ports.
        known: String,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply(s, _) => write!(f, "Apply({})", s.name),
            Command::Stop => f.write_str("Stop"),
        }
    }
}

impl RackHandle {
    /// Asks the Rack to stop: sources stop, the rest drains, `run` returns.
    pub async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }

    /// Swaps to a new (already validated) scenario; returns what changed.
    pub async fn apply(&self, scenario: Scenario) -> Result<SwapReport, RackError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Apply(Box::new(scenario), tx))
            .await
            .map_err(|_| RackError::State("the rack has stopped".to_owned()))?;
        rx.await
            .map_err(|_| RackError::State("the rack has stopped".to_owned()))?
    }

    /// Every current gear's counters, in scenario order.
    pub fn status(&self) -> Vec<GearStatus> {
        self.observed()
            .gears
            .iter()
            .map(|g| GearStatus {
                name: g.name.clone(),
                gear_type: g.gear_type,
                stats: g.stats.snapshot(),
            })
            .collect()
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every metric of the Rack now (a collector calls it; the gears never
    /// wait for it: it only reads atomics).
    pub fn metrics(&self) -> fluxrig_telemetry::RackSnapshot {
        let o = self.observed();
        let tail_dropped: u64 = o
            .gears
            .iter()
            .flat_map(|g| g.outputs.values())
            .map(|set| set.tap().dropped())
            .sum();
        fluxrig_telemetry::RackSnapshot {
            rack: self.rack.to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            gears: o
                .gears
                .iter()
                .map(|g| g.stats.metrics(&g.name, g.gear_type))
                .collect(),
            ports: o
                .gears
                .iter()
                .flat_map(|g| {
                    g.outputs
                        .iter()
                        .map(|(port, set)| fluxrig_telemetry::PortMetrics {
                            gear: g.name.clone(),
                            port: port.clone(),
                            messages_out: set.emitted(),
                        })
                })
                .collect(),
            wires: o
                .wires
                .iter()
                .map(|w| {
                    let (depth, capacity) = w.fill().unwrap_or((0, 0));
                    fluxrig_telemetry::WireMetrics {
                        wire: w.label().to_owned(),
                        depth: depth as u64,
                        capacity: capacity as u64,
                        dropped: w.dropped(),
                    }
                })
                .collect(),
            wal: self.wal.metrics(),
            telemetry_dropped: vec![
                ("tail".to_owned(), tail_dropped),
                (
                    "spans".to_owned(),
                    self.tracer.as_ref().map_or(0, |t| t.dropped()),
                ),
            ],
        }
    }

    /// Copies of the messages a gear emits on an output port from now on
    /// (`fluxrig tail`): up to `capacity` wait in the receiver, more are
    /// dropped and counted; the gear never waits. Dropping the receiver
    /// ends the tap.
    pub fn tap(
        &self,
        gear: &str,
        port: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<FluxMsg>, TapError> {
        let o = self.observed();
        let g = o
            .gears
            .iter()
            .find(|g| g.name == gear)
            .ok_or_else(|| TapError::NoGear(gear.to_owned()))?;
        let set = g.outputs.get(port).ok_or_else(|| TapError::NoPort {
            gear: gear.to_owned(),
            port: port.to_owned(),
            known: g.outputs.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        Ok(set.tap().subscribe(capacity))
    }
}

/// A gear as the Rack tracks it.
struct Running {
    spec: GearSpec,
    stats: Arc<GearStats>,
    outputs: BTreeMap<String, Arc<LaneSet>>,
    adder: Option<InboxAdder>,
    cancel: CancellationToken,
    gate: Arc<Gate>,
    admission: Admission,
    /// Generation of the gear's task in the join set.
    task: tokio::task::Id,
}

/// A gear built and wired, not yet started.
struct Staged {
    spec: GearSpec,
    stats: Arc<GearStats>,
    supervised: Supervised,
    outputs: BTreeMap<String, Arc<LaneSet>>,
    adder: Option<InboxAdder>,
    cancel: CancellationToken,
    gate: Arc<Gate>,
    admission: Admission,
}

/// A Rack, ready to run.
pub struct Rack {
    opts: RackOptions,
    /// The scenario's name (the archive's `rack` column).
    name: String,
    ids: Arc<IdGenerator>,
    journal: RackJournal,
    /// Found at start: messages to replay or compensate.
    recovered: Recovered,
    dead_letters: Arc<DeadLetterLog>,
    /// Cancelled to stop the sources (graceful stop).
    stop: CancellationToken,
    /// Cancelled to stop every gear at once (drain deadline passed).
    kill: CancellationToken,
    gears: BTreeMap<String, Running>,
    order: Vec<String>,
    /// Every wire's lane, held weakly: the gears hold them open.
    lanes: BTreeMap<(Endpoint, Endpoint), WeakLane>,
    tasks: JoinSet<()>,
    staged: Vec<Staged>,
    status: SharedStatus,
    rx: mpsc::Receiver<Command>,
    handle: RackHandle,
}

impl std::fmt::Debug for Rack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rack")
            .field("gears", &self.order)
            .finish_non_exhaustive()
    }
}

impl Rack {
    /// Builds every gear of the scenario (binding listeners, opening
    /// files). Nothing runs yet; any failure is reported for every gear that
    /// failed, and nothing that was built stays open.
    pub fn build(scenario: &Scenario, opts: RackOptions) -> Result<Rack, RackError> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| {
            RackError::State(format!(
                "cannot create data dir {}: {e}",
                opts.data_dir.display()
            ))
        })?;
        let ids = IdGenerator::with_state_file(opts.machine, opts.data_dir.join("ids.state"))
            .map_err(|e| RackError::State(e.to_string()))?;
        let dead_letters = DeadLetterLog::open(&opts.data_dir)
            .map_err(|e| RackError::State(format!("cannot open the dead-letter log: {e}")))?;
        let (journal, recovered) = RackJournal::open(
            &opts.data_dir,
            opts.wal_sync,
            scenario,
            opts.at_rest.clone(),
        )
        .map_err(RackError::State)?;
        let (tx, rx) = mpsc::channel(8);
        let wal = journal.meter();
        let status = Arc::new(Mutex::new(Observed::default()));
        let tracer_for_handle = opts.tracer.clone();
        let mut rack = Rack {
            opts,
            name: scenario.name.clone(),
            ids: Arc::new(ids),
            journal,
            recovered,
            dead_letters: Arc::new(dead_letters),
            stop: CancellationToken::new(),
            kill: CancellationToken::new(),
            gears: BTreeMap::new(),
            order: Vec::new(),
            lanes: BTreeMap::new(),
            tasks: JoinSet::new(),
            staged: Vec::new(),
            handle: RackHandle {
                tx,
                status: Arc::clone(&status),
                rack: Arc::from(scenario.name.as_str()),
                started: std::time::Instant::now(),
                wal,
                tracer: tracer_for_handle,
            },
            status,
            rx,
        };
        let all: BTreeSet<String> = scenario.gears.iter().map(|g| g.name.clone()).collect();
        rack.staged = rack.stage(scenario, &all, &BTreeMap::new())?;
        Ok(rack)
    }

    /// A handle to stop the Rack, swap its scenario and read its counters.
    pub fn handle(&self) -> RackHandle {
        self.handle.clone()
    }

    /// The dead-letter log.
    pub fn dead_letters(&self) -> &DeadLetterLog {
        &self.dead_letters
    }

    /// Builds and wires the gears named in `fresh` for `scenario`. Lanes
    /// into gears that keep running are reused when the wire exists, or
    /// added to their inbox; `carried` gives replaced gears their old
    /// counters.
    fn stage(
        &mut self,
        scenario: &Scenario,
        fresh: &BTreeSet<String>,
        carried: &BTreeMap<String, Arc<GearStats>>,
    ) -> Result<Vec<Staged>, RackError> {
        // Build first: nothing is wired until every gear builds.
        let mut built = Vec::new();
        let mut errors = Vec::new();
        for g in scenario.gears.iter().filter(|g| fresh.contains(&g.name)) {
            let ctx = BuildContext {
                gear: Arc::from(g.name.as_str()),
                entity: g.entity,
                base_dir: scenario
                    .file
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_default(),
                data_dir: self.opts.data_dir.clone(),
                wal_sync: self.opts.wal_sync,
            };
            match g.prepared.build(&ctx) {
                Ok(gear) => built.push((g.clone(), ctx, gear)),
                Err(e) => errors.push(format!("gear `{}`: {e}", g.name)),
            }
        }
        if !errors.is_empty() {
            return Err(RackError::Build(errors));
        }

        // Lanes of the new topology.
        let mut lanes = BTreeMap::new();
        let mut inboxes: BTreeMap<String, Vec<mpsc::Receiver<FluxMsg>>> = BTreeMap::new();
        let mut added: Vec<(String, mpsc::Receiver<FluxMsg>)> = Vec::new();
        for w in &scenario.wires {
            let key = (w.from.clone(), w.to.clone());
            let receiver_kept = !fresh.contains(&w.to.gear);
            if receiver_kept
                && let Some(existing) = self.lanes.get(&key).and_then(WeakLane::upgrade)
            {
                lanes.insert(key, existing);
                continue;
            }
            let (tx, rx) = lane(w.capacity, w.when_full, w.label());
            lanes.insert(key, tx);
            if receiver_kept {
                added.push((w.to.gear.clone(), rx));
            } else {
                inboxes.entry(w.to.gear.clone()).or_default().push(rx);
            }
        }

        let mut staged = Vec::new();
        for (spec, ctx, gear) in built {
            let outputs: BTreeMap<String, Arc<LaneSet>> = spec
                .ports()
                .iter()
                .filter(|p| p.dir == PortDir::Out)
                .map(|p| {
                    (
                        p.name.to_string(),
                        Arc::new(LaneSet::new(port_lanes(&lanes, &spec.name, &p.name))),
                    )
                })
                .collect();
            let has_input = spec.ports().iter().any(|p| p.dir == PortDir::In);
            let inbox =
                has_input.then(|| Inbox::new(inboxes.remove(&spec.name).unwrap_or_default()));
            let adder = inbox.as_ref().map(Inbox::adder);
            let parent = if spec.role() == fluxrig_gear::Role::Source {
                &self.stop
            } else {
                &self.kill
            };
            let cancel = parent.child_token();
            let stats = carried.get(&spec.name).cloned().unwrap_or_default();
            let gate = Arc::new(Gate::new(Arc::clone(&ctx.gear)));
            let admission = Admission::default();
            let ports: Vec<OutputPort> = spec
                .ports()
                .iter()
                .filter(|p| p.dir == PortDir::Out)
                .map(|p| OutputPort {
                    name: p.name.as_ref().into(),
                    lanes: Arc::clone(&outputs[p.name.as_ref()]),
                })
                .collect();
            let io = GearIo::new(IoParts {
                inbox,
                outputs: ports.clone(),
                ctx: RunContext {
                    gear: Arc::clone(&ctx.gear),
                    gear_type: spec.gear_type.name(),
                    entity: spec.entity,
                    ids: Arc::clone(&self.ids),
                    cancel: cancel.clone(),
                    dead_letters: Arc::new(
                        self.journal.dead_letters(Arc::clone(&self.dead_letters)),
                    ) as Arc<dyn DeadLetters>,
                    stats: Arc::clone(&stats),
                    journal: self.journal.for_gear(&spec.name, spec.role()),
                    gate: Arc::clone(&gate),
                    admission: admission.clone(),
                    role: spec.role(),
                    tracer: self.opts.tracer.clone(),
                },
            });
            let supervised = Supervised {
                gear,
                io,
                prepared: Arc::clone(&spec.prepared),
                build: ctx,
                outputs: ports,
                stats: Arc::clone(&stats),
            };
            staged.push(Staged {
                spec,
                stats,
                supervised,
                outputs,
                adder,
                cancel,
                gate,
                admission,
            });
        }
        self.admit(scenario, &staged);

        // Commit: wire new inputs of kept gears, re-point their outputs.
        for (gear, rx) in added {
            if let Some(adder) = self.gears.get(&gear).and_then(|r| r.adder.as_ref()) {
                adder.add(rx);
            }
        }
        for r in self
            .gears
            .values()
            .filter(|r| !fresh.contains(&r.spec.name))
        {
            for (port, set) in &r.outputs {
                set.replace(port_lanes(&lanes, &r.spec.name, port));
            }
        }
        self.lanes = lanes
            .iter()
            .map(|(k, l)| (k.clone(), l.downgrade()))
            .collect();
        Ok(staged)
    }

    /// Points every gear's admission at the gates of the gears downstream
    /// of it in `scenario` (staged gears replace running ones of the same
    /// name).
    fn admit(&self, scenario: &Scenario, staged: &[Staged]) {
        let mut gates: BTreeMap<&str, (&Arc<Gate>, &Admission)> = self
            .gears
            .iter()
            .map(|(n, r)| (n.as_str(), (&r.gate, &r.admission)))
            .collect();
        for s in staged {
            gates.insert(s.spec.name.as_str(), (&s.gate, &s.admission));
        }
        let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in &scenario.wires {
            next.entry(w.from.gear.as_str())
                .or_default()
                .push(w.to.gear.as_str());
        }
        for g in &scenario.gears {
            let Some((_, admission)) = gates.get(g.name.as_str()) else {
                continue;
            };
            let mut seen = BTreeSet::new();
            let mut todo = vec![g.name.as_str()];
            while let Some(n) = todo.pop() {
                for &t in next.get(n).into_iter().flatten() {
                    if t != g.name && seen.insert(t) {
                        todo.push(t);
                    }
                }
            }
            admission.set(
                seen.iter()
                    .filter_map(|n| gates.get(n).map(|(gate, _)| Arc::clone(gate)))
                    .collect(),
            );
        }
    }

    fn start(&mut self, staged: Vec<Staged>) {
        for s in staged {
            let name = s.spec.name.clone();
            let span =
                tracing::info_span!("gear", gear = %name, gear_type = s.spec.gear_type.name());
            let task = self
                .tasks
                .spawn(tracing::Instrument::instrument(
                    supervise(s.supervised),
                    span,
                ))
                .id();
            self.gears.insert(
                name,
                Running {
                    spec: s.spec,
                    stats: s.stats,
                    outputs: s.outputs,
                    adder: s.adder,
                    cancel: s.cancel,
                    gate: s.gate,
                    admission: s.admission,
                    task,
                },
            );
        }
    }

    fn publish_status(&mut self, scenario_order: Vec<String>) {
        self.order = scenario_order;
        let mut st = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.gears = self
            .order
            .iter()
            .filter_map(|n| self.gears.get(n))
            .map(|r| ObservedGear {
                name: r.spec.name.clone(),
                gear_type: r.spec.gear_type.name(),
                stats: Arc::clone(&r.stats),
                outputs: r.outputs.clone(),
            })
            .collect();
        st.wires = self.lanes.values().cloned().collect();
    }

    /// Runs until every gear has finished, or until stopped through the
    /// handle. Returns every gear's final counters.
    pub async fn run(mut self) -> Vec<GearStatus> {
        let staged = std::mem::take(&mut self.staged);
        let order = staged.iter().map(|s| s.spec.name.clone()).collect();
        self.recover(&staged);
        self.start(staged);
        self.publish_status(order);
        let compactor = self.opts.compact_every.and_then(|every| {
            let data = &self.opts.data_dir;
            fluxrig_audit::Compactor::start(
                fluxrig_audit::wal_dir(data),
                fluxrig_audit::archive_dir(data),
                fluxrig_audit::CompactOptions::default().rack(self.name.clone()),
                every,
            )
            .map_err(|e| tracing::error!(error = %e, "the audit compactor did not start; the WAL is kept whole"))
            .ok()
        });
        tracing::info!(gears = self.gears.len(), "rack started");
        let mut stopping = false;
        let mut deadline = None;
        loop {
            let drain_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = self.tasks.join_next_with_id() => match joined {
                    None => break,
                    Some(r) => self.finished(r.map_or_else(|e| e.id(), |(id, ())| id)),
                },
                cmd = self.rx.recv(), if !stopping => match cmd {
                    Some(Command::Stop) | None => {
                        tracing::info!("stopping: sources stop, the rest drains");
                        stopping = true;
                        self.stop.cancel();
                        deadline = Some(tokio::time::Instant::now() + self.opts.drain_timeout);
                    }
                    Some(Command::Apply(s, reply)) => {
                        let r = self.swap(*s).await;
                        let _ = reply.send(r);
                    }
                },
                () = drain_deadline => {
                    tracing::error!(timeout = ?self.opts.drain_timeout, "drain deadline passed; cancelling every gear");
                    self.kill.cancel();
                    deadline = None;
                }
            }
        }
        if let Some(c) = compactor {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        self.journal.clone().close().await;
        tracing::info!(dead_letters = self.dead_letters.written(), "rack stopped");
        self.handle.status()
    }

    /// Hands the messages recovery found to the policy: `replay` sends each
    /// into the wires of the port it entered on (in log order; the source's
    /// new messages may interleave with them), `compensate` gives each to
    /// the compensator.
    fn recover(&mut self, staged: &[Staged]) {
        let replay = std::mem::take(&mut self.recovered.replay);
        if replay.is_empty() {
            return;
        }
        if self.opts.recovery == RecoveryPolicy::Compensate {
            tracing::warn!(
                messages = replay.len(),
                "compensating messages accepted and not completed before a crash"
            );
            for r in &replay {
                self.opts.compensator.compensate(&r.gear, &r.port, &r.msg);
            }
            return;
        }
        let mut jobs = Vec::with_capacity(replay.len());
        for r in replay {
            let lanes = staged
                .iter()
                .find(|s| s.spec.name == r.gear)
                .and_then(|s| s.outputs.get(&r.port))
                .map(|set| set.load());
            match lanes {
                Some(lanes) => jobs.push((lanes, r.msg)),
                None => {
                    tracing::warn!(gear = %r.gear, port = %r.port, id = %r.msg.id, "cannot replay: the port is gone");
                }
            }
        }
        tracing::info!(
            messages = jobs.len(),
            "replaying messages accepted and not completed before a crash"
        );
        let kill = self.kill.clone();
        self.tasks.spawn(async move {
            for (lanes, msg) in jobs {
                for lane in lanes.iter() {
                    tokio::select! {
                        r = lane.send(msg.clone()) => if r.is_err() {
                            tracing::warn!(wire = lane.label(), id = %msg.id, "cannot replay: the wire is closed");
                        },
                        () = kill.cancelled() => return,
                    }
                }
            }
            tracing::info!("replay done");
        });
    }

    fn finished(&mut self, id: tokio::task::Id) {
        if let Some(name) = self
            .gears
            .iter()
            .find(|(_, r)| r.task == id)
            .map(|(n, _)| n.clone())
        {
            tracing::debug!(gear = %name, "gear done");
        }
    }

    async fn swap(&mut self, next: Scenario) -> Result<SwapReport, RackError> {
        let mut report = SwapReport::default();
        let next_names: BTreeSet<String> = next.gears.iter().map(|g| g.name.clone()).collect();
        let mut fresh = BTreeSet::new();
        for g in &next.gears {
            match self.gears.get(&g.name) {
                Some(r) if r.spec.fingerprint == g.fingerprint => report.kept.push(g.name.clone()),
                Some(_) => {
                    report.replaced.push(g.name.clone());
                    fresh.insert(g.name.clone());
                }
                None => {
                    report.added.push(g.name.clone());
                    fresh.insert(g.name.clone());
                }
            }
        }
        report.removed = self
            .gears
            .keys()
            .filter(|n| !next_names.contains(*n))
            .cloned()
            .collect();
        let retiring: Vec<String> = report
            .replaced
            .iter()
            .chain(&report.removed)
            .cloned()
            .collect();

        // Sources being replaced stop first, so a replacement can take over
        // their listener; other retiring gears drain once their inputs move.
        let retired_sources: Vec<&String> = retiring
            .iter()
            .filter(|n| {
                self.gears
                    .get(*n)
                    .is_some_and(|r| r.spec.role() == fluxrig_gear::Role::Source)
            })
            .collect();
        for n in &retired_sources {
            self.gears[*n].cancel.cancel();
        }
        let retired_tasks: BTreeSet<tokio::task::Id> = retiring
            .iter()
            .filter_map(|n| self.gears.get(n))
            .map(|r| r.task)
            .collect();
        if !retired_sources.is_empty() {
            self.wait_for(
                &retired_sources
                    .iter()
                    .map(|n| self.gears[*n].task)
                    .collect(),
            )
            .await;
        }

        let carried = report
            .replaced
            .iter()
            .filter_map(|n| self.gears.get(n).map(|r| (n.clone(), Arc::clone(&r.stats))))
            .collect();
        let staged = self.stage(&next, &fresh, &carried)?;
        // Retiring gears lost their inputs (or were cancelled): wait for them
        // to drain into the lanes their replacements will share.
        self.wait_for(&retired_tasks).await;
        for n in &retiring {
            self.gears.remove(n);
        }
        self.start(staged);
        self.publish_status(next.gears.iter().map(|g| g.name.clone()).collect());
        tracing::info!(
            kept = report.kept.len(),
            replaced = report.replaced.len(),
            added = report.added.len(),
            removed = report.removed.len(),
            "scenario swapped"
        );
        Ok(report)
    }

    /// Waits until the given tasks have finished (cancelling them at the
    /// drain deadline).
    async fn wait_for(&mut self, tasks: &BTreeSet<tokio::task::Id>) {
        let mut left: BTreeSet<_> = tasks.clone();
        let deadline = tokio::time::sleep(self.opts.drain_timeout);
        tokio::pin!(deadline);
        let mut cancelled = false;
        while !left.is_empty() {
            tokio::select! {
                joined = self.tasks.join_next_with_id() => match joined {
                    Some(Ok((id, ()))) => { left.remove(&id); }
                    Some(Err(e)) => { left.remove(&e.id()); }
                    None => return,
                },
                () = &mut deadline, if !cancelled => {
                    tracing::error!("retiring gears did not drain in time; cancelling them");
                    for r in self.gears.values().filter(|r| left.contains(&r.task)) {
                        r.cancel.cancel();
                    }
                    cancelled = true;
                }
            }
        }
    }
}

/// The lanes of a port in the given topology.
fn port_lanes(lanes: &BTreeMap<(Endpoint, Endpoint), Lane>, gear: &str, port: &str) -> Vec<Lane> {
    lanes
        .iter()
        .filter(|((from, _), _)| from.gear == gear && from.port == port)
        .map(|(_, l)| l.clone())
        .collect()
}
