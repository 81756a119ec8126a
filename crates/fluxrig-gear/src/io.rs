//! What a running gear sees: its inbox, its output ports, its context.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use fluxrig_msg::{EntityId, FluxId, FluxMsg, Hop, IdGenerator, TraceContext};
use fluxrig_telemetry::{DeadLetterReason, SAMPLED, SpanRecord, Tracer};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::admission::{Admission, Gate};
use crate::journal::{Delivery, Durable, Ingress, Journal, JournalError};
use crate::lane::{Inbox, LaneSet};
use crate::stats::GearStats;
use crate::{GearError, Role};

/// A message that could not be processed or delivered, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The gear that gave up on it.
    pub gear: Arc<str>,
    /// Why (no field values: messages may hold card data).
    pub reason: String,
    /// The message as it was.
    pub msg: FluxMsg,
}

/// Where messages go when they fail and no `error` port is wired: the
/// Rack's dead-letter log.
pub trait DeadLetters: Send + Sync + fmt::Debug {
    /// Records a dead letter. Must not lose it silently: an implementation
    /// that cannot write reports loudly (ERROR) and counts it.
    fn record(&self, letter: DeadLetter);
}

/// Context of a running gear.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The gear's name in the scenario.
    pub gear: Arc<str>,
    /// The gear's type.
    pub gear_type: &'static str,
    /// The gear's fluxEntityID (stable across restarts).
    pub entity: EntityId,
    /// The Rack's id generator.
    pub ids: Arc<IdGenerator>,
    /// Cancelled when the gear must stop producing (sources) or stop at
    /// once (the drain deadline passed).
    pub cancel: CancellationToken,
    /// The dead-letter log.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// The gear's counters.
    pub stats: Arc<GearStats>,
    /// The Rack's journal for this gear (its write-ahead log), for sources
    /// and sinks; `None` for transforms and outside a Rack.
    pub journal: Option<Arc<dyn Journal>>,
    /// This gear's gate: a sink closes it while it refuses new work (its
    /// pending buffer is full under the `reject` policy).
    pub gate: Arc<Gate>,
    /// The gates downstream of this gear: a source that can refuse a
    /// request (`http_in`) checks them before it accepts one.
    pub admission: Admission,
    /// The gear's role (sources and sinks get a span per delivery of a
    /// message they received).
    pub role: Role,
    /// Where hop spans go; `None`: no spans, `trace` passes through.
    pub tracer: Option<Arc<Tracer>>,
}

/// Handle to one of a gear's output ports (resolve it once, emit often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRef(usize);

/// An output port: its name and the wires it feeds.
#[derive(Debug, Clone)]
pub struct OutputPort {
    /// The port's name.
    pub name: CompactString,
    /// Its wires (shared with the Rack, which re-points them on a swap).
    pub lanes: Arc<LaneSet>,
}

/// The parts a [`GearIo`] is made of (the Rack and the test kit assemble them).
#[derive(Debug)]
pub struct IoParts {
    /// The merged input (none for sources).
    pub inbox: Option<Inbox>,
    /// Output ports in declaration order.
    pub outputs: Vec<OutputPort>,
    /// The run context.
    pub ctx: RunContext,
}

/// A running gear's lanes and context.
///
/// Everything that emits lives on [`Outputs`] (reached through `Deref`);
/// [`GearIo::split`] lends the input and the outputs separately, so a gear
/// in a cycle of wires (request/reply) can keep draining its input while an
/// emit waits for room, instead of deadlocking the cycle.
#[derive(Debug)]
pub struct GearIo {
    inbox: Option<Inbox>,
    outs: Outputs,
}

/// The emitting half of a [`GearIo`]: output ports, context, failures.
#[derive(Debug)]
pub struct Outputs {
    ports: Vec<OutputPort>,
    out: Option<PortRef>,
    error: Option<PortRef>,
    ctx: RunContext,
    /// Sinks with a journal: messages received and not yet delivered or
    /// failed, oldest first, with their prepared egress record.
    outstanding: Mutex<VecDeque<(FluxId, Option<bytes::Bytes>)>>,
    /// Sources and sinks with a tracer: spans of messages received and not
    /// yet delivered or failed, oldest first.
    open_spans: Mutex<VecDeque<OpenSpan>>,
}

/// The span of a message a source or sink received, closed when the gear
/// reports the message delivered or failed.
#[derive(Debug, Clone, Copy)]
struct OpenSpan {
    msg: FluxId,
    trace: TraceContext,
    parent: [u8; 8],
    start_ns: u64,
}

/// At most this many deliveries are timed at once per gear; past it, the
/// spans are counted as dropped (a gear that never reports deliveries must
/// not grow memory).
const MAX_OPEN_SPANS: usize = 65_536;

/// How a message's hop is traced when it is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// A hop span (kept when sampled or slow).
    Hop,
    /// A failed hop (always kept).
    Failed,
    /// No span: the hop was already recorded.
    None,
}

/// The input half of a [`GearIo`] (see [`GearIo::split`]).
#[derive(Debug)]
pub struct Input<'a> {
    inbox: Option<&'a mut Inbox>,
    outs: &'a Outputs,
}

impl Input<'_> {
    /// The next input message; `None` when every input wire is closed and
    /// drained, or when the gear has no input. Cancel-safe. A sink with a
    /// journal skips messages it completed before a restart.
    pub async fn recv(&mut self) -> Option<FluxMsg> {
        loop {
            let m = self.inbox.as_mut()?.recv().await?;
            let mut m = m;
            if self.outs.admit(&m) {
                self.outs.ctx.stats.add_in(1);
                self.outs.open_span(&mut m);
                return Some(m);
            }
        }
    }

    /// Takes up to `max` more messages that are ready, without waiting.
    pub fn try_recv_many(&mut self, out: &mut Vec<FluxMsg>, max: usize) -> usize {
        let start = out.len();
        let mut n = self.inbox.as_mut().map_or(0, |i| i.try_recv_many(out, max));
        if self.outs.ctx.journal.is_some() {
            let mut i = start;
            while i < out.len() {
                if self.outs.admit(&out[i]) {
                    i += 1;
                } else {
                    out.remove(i);
                    n -= 1;
                }
            }
        }
        self.outs.ctx.stats.add_in(n as u64);
        if self.outs.traces_deliveries() {
            for m in &mut out[start..] {
                self.outs.open_span(m);
            }
        }
        n
    }
}

impl std::ops::Deref for GearIo {
    type Target = Outputs;

    fn deref(&self) -> &Outputs {
        &self.outs
    }
}

/// Wall-clock time in Unix nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Where a hop ending `now` started: the previous gear's emit, or for the
/// first hop the message's ingress time (`ts`, e.g. when `http_in` read the
/// request), never after `now`.
fn hop_start(msg: &FluxMsg, now: u64) -> u64 {
    let start = msg.path.last().map_or(msg.ts, |h| h.ts);
    if start == 0 { now } else { start.min(now) }
}

/// Paths longer than this keep their first hop and the most recent ones,
/// so a message looping through a cycle cannot grow without bound (the
/// decoder refuses more than 256 hops).
const MAX_PATH: usize = 64;

impl GearIo {
    /// Assembles a gear's io.
    pub fn new(parts: IoParts) -> GearIo {
        let find = |name: &str| {
            parts
                .outputs
                .iter()
                .position(|p| p.name == name)
                .map(PortRef)
        };
        GearIo {
            inbox: parts.inbox,
            outs: Outputs {
                out: find("out"),
                error: find("error"),
                ports: parts.outputs,
                ctx: parts.ctx,
                outstanding: Mutex::new(VecDeque::new()),
                open_spans: Mutex::new(VecDeque::new()),
            },
        }
    }

    /// The next input message; `None` when every input wire is closed and
    /// drained (the gear should finish), or for a source.
    pub async fn recv(&mut self) -> Option<FluxMsg> {
        self.split().0.recv().await
    }

    /// Takes up to `max` more messages that are ready, without waiting.
    pub fn try_recv_many(&mut self, out: &mut Vec<FluxMsg>, max: usize) -> usize {
        self.split().0.try_recv_many(out, max)
    }

    /// The input and the outputs, borrowed separately: a gear may wait on
    /// an emit and on its input in the same `select!`.
    pub fn split(&mut self) -> (Input<'_>, &Outputs) {
        (
            Input {
                inbox: self.inbox.as_mut(),
                outs: &self.outs,
            },
            &self.outs,
        )
    }
}

impl Outputs {
    /// The run context.
    pub fn ctx(&self) -> &RunContext {
        &self.ctx
    }

    fn outstanding(&self) -> std::sync::MutexGuard<'_, VecDeque<(FluxId, Option<bytes::Bytes>)>> {
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a received message is for this gear: a sink skips messages
    /// it completed before a restart (replayed for the other sinks).
    fn admit(&self, msg: &FluxMsg) -> bool {
        let Some(j) = &self.ctx.journal else {
            return true;
        };
        match j.received(msg) {
            Some(egress) => {
                self.outstanding().push_back((msg.id, egress));
                true
            }
            None => false,
        }
    }

    /// The output port called `name`.
    pub fn port(&self, name: &str) -> Option<PortRef> {
        self.ports.iter().position(|p| p.name == name).map(PortRef)
    }

    /// Whether `port` has a wire now (a scenario swap may change it): a
    /// gear can leave out what it emits only for whoever listens (a message
    /// on an unwired port is a dead letter).
    pub fn is_wired(&self, port: PortRef) -> bool {
        !self.ports[port.0].lanes.load().is_empty()
    }

    /// A fresh fluxID from the Rack's generator.
    pub fn new_id(&self) -> FluxId {
        // The generator only fails when the clock is before 2026 or its
        // state file broke; both are reported when the Rack starts.
        self.ctx.ids.next().unwrap_or_default()
    }

    /// Cancelled when the gear must stop (sources: stop producing).
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.ctx.cancel.cancelled()
    }

    /// True once the gear must stop.
    pub fn is_cancelled(&self) -> bool {
        self.ctx.cancel.is_cancelled()
    }

    /// Emits on `out`.
    pub async fn send(&self, msg: FluxMsg) {
        match self.out {
            Some(port) => self.emit(port, msg).await,
            None => self.dead_letter(
                msg,
                DeadLetterReason::Unwired,
                "gear has no `out` port".to_owned(),
            ),
        }
    }

    /// Emits a message on a port: a hop is added to its path and a copy goes
    /// to every wire of the port. Waits while a lane is full (back-pressure).
    ///
    /// In a source with a journal the message is first recorded (ingress);
    /// a duplicate of an idempotency key already recorded is not emitted.
    /// Use [`GearIo::ingest`] to learn when the record is durable.
    pub async fn emit(&self, port: PortRef, msg: FluxMsg) {
        // A message the journal refused went to the dead-letter log with
        // the reason, and the journal logged the failure.
        let _ = self.emit_recorded(port, msg, true).await;
    }

    /// Records and emits; gives back the id to acknowledge and the record's
    /// durability. A message the journal refuses goes to the dead-letter log
    /// when `dead_letter` is set (nobody else hears of the failure), and is
    /// dropped otherwise (the caller refuses it to its sender, who retries).
    async fn emit_recorded(
        &self,
        port: PortRef,
        msg: FluxMsg,
        dead_letter: bool,
    ) -> Result<(FluxId, Durable), JournalError> {
        let id = msg.id;
        let durable = match &self.ctx.journal {
            None => Durable::ready(),
            Some(j) => match j.ingress(&self.ports[port.0].name, &msg).await {
                Ok(Ingress::Recorded(d)) => d,
                Ok(Ingress::Duplicate(first, d)) => return Ok((first, d)),
                Err(e) => {
                    if dead_letter {
                        self.dead_letter(
                            msg,
                            DeadLetterReason::NotRecorded,
                            format!("not recorded: {e}"),
                        );
                    }
                    return Err(e);
                }
            },
        };
        self.ctx.stats.add_out(1);
        self.deliver(port, msg, Span::Hop).await;
        Ok((id, durable))
    }

    /// Sources: records a message entering the Rack and emits it on `out`.
    /// Returns the fluxID to give the sender and a [`Durable`] to await
    /// before acknowledging (HTTP 2xx, a protocol ack): the record is
    /// queued at once and synced together with every other pending record
    /// (group commit), so concurrent senders share one sync. When the
    /// message carries an idempotency key ([`crate::IDEMPOTENCY_META`])
    /// already recorded, nothing is emitted and the first message's id is
    /// returned. On `Err` nothing was emitted: refuse the message to its
    /// sender.
    pub async fn ingest(&self, msg: FluxMsg) -> Result<(FluxId, Durable), JournalError> {
        if let Some(port) = self.out {
            self.emit_recorded(port, msg, false).await
        } else {
            self.dead_letter(
                msg,
                DeadLetterReason::Unwired,
                "gear has no `out` port".to_owned(),
            );
            Err(JournalError("gear has no `out` port".to_owned()))
        }
    }

    async fn deliver(&self, port: PortRef, mut msg: FluxMsg, span: Span) {
        let out = &self.ports[port.0];
        if msg.path.len() >= MAX_PATH {
            msg.path.remove(1);
        }
        let now = now_ns();
        if let Some(prev) = msg.path.last() {
            self.ctx.stats.record_latency(now.saturating_sub(prev.ts));
        }
        if span != Span::None {
            self.hop_span(&mut msg, &out.name, now, span == Span::Failed);
        }
        msg.path.push(Hop {
            gear: self.ctx.entity,
            port: out.name.clone(),
            ts: now,
        });
        out.lanes.count_emit();
        out.lanes.tap().offer(&msg);
        let lanes = out.lanes.load();
        let Some((last, rest)) = lanes.split_last() else {
            let reason = format!("port `{}` is not wired", out.name);
            self.dead_letter(msg, DeadLetterReason::Unwired, reason);
            return;
        };
        for lane in rest {
            if let Err(m) = lane.send(msg.clone()).await {
                self.dead_letter(
                    m,
                    DeadLetterReason::WireClosed,
                    format!("wire {} is closed", lane.label()),
                );
            }
        }
        if let Err(m) = last.send(msg).await {
            self.dead_letter(
                m,
                DeadLetterReason::WireClosed,
                format!("wire {} is closed", last.label()),
            );
        }
    }

    /// Sinks: the oldest `n` messages received and not yet delivered or
    /// failed have left the Rack. Counts them and, with a journal, records
    /// their egress and completion (the records are queued; a message
    /// completed by every sink is not replayed after a crash).
    pub async fn delivered(&self, n: u64) -> Result<(), GearError> {
        self.ctx.stats.add_out(n);
        self.close_spans(usize::try_from(n).unwrap_or(usize::MAX));
        let Some(j) = &self.ctx.journal else {
            return Ok(());
        };
        let done: Vec<Delivery> = {
            let mut q = self.outstanding();
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(q.len());
            q.drain(..n)
                .map(|(id, egress)| Delivery {
                    id,
                    egress,
                    offset: None,
                })
                .collect()
        };
        j.delivered(done)
            .await
            .map_err(|e| GearError::Other(e.to_string()))
    }

    /// Sinks with an output position (a file): like [`GearIo::delivered`]
    /// for `ends.len()` messages, each with where the output ends after it,
    /// recorded so that after a crash the sink cuts its output back to the
    /// last recorded delivery ([`GearIo::committed_offset`]) and the rest is
    /// replayed: exactly once into the output.
    pub async fn delivered_at(&self, ends: &[u64]) -> Result<(), GearError> {
        self.ctx.stats.add_out(ends.len() as u64);
        self.close_spans(ends.len());
        let Some(j) = &self.ctx.journal else {
            return Ok(());
        };
        let done: Vec<Delivery> = {
            let mut q = self.outstanding();
            let n = ends.len().min(q.len());
            q.drain(..n)
                .zip(ends)
                .map(|((id, egress), end)| Delivery {
                    id,
                    egress,
                    offset: Some(*end),
                })
                .collect()
        };
        j.delivered(done)
            .await
            .map_err(|e| GearError::Other(e.to_string()))
    }

    /// Sinks: the output position recorded with this gear's last delivery
    /// (`None` without a journal or before any).
    pub fn committed_offset(&self) -> Option<u64> {
        self.ctx.journal.as_ref()?.committed_offset()
    }

    /// Sinks: whether to make the output durable (`fdatasync`) before
    /// reporting a delivery (the Rack's sync policy is `always`).
    pub fn sync_output(&self) -> bool {
        self.ctx.journal.as_ref().is_some_and(|j| j.sync_output())
    }

    /// A message failed: it goes to the `error` port (with `error.reason`
    /// and `error.gear` in meta) when wired, else to the dead-letter log.
    pub async fn fail(&self, mut msg: FluxMsg, reason: impl fmt::Display) {
        self.ctx.stats.add_error(1);
        let reason = reason.to_string();
        self.settle_failed(msg.id).await;
        let span = if self.close_failed_span(msg.id) {
            Span::None
        } else {
            Span::Failed
        };
        if let Some(port) = self.error
            && self.is_wired(port)
        {
            msg.meta.insert("error.reason", reason.as_str());
            msg.meta.insert("error.gear", &*self.ctx.gear);
            self.deliver(port, msg, span).await;
            return;
        }
        if span == Span::Failed {
            self.hop_span(&mut msg, "", now_ns(), true);
        }
        self.dead_letter(msg, DeadLetterReason::Failed, reason);
    }

    /// A sink failed a message it received: it is handled (error port or
    /// dead letters), so it is recorded as completed here and not replayed.
    async fn settle_failed(&self, id: FluxId) {
        let Some(j) = &self.ctx.journal else {
            return;
        };
        if self.take_outstanding(id) {
            // The journal logs its own failures; the message itself goes on
            // to the error port or the dead-letter log either way.
            let _ = j
                .delivered(vec![Delivery {
                    id,
                    egress: None,
                    offset: None,
                }])
                .await;
        }
    }

    /// A message failed and must not wait for the `error` port (a gear that
    /// may not block, e.g. with a full backlog): it goes straight to the
    /// dead-letter log, counted as an error.
    ///
    /// With a journal the message's completion is recorded too, without
    /// waiting (a crash before the record lands replays it), so later
    /// deliveries are not counted against it.
    pub fn fail_now(&self, mut msg: FluxMsg, reason: impl fmt::Display) {
        self.ctx.stats.add_error(1);
        if !self.close_failed_span(msg.id) {
            self.hop_span(&mut msg, "", now_ns(), true);
        }
        if let Some(j) = &self.ctx.journal
            && self.take_outstanding(msg.id)
        {
            let j = Arc::clone(j);
            let id = msg.id;
            tokio::spawn(async move {
                // The journal logs its own failures.
                let _ = j
                    .delivered(vec![Delivery {
                        id,
                        egress: None,
                        offset: None,
                    }])
                    .await;
            });
        }
        self.dead_letter(msg, DeadLetterReason::Failed, reason.to_string());
    }

    /// Removes a received message from the ones awaiting delivery; false
    /// when it was not there.
    fn take_outstanding(&self, id: FluxId) -> bool {
        let mut q = self.outstanding();
        q.iter()
            .position(|(i, _)| *i == id)
            .and_then(|at| q.remove(at))
            .is_some()
    }

    /// Whether this gear times the delivery of what it receives.
    fn traces_deliveries(&self) -> bool {
        self.ctx.tracer.is_some() && self.ctx.role != Role::Transform
    }

    /// The trace a message continues (its own, or a new one sampled by the
    /// tracer's ratio) and the parent span id (zero for a new trace).
    fn continue_trace(tracer: &Tracer, msg: &FluxMsg) -> (TraceContext, [u8; 8]) {
        if let Some(t) = msg.trace {
            return (t, t.span_id);
        }
        let trace_id = tracer.new_trace_id();
        let flags = if tracer.sampled(&trace_id) {
            SAMPLED
        } else {
            0
        };
        let t = TraceContext {
            trace_id,
            span_id: [0; 8],
            flags,
        };
        (t, [0; 8])
    }

    /// Records the hop of a message this gear emits (from the previous
    /// gear's emit to now) and makes the message's trace point at it.
    fn hop_span(&self, msg: &mut FluxMsg, port: &str, now: u64, error: bool) {
        let Some(tracer) = &self.ctx.tracer else {
            return;
        };
        let (mut trace, parent) = Self::continue_trace(tracer, msg);
        trace.span_id = tracer.new_span_id();
        let start_ns = hop_start(msg, now);
        msg.trace = Some(trace);
        let sampled = trace.flags & SAMPLED != 0;
        if sampled || error || tracer.is_slow(now - start_ns) {
            tracer.offer(SpanRecord {
                trace_id: trace.trace_id,
                span_id: trace.span_id,
                parent_span_id: parent,
                gear: Arc::clone(&self.ctx.gear),
                gear_type: self.ctx.gear_type,
                port: port.into(),
                msg_id: msg.id.get(),
                start_ns,
                end_ns: now,
                error,
            });
        }
    }

    fn open_spans(&self) -> std::sync::MutexGuard<'_, VecDeque<OpenSpan>> {
        self.open_spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A source or sink received a message: its delivery span starts (at
    /// the previous gear's emit) and the message's trace points at it, so
    /// what the gear sends on (an HTTP `traceparent`) names this span.
    fn open_span(&self, msg: &mut FluxMsg) {
        if !self.traces_deliveries() {
            return;
        }
        let Some(tracer) = &self.ctx.tracer else {
            return;
        };
        let (mut trace, parent) = Self::continue_trace(tracer, msg);
        trace.span_id = tracer.new_span_id();
        msg.trace = Some(trace);
        let start_ns = hop_start(msg, now_ns());
        let mut q = self.open_spans();
        if q.len() < MAX_OPEN_SPANS {
            q.push_back(OpenSpan {
                msg: msg.id,
                trace,
                parent,
                start_ns,
            });
        } else {
            tracer.count_dropped(1);
        }
    }

    /// The oldest `n` received messages were delivered: their spans end.
    fn close_spans(&self, n: usize) {
        if !self.traces_deliveries() {
            return;
        }
        let now = now_ns();
        let done: Vec<OpenSpan> = {
            let mut q = self.open_spans();
            let n = n.min(q.len());
            q.drain(..n).collect()
        };
        for s in done {
            self.record_open(s, now, false);
        }
    }

    /// A received message failed: its span ends as an error. False when
    /// it had no open span (a transform, or no tracer).
    fn close_failed_span(&self, id: FluxId) -> bool {
        if !self.traces_deliveries() {
            return false;
        }
        let found = {
            let mut q = self.open_spans();
            q.iter()
                .position(|s| s.msg == id)
                .and_then(|at| q.remove(at))
        };
        match found {
            Some(s) => {
                self.record_open(s, now_ns(), true);
                true
            }
            None => false,
        }
    }

    fn record_open(&self, s: OpenSpan, now: u64, error: bool) {
        let Some(tracer) = &self.ctx.tracer else {
            return;
        };
        let start_ns = s.start_ns.min(now);
        if s.trace.flags & SAMPLED != 0 || error || tracer.is_slow(now - start_ns) {
            tracer.offer(SpanRecord {
                trace_id: s.trace.trace_id,
                span_id: s.trace.span_id,
                parent_span_id: s.parent,
                gear: Arc::clone(&self.ctx.gear),
                gear_type: self.ctx.gear_type,
                port: compact_str::CompactString::const_new(""),
                msg_id: s.msg.get(),
                start_ns,
                end_ns: now,
                error,
            });
        }
    }

    fn dead_letter(&self, msg: FluxMsg, class: DeadLetterReason, reason: String) {
        self.ctx.stats.add_dead_letter(class);
        self.ctx.dead_letters.record(DeadLetter {
            gear: Arc::clone(&self.ctx.gear),
            reason,
            msg,
        });
    }
}
