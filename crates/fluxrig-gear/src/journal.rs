//! The Rack's journal as a gear sees it: how a source's message is recorded
//! before it enters the Rack, and how a sink records what it has delivered.
//!
//! The Rack implements [`Journal`] over its write-ahead log, one instance per
//! gear; a gear never talks to it directly but through [`crate::GearIo`]:
//! [`GearIo::ingest`](crate::GearIo::ingest) (sources),
//! [`GearIo::delivered`](crate::GearIo::delivered) and
//! [`GearIo::delivered_at`](crate::GearIo::delivered_at) (sinks). Without a
//! journal (tests, the test kit) those calls only count.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fluxrig_msg::{FluxId, FluxMsg};

use crate::BoxFuture;

/// Meta key of an idempotency key: a source that sets it (e.g. `http_in`
/// from the `Idempotency-Key` header) gets the fluxID of the first message
/// recorded with the same key instead of a new message, across restarts.
pub const IDEMPOTENCY_META: &str = "idempotency.key";

/// Why the journal could not record something. The Rack's WAL is then
/// poisoned or closed: nothing more is acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("write-ahead log: {0}")]
pub struct JournalError(pub String);

/// A recorded ingress that may not be durable yet. Await it before
/// acknowledging the message to whoever sent it.
#[must_use = "await it before acknowledging the message"]
pub struct Durable(BoxFuture<'static, Result<(), JournalError>>);

impl Durable {
    /// Wraps the future that resolves once the record is durable.
    pub fn new(f: impl Future<Output = Result<(), JournalError>> + Send + 'static) -> Durable {
        Durable(Box::pin(f))
    }

    /// Already durable (or nothing to wait for: no journal).
    pub fn ready() -> Durable {
        Durable(Box::pin(std::future::ready(Ok(()))))
    }
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Durable")
    }
}

impl Future for Durable {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// What [`Journal::ingress`] decided.
#[derive(Debug)]
pub enum Ingress {
    /// The message is recorded (queued with its place in the log): hand it
    /// to the wires, acknowledge it once `Durable` resolves.
    Recorded(Durable),
    /// A message with the same idempotency key was recorded before, with
    /// this fluxID: do not emit it again; acknowledge once `Durable`
    /// resolves.
    Duplicate(FluxId, Durable),
}

/// A message a sink has delivered out of the Rack.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its fluxID.
    pub id: FluxId,
    /// What [`Journal::received`] prepared for it (the egress record).
    pub egress: Option<Bytes>,
    /// Where the sink's output ends after it (a file's length), when the
    /// sink has such a position: recorded so that after a crash the sink
    /// can cut off what was written but not recorded.
    pub offset: Option<u64>,
}

/// The Rack's record of messages entering and leaving, for one gear.
pub trait Journal: Send + Sync + fmt::Debug {
    /// Records a message entering the Rack on `port` of this (source) gear,
    /// before it is handed to the wires. Returns at once with the record
    /// queued (many appends share one sync: group commit), or waits only
    /// while the log's queue is full.
    fn ingress<'a>(
        &'a self,
        port: &'a str,
        msg: &'a FluxMsg,
    ) -> BoxFuture<'a, Result<Ingress, JournalError>>;

    /// Called when this (sink) gear receives a message: `None` when the
    /// sink already completed it before a restart (it is being replayed to
    /// the sinks that had not), so the sink skips it; otherwise what to
    /// keep until it is delivered.
    fn received(&self, msg: &FluxMsg) -> Option<Option<Bytes>>;

    /// Records messages this (sink) gear delivered, in order, and waits
    /// until the records are durable.
    fn delivered(&self, done: Vec<Delivery>) -> BoxFuture<'_, Result<(), JournalError>>;

    /// The output position recorded with this sink's last delivery (for
    /// `file_out`: the file length to cut back to after a crash).
    fn committed_offset(&self) -> Option<u64>;

    /// Whether a sink should make its own output durable (e.g. `fdatasync`
    /// a file) before recording a delivery: true under the `always` sync
    /// policy.
    fn sync_output(&self) -> bool;
}

/// What makes a message safe to keep at rest: the Rack passes every message
/// it writes to disk — write-ahead log records (and so the audit archive)
/// and dead letters — through it. The coat check's implementation encrypts
/// the raw frames of card traffic under the vault key and masks classified
/// fields (`docs/adr/0005-coat-check.md`).
pub trait AtRest: Send + Sync + fmt::Debug {
    /// The form of `msg` that may be written to disk; `None` when `msg`
    /// may be written as it is.
    fn protect(&self, msg: &FluxMsg) -> Option<FluxMsg>;

    /// A message read back from disk (to be replayed), made usable again
    /// where it can be (sealed raw bytes decrypted).
    fn recover(&self, msg: FluxMsg) -> FluxMsg;
}
