//! The gear SDK.
//!
//! A **gear** is a processing unit of a Rack: a source, a transform or a
//! sink. Each gear type is one Rust type implementing [`GearKind`]: its
//! config type (serde + schemars, `deny_unknown_fields`), its ports, its
//! documentation and example, its validation and how to build a running
//! [`Gear`] from a config.
//!
//! The lifecycle is: **prepare** (deserialize and check the config: every
//! problem with its position, nothing started) → **build** (allocate
//! resources that can fail visibly before anything runs, e.g. bind a
//! listener) → **run** (until the inputs close or the gear is cancelled) →
//! **drain** (a transform or sink keeps taking messages until its inputs are
//! closed and empty; a source stops when cancelled) → **stop**.
//!
//! Messages move through [`GearIo`]: bounded lanes (back-pressure, never
//! unbounded memory), order kept per wire, fan-out copies to every wire of a
//! port, fan-in merges the wires of a port (taking from each in turn, so a
//! backlog on one wire does not starve the others). A message that fails goes to the
//! gear's `error` port when wired, else to the Rack's dead-letter log —
//! never silently dropped.

pub mod admission;
mod io;
pub mod journal;
mod kind;
mod lane;
pub mod reference;
mod stats;
pub mod testkit;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

pub use admission::{Admission, Gate};
pub use io::{
    DeadLetter, DeadLetters, GearIo, Input, IoParts, OutputPort, Outputs, PortRef, RunContext,
    now_ns,
};
pub use journal::{AtRest, Delivery, Durable, IDEMPOTENCY_META, Ingress, Journal, JournalError};
pub use kind::{
    BuildContext, CheckContext, ConfigIssue, GearKind, GearType, Prepared, Typed, issue_pos,
};
pub use lane::{Inbox, InboxAdder, Lane, LaneSet, Tap, WeakLane, WhenFull, lane};
pub use stats::{GearStats, StatsSnapshot};

/// A boxed, sendable future (gears are stored as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a gear does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Produces messages (has outputs, no input).
    Source,
    /// Takes messages in and emits messages (input, outputs, `error`).
    Transform,
    /// Delivers messages out of the Rack (input, optional `error`).
    Sink,
}

impl Role {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Transform => "transform",
            Role::Sink => "sink",
        }
    }
}

/// Direction of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortDir {
    /// Messages come in.
    In,
    /// Messages go out.
    Out,
}

/// A port a gear declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The port's name (`in`, `out`, `error`, or a route's declared name).
    pub name: Cow<'static, str>,
    /// Direction.
    pub dir: PortDir,
    /// A required port must be wired for the scenario to be valid.
    pub required: bool,
    /// One line of documentation.
    pub doc: Cow<'static, str>,
}

impl PortSpec {
    /// The input port `in` (required).
    pub fn input() -> PortSpec {
        PortSpec {
            name: "in".into(),
            dir: PortDir::In,
            required: true,
            doc: "messages to process".into(),
        }
    }

    /// The output port `out` (required).
    pub fn output() -> PortSpec {
        PortSpec {
            name: "out".into(),
            dir: PortDir::Out,
            required: true,
            doc: "messages produced".into(),
        }
    }

    /// The optional `error` output: failed messages with `error.reason` in
    /// their meta; when unwired they go to the dead-letter log.
    pub fn error() -> PortSpec {
        PortSpec {
            name: "error".into(),
            dir: PortDir::Out,
            required: false,
            doc: "messages that failed, with `error.reason` and `error.gear` in meta (dead-letter log when unwired)"
                .into(),
        }
    }

    /// A named required output.
    pub fn named_output(
        name: impl Into<Cow<'static, str>>,
        doc: impl Into<Cow<'static, str>>,
    ) -> PortSpec {
        PortSpec {
            name: name.into(),
            dir: PortDir::Out,
            required: true,
            doc: doc.into(),
        }
    }

    /// The default ports of a role.
    pub fn defaults(role: Role) -> Vec<PortSpec> {
        match role {
            Role::Source => vec![PortSpec::output()],
            Role::Transform => vec![PortSpec::input(), PortSpec::output(), PortSpec::error()],
            Role::Sink => vec![PortSpec::input(), PortSpec::error()],
        }
    }
}

/// Why a gear stopped with an error (it is restarted with backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GearError {
    /// An I/O failure (file, socket).
    #[error("{context}: {source}")]
    Io {
        /// What the gear was doing.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl GearError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> GearError {
        GearError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a gear could not be built (the Rack does not start).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// A running gear.
///
/// `run` returns when the gear is done: a source when it has nothing more to
/// produce or its context is cancelled; a transform or sink when its inputs
/// are closed and drained. Returning `Err` (or panicking) makes the Rack
/// restart the gear with backoff; `run` is then called again on a freshly
/// built instance, with the same lanes.
pub trait Gear: Send + 'static {
    /// Runs the gear on its lanes until done.
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>>;
}
