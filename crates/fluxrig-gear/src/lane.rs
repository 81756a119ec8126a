//! Lanes: the bounded queues that carry messages along wires.
//!
//! Every wire is one bounded `tokio::sync::mpsc` channel, so order is kept
//! per wire and a slow consumer pushes back on its producer instead of
//! growing memory. An output port holds the senders of its wires in a
//! [`LaneSet`] the Rack can swap atomically (live scenario swap); an input
//! port merges the receivers of its wires in an [`Inbox`], polling them in
//! turn so no wire starves another.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use arc_swap::ArcSwap;
use fluxrig_msg::FluxMsg;
use tokio::sync::mpsc;

/// What a lane does when it is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WhenFull {
    /// Wait for room: back-pressure reaches the producer (default).
    #[default]
    Block,
    /// Drop the new message and count it (for telemetry-like flows only).
    DropNewest,
}

/// The sending end of one wire.
#[derive(Debug, Clone)]
pub struct Lane {
    tx: mpsc::Sender<FluxMsg>,
    when_full: WhenFull,
    label: Arc<str>,
    dropped: Arc<AtomicU64>,
}

/// A new wire: its sending end and the receiver to hand to an [`Inbox`].
pub fn lane(
    capacity: usize,
    when_full: WhenFull,
    label: impl Into<Arc<str>>,
) -> (Lane, mpsc::Receiver<FluxMsg>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Lane {
            tx,
            when_full,
            label: label.into(),
            dropped: Arc::new(AtomicU64::new(0)),
        },
        rx,
    )
}

impl Lane {
    /// Sends a message along the wire. `Err` gives the message back when the
    /// receiving gear is gone for good.
    pub async fn send(&self, msg: FluxMsg) -> Result<(), FluxMsg> {
        match self.when_full {
            WhenFull::Block => self.tx.send(msg).await.map_err(|e| e.0),
            WhenFull::DropNewest => match self.tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(m)) => Err(m),
            },
        }
    }

    /// The wire's label (`gear.port -> gear.port`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Messages dropped because the lane was full (`DropNewest` only).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting in the lane.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The lane's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// A lane the Rack remembers without keeping it open: when every gear
/// holding its sending end is gone, the receiver sees the wire close.
#[derive(Debug, Clone)]
pub struct WeakLane {
    tx: mpsc::WeakSender<FluxMsg>,
    when_full: WhenFull,
    label: Arc<str>,
    dropped: Arc<AtomicU64>,
}

impl WeakLane {
    /// The wire's label (`gear.port -> gear.port`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Messages dropped because the lane was full (`DropNewest` only).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting and the capacity; `None` once the lane is closed.
    pub fn fill(&self) -> Option<(usize, usize)> {
        let tx = self.tx.upgrade()?;
        Some((tx.max_capacity() - tx.capacity(), tx.max_capacity()))
    }

    /// The lane again, if some gear still holds it open.
    pub fn upgrade(&self) -> Option<Lane> {
        Some(Lane {
            tx: self.tx.upgrade()?,
            when_full: self.when_full,
            label: Arc::clone(&self.label),
            dropped: Arc::clone(&self.dropped),
        })
    }
}

impl Lane {
    /// A handle that does not keep the lane open.
    pub fn downgrade(&self) -> WeakLane {
        WeakLane {
            tx: self.tx.downgrade(),
            when_full: self.when_full,
            label: Arc::clone(&self.label),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

/// The wires of one output port; replaced atomically when the scenario changes.
#[derive(Debug, Default)]
pub struct LaneSet {
    lanes: ArcSwap<Vec<Lane>>,
    tap: Tap,
    /// Messages emitted on the port.
    emitted: std::sync::atomic::AtomicU64,
}

impl LaneSet {
    /// A set of lanes.
    pub fn new(lanes: Vec<Lane>) -> LaneSet {
        LaneSet {
            lanes: ArcSwap::from_pointee(lanes),
            tap: Tap::default(),
            emitted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts a message emitted on the port.
    pub fn count_emit(&self) {
        self.emitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Messages emitted on the port so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current lanes. A sender that has loaded a set keeps delivering to
    /// it even if the set is replaced meanwhile.
    pub fn load(&self) -> Arc<Vec<Lane>> {
        self.lanes.load_full()
    }

    /// Points the port at new lanes (one atomic store).
    pub fn replace(&self, lanes: Vec<Lane>) {
        self.lanes.store(Arc::new(lanes));
    }

    /// The port's tap (`fluxrig tail`).
    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

/// Copies of the messages emitted on a port, for observers (`fluxrig tail`).
///
/// Off the hot path: with nobody subscribed an emit costs one relaxed load;
/// with subscribers each gets a copy through a bounded channel, and a copy
/// that does not fit is dropped and counted — the gear never waits.
#[derive(Debug, Default)]
pub struct Tap {
    active: AtomicBool,
    subscribers: Mutex<Vec<mpsc::Sender<FluxMsg>>>,
    dropped: AtomicU64,
}

impl Tap {
    /// Subscribes: copies of the next messages arrive on the receiver
    /// (`capacity` of them may wait; more are dropped). Dropping the
    /// receiver unsubscribes.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<FluxMsg> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subs.push(tx);
        self.active.store(true, Ordering::Relaxed);
        rx
    }

    /// Offers a copy of an emitted message to the subscribers, if any.
    #[inline]
    pub fn offer(&self, msg: &FluxMsg) {
        if self.active.load(Ordering::Relaxed) {
            self.offer_slow(msg);
        }
    }

    #[cold]
    fn offer_slow(&self, msg: &FluxMsg) {
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subs.retain(|tx| match tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subs.is_empty() {
            self.active.store(false, Ordering::Relaxed);
        }
    }

    /// Copies dropped because a subscriber was too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Receivers added by the Rack while the gear runs (live swap).
#[derive(Debug, Default)]
struct Incoming {
    pending: Mutex<Vec<mpsc::Receiver<FluxMsg>>>,
    flag: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// The merged input of a gear: the receivers of every wire into its `in`
/// port.
///
/// `recv` returns `None` once every wire is closed and empty — the drain is
/// complete. The Rack adds a new wire's receiver *before* it closes an old
/// one, so a live swap never looks like the end of input.
#[derive(Debug)]
pub struct Inbox {
    rx: Vec<mpsc::Receiver<FluxMsg>>,
    next: usize,
    incoming: Arc<Incoming>,
}

/// A handle the Rack keeps to add wires to a running gear's inbox.
#[derive(Debug, Clone)]
pub struct InboxAdder(Arc<Incoming>);

impl InboxAdder {
    /// Adds a wire's receiver; the inbox starts polling it on its next turn.
    pub fn add(&self, rx: mpsc::Receiver<FluxMsg>) {
        self.0
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(rx);
        self.0.flag.store(true, Ordering::Release);
        if let Some(w) = self
            .0
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            w.wake();
        }
    }
}

impl Inbox {
    /// An inbox over the given receivers.
    pub fn new(rx: Vec<mpsc::Receiver<FluxMsg>>) -> Inbox {
        Inbox {
            rx,
            next: 0,
            incoming: Arc::default(),
        }
    }

    /// A handle to add receivers later.
    pub fn adder(&self) -> InboxAdder {
        InboxAdder(Arc::clone(&self.incoming))
    }

    fn take_incoming(&mut self) {
        if self.incoming.flag.swap(false, Ordering::AcqRel) {
            let mut pending = self
                .incoming
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.rx.append(&mut pending);
        }
    }

    /// The next message from any wire, or `None` when all are closed and drained.
    pub async fn recv(&mut self) -> Option<FluxMsg> {
        poll_fn(|cx| {
            loop {
                self.take_incoming();
                let n = self.rx.len();
                let mut closed = false;
                for i in 0..n {
                    let idx = (self.next + i) % n;
                    match self.rx[idx].poll_recv(cx) {
                        Poll::Ready(Some(m)) => {
                            self.next = (idx + 1) % n;
                            return Poll::Ready(Some(m));
                        }
                        Poll::Ready(None) => closed = true,
                        Poll::Pending => {}
                    }
                }
                if closed {
                    self.rx.retain(|r| !(r.is_closed() && r.is_empty()));
                    self.next = 0;
                }
                if !self.rx.is_empty() || self.incoming.flag.load(Ordering::Acquire) {
                    if closed {
                        continue; // poll the survivors again, with the waker registered
                    }
                    *self
                        .incoming
                        .waker
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(cx.waker().clone());
                    // A receiver added between the check above and storing the
                    // waker would not wake us: look once more.
                    if self.incoming.flag.load(Ordering::Acquire) {
                        continue;
                    }
                    return Poll::Pending;
                }
                return Poll::Ready(None);
            }
        })
        .await
    }

    /// Takes up to `max` ready messages without waiting (after a `recv`
    /// that returned one), so a gear can work in batches. The wires take
    /// turns, one message each, from where `recv` left off: a wire with a
    /// backlog (new requests) does not starve the others (replies to
    /// requests already forwarded).
    pub fn try_recv_many(&mut self, out: &mut Vec<FluxMsg>, max: usize) -> usize {
        let start = out.len();
        let n = self.rx.len();
        // Wires found empty in a row: a whole round of them ends the batch.
        let mut empty = 0;
        let mut i = self.next;
        while n > 0 && empty < n && out.len() - start < max {
            i %= n;
            match self.rx[i].try_recv() {
                Ok(m) => {
                    out.push(m);
                    empty = 0;
                }
                Err(_) => empty += 1,
            }
            i += 1;
        }
        if n > 0 {
            self.next = i % n;
        }
        out.len() - start
    }

    /// Number of wires still open.
    pub fn open_wires(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_msg::{FluxId, Value};

    fn msg(i: u64) -> FluxMsg {
        FluxMsg::new(FluxId::from_raw(i), Value::from(i))
    }

    #[tokio::test]
    async fn a_batch_takes_from_every_wire_in_turn() {
        let (a, ra) = lane(256, WhenFull::Block, "requests");
        let (b, rb) = lane(256, WhenFull::Block, "replies");
        for i in 0..200 {
            a.send(msg(i)).await.unwrap();
        }
        for i in 1000..1010 {
            b.send(msg(i)).await.unwrap();
        }
        let mut inbox = Inbox::new(vec![ra, rb]);
        let mut batch = vec![inbox.recv().await.unwrap()];
        inbox.try_recv_many(&mut batch, 63);
        let ids: Vec<u64> = batch.iter().map(|m| m.id.get()).collect();
        assert_eq!(ids.len(), 64);
        // All ten replies are in the first batch, alternating with
        // requests, each wire in its own order.
        assert_eq!(&ids[..4], &[0, 1000, 1, 1001]);
        let replies: Vec<u64> = ids.iter().copied().filter(|i| *i >= 1000).collect();
        assert_eq!(replies, (1000..1010).collect::<Vec<_>>());
        let requests: Vec<u64> = ids.iter().copied().filter(|i| *i < 1000).collect();
        assert_eq!(requests, (0..54).collect::<Vec<_>>());
        // The next batch goes on with the requests alone.
        let mut more = Vec::new();
        assert_eq!(inbox.try_recv_many(&mut more, 1000), 146);
        assert_eq!(more.first().map(|m| m.id.get()), Some(54));
    }

    #[tokio::test]
    async fn merges_wires_keeping_order_per_wire_and_ends_when_all_close() {
        let (a, ra) = lane(4, WhenFull::Block, "a");
        let (b, rb) = lane(4, WhenFull::Block, "b");
        let mut inbox = Inbox::new(vec![ra, rb]);
        let prod_a = tokio::spawn(async move {
            for i in 0..50 {
                a.send(msg(i)).await.unwrap();
            }
        });
        let prod_b = tokio::spawn(async move {
            for i in 100..150 {
                b.send(msg(i)).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(m) = inbox.recv().await {
            got.push(m.id.get());
        }
        prod_a.await.unwrap();
        prod_b.await.unwrap();
        let from_a: Vec<_> = got.iter().copied().filter(|i| *i < 100).collect();
        let from_b: Vec<_> = got.iter().copied().filter(|i| *i >= 100).collect();
        assert_eq!(from_a, (0..50).collect::<Vec<_>>());
        assert_eq!(from_b, (100..150).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn added_wire_keeps_inbox_open_across_a_swap() {
        let (old, rx_old) = lane(4, WhenFull::Block, "old");
        let mut inbox = Inbox::new(vec![rx_old]);
        let adder = inbox.adder();
        old.send(msg(1)).await.unwrap();
        let (new, rx_new) = lane(4, WhenFull::Block, "new");
        adder.add(rx_new); // added before the old wire closes
        drop(old);
        assert_eq!(inbox.recv().await.unwrap().id.get(), 1);
        new.send(msg(2)).await.unwrap();
        assert_eq!(inbox.recv().await.unwrap().id.get(), 2);
        drop(new);
        assert!(inbox.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_inbox_wakes_when_a_wire_is_added() {
        let (keep, rx) = lane(1, WhenFull::Block, "keep");
        let mut inbox = Inbox::new(vec![rx]);
        let adder = inbox.adder();
        let task = tokio::spawn(async move { inbox.recv().await.map(|m| m.id.get()) });
        tokio::task::yield_now().await;
        let (late, rx_late) = lane(1, WhenFull::Block, "late");
        adder.add(rx_late);
        late.send(msg(9)).await.unwrap();
        assert_eq!(task.await.unwrap(), Some(9));
        drop(keep);
    }

    #[tokio::test]
    async fn drop_newest_counts_instead_of_blocking() {
        let (l, _rx) = lane(2, WhenFull::DropNewest, "x");
        for i in 0..5 {
            l.send(msg(i)).await.unwrap();
        }
        assert_eq!(l.dropped(), 3);
        assert_eq!(l.depth(), 2);
    }

    #[tokio::test]
    async fn send_to_a_gone_receiver_gives_the_message_back() {
        let (l, rx) = lane(2, WhenFull::Block, "x");
        drop(rx);
        assert_eq!(l.send(msg(7)).await.unwrap_err().id.get(), 7);
    }
}
