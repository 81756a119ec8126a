//! Admission control: a sink whose pending buffer is full and whose policy
//! is `reject` closes its [`Gate`]; the sources that feed it (directly or
//! through other gears) see the gate in their [`Admission`] and refuse new
//! messages at ingress — `http_in` answers 503 — instead of waiting for
//! room. Nothing already accepted is dropped: the full sink stops taking
//! input, so messages in flight wait in their lanes.
//!
//! Checking admission is one relaxed load per gate downstream; the Rack
//! computes which gates a source reaches when it wires (and re-wires on a
//! scenario swap).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The gate of one gear: closed while the gear refuses new work.
#[derive(Debug)]
pub struct Gate {
    gear: Arc<str>,
    closed: AtomicBool,
    /// Messages refused at ingress because this gate was closed.
    refused: AtomicU64,
}

impl Gate {
    /// An open gate for `gear`.
    pub fn new(gear: Arc<str>) -> Gate {
        Gate {
            gear,
            closed: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    /// The gear this gate belongs to.
    pub fn gear(&self) -> &str {
        &self.gear
    }

    /// Closes the gate; `true` when it was open.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Opens the gate; `true` when it was closed.
    pub fn open(&self) -> bool {
        self.closed.swap(false, Ordering::AcqRel)
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Messages refused at ingress because of this gate, since it was made.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The gates downstream of a source.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    gates: Arc<RwLock<Arc<[Arc<Gate>]>>>,
}

impl Admission {
    /// Admission through `gates`.
    pub fn new(gates: Vec<Arc<Gate>>) -> Admission {
        Admission {
            gates: Arc::new(RwLock::new(gates.into())),
        }
    }

    /// Replaces the gates (the Rack re-wired).
    pub fn set(&self, gates: Vec<Arc<Gate>>) {
        *self.gates.write().unwrap_or_else(PoisonError::into_inner) = gates.into();
    }

    /// `Ok` when a new message may enter; otherwise the name of a closed
    /// gate's gear (the refusal is counted on that gate).
    pub fn check(&self) -> Result<(), Arc<str>> {
        let gates = self.gates.read().unwrap_or_else(PoisonError::into_inner);
        match gates.iter().find(|g| g.is_closed()) {
            None => Ok(()),
            Some(g) => {
                g.refused.fetch_add(1, Ordering::Relaxed);
                Err(Arc::clone(&g.gear))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_downstream_refuses_and_counts() {
        let a = Arc::new(Gate::new("a".into()));
        let b = Arc::new(Gate::new("b".into()));
        let adm = Admission::new(vec![Arc::clone(&a), Arc::clone(&b)]);
        assert_eq!(adm.check(), Ok(()));
        assert!(b.close());
        assert!(!b.close(), "closing twice reports the first only");
        assert_eq!(adm.check().unwrap_err().as_ref(), "b");
        assert_eq!((a.refused(), b.refused()), (0, 1));
        assert!(b.open());
        assert!(!b.open());
        assert_eq!(adm.check(), Ok(()));
        // Re-wired away from `a`: its gate no longer matters.
        assert!(a.close());
        adm.set(vec![Arc::clone(&b)]);
        assert_eq!(adm.check(), Ok(()));
    }

    #[test]
    fn no_gates_always_admits() {
        assert_eq!(Admission::default().check(), Ok(()));
    }
}
