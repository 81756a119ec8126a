//! fluxID generation on the real clock, from several threads.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use fluxrig_msg::{FluxId, IdGenerator};

#[test]
fn two_threads_a_million_ids_each_never_collide() {
    let g = Arc::new(IdGenerator::new(77));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                (0..1_000_000)
                    .map(|_| g.next().unwrap())
                    .collect::<Vec<FluxId>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<FluxId>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for ids in &per_thread {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each thread's ids strictly increase"
        );
        assert!(ids.iter().all(|i| i.machine() == 77 && i.is_well_formed()));
    }
    let all: HashSet<FluxId> = per_thread.iter().flatten().copied().collect();
    assert_eq!(all.len(), 2_000_000, "no duplicates across threads");
}

#[test]
fn restart_with_state_file_continues_above_the_last_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.state");
    let mut last = FluxId::default();
    for _restart in 0..5 {
        let g = IdGenerator::with_state_file(3, &path).unwrap();
        let first = g.next().unwrap();
        assert!(first > last, "{first:?} after restart must exceed {last:?}");
        last = (0..50_000).map(|_| g.next().unwrap()).last().unwrap();
    }
}

#[test]
fn ids_track_the_wall_clock() {
    let g = IdGenerator::new(1);
    let id = g.next().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let diff = i128::try_from(now.as_millis()).unwrap() - i128::from(id.unix_ms());
    assert!(
        diff.abs() < 2_000,
        "id time is {diff} ms off the wall clock"
    );
}
