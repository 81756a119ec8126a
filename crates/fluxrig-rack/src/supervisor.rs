//! Runs one gear, restarting it with backoff when it fails or panics.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use fluxrig_gear::{BuildContext, Gear, GearIo, GearStats, OutputPort, Prepared};
use futures_util::FutureExt as _;
use tokio::time::Instant;

/// First wait before a restart; doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between restarts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A gear that ran this long before failing starts again from `FIRST_BACKOFF`.
const HEALTHY_RUN: Duration = Duration::from_mins(1);

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// What the supervisor needs to run a gear.
pub(crate) struct Supervised {
    pub(crate) gear: Box<dyn Gear>,
    pub(crate) io: GearIo,
    pub(crate) prepared: Arc<dyn Prepared>,
    pub(crate) build: BuildContext,
    pub(crate) outputs: Vec<OutputPort>,
    pub(crate) stats: Arc<GearStats>,
}

/// Runs the gear until it finishes (inputs drained, or a source done or
/// cancelled). On `Err` the same instance runs again after a backoff (its
/// state, e.g. a source's position, is kept); after a panic a fresh
/// instance is built. When it is done for good its output lanes are
/// released, so the gears downstream see their inputs close and drain.
pub(crate) async fn supervise(mut s: Supervised) {
    let name = Arc::clone(&s.build.gear);
    let mut backoff = FIRST_BACKOFF;
    let mut rebuild = false;
    loop {
        let started = Instant::now();
        if !rebuild {
            let outcome = AssertUnwindSafe(s.gear.run(&mut s.io)).catch_unwind().await;
            rebuild = match outcome {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::warn!(gear = %name, error = %e, "gear failed; restarting");
                    false
                }
                Err(p) => {
                    tracing::error!(gear = %name, panic = %panic_message(&*p), "gear panicked; restarting");
                    true
                }
            };
        }
        if s.io.is_cancelled() {
            break;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = s.io.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        s.stats.add_restart();
        if rebuild {
            match s.prepared.build(&s.build) {
                Ok(g) => {
                    s.gear = g;
                    rebuild = false;
                }
                Err(e) => {
                    tracing::error!(gear = %name, error = %e, "gear cannot be rebuilt; will retry");
                }
            }
        }
    }
    for port in &s.outputs {
        port.lanes.replace(Vec::new());
    }
    tracing::debug!(gear = %name, "gear finished");
}
