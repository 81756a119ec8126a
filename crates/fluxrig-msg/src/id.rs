//! fluxID and fluxEntityID.
//!
//! A **fluxID** is a 64-bit, k-sortable message id:
//!
//! ```text
//! bit 63 | 62 ........ 24 | 23 ..... 16 | 15 ........ 0
//!    0   | tick (39 bits) | seq (8 bits)| machine (16)
//! ```
//!
//! A tick is [`TICK_MS`] = 2 ms counted from [`EPOCH_UNIX_MS`]
//! (2026-01-01T00:00:00Z). 256 ids per tick give one generator a capacity of
//! 128,000 ids/s; 2^39 ticks of 2 ms last 34.8 years (until 2060-11).
//! `docs/adr/0001-fluxid.md` argues the choice.
//!
//! A generator never issues the same id twice: the tick and sequence form one
//! counter that only grows (compare-and-swap); when a tick's 256 ids are used
//! up it borrows future ticks, at most [`IdGenerator::MAX_BORROW_TICKS`] ahead
//! of the clock, and then waits for the clock. A clock that steps back is the
//! same case: the counter stays where it was and the generator waits rather
//! than reuse. Given a state file, it persists a high-water mark ahead of the
//! ids it hands out, so a restarted process continues above every id issued
//! before.
//!
//! A **fluxEntityID** names a component: `[type 8][machine 16][sequence 40]`.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Start of fluxID time: 2026-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_UNIX_MS: u64 = 1_767_225_600_000;
/// Length of one fluxID tick in milliseconds.
pub const TICK_MS: u64 = 2;

const TICK_BITS: u32 = 39;
const SEQ_BITS: u32 = 8;
const MACHINE_BITS: u32 = 16;
/// The tick and sequence together: the generator's counter.
const COUNTER_MAX: u64 = (1 << (TICK_BITS + SEQ_BITS)) - 1;

/// A fluxID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FluxId(u64);

impl FluxId {
    /// Wraps a raw 64-bit value (no check: any u64 read from a peer is kept).
    pub const fn from_raw(raw: u64) -> FluxId {
        FluxId(raw)
    }

    /// Builds an id from its parts; `None` when the tick needs more than 39 bits.
    pub fn from_parts(tick: u64, sequence: u8, machine: u16) -> Option<FluxId> {
        (tick < 1 << TICK_BITS).then(|| {
            FluxId(
                tick << (SEQ_BITS + MACHINE_BITS)
                    | u64::from(sequence) << MACHINE_BITS
                    | u64::from(machine),
            )
        })
    }

    /// The raw 64-bit value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Ticks of [`TICK_MS`] since [`EPOCH_UNIX_MS`].
    pub fn tick(self) -> u64 {
        (self.0 >> (SEQ_BITS + MACHINE_BITS)) & ((1 << TICK_BITS) - 1)
    }

    /// The sequence number within the tick.
    pub fn sequence(self) -> u8 {
        // Masked to 8 bits.
        #[allow(clippy::cast_possible_truncation)]
        let s = (self.0 >> MACHINE_BITS) as u8;
        s
    }

    /// The machine id of the generator.
    pub fn machine(self) -> u16 {
        // Masked to 16 bits.
        #[allow(clippy::cast_possible_truncation)]
        let m = self.0 as u16;
        m
    }

    /// True when bit 63 (reserved, always 0 for ids we issue) is clear.
    pub fn is_well_formed(self) -> bool {
        self.0 >> 63 == 0
    }

    /// Unix milliseconds of the id's tick.
    pub fn unix_ms(self) -> u64 {
        EPOCH_UNIX_MS + self.tick() * TICK_MS
    }

    /// The id's time.
    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms())
    }
}

impl fmt::Display for FluxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for FluxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FluxId({}:{}:{})",
            self.tick(),
            self.sequence(),
            self.machine()
        )
    }
}

/// Kinds of component a fluxEntityID names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum EntityType {
    /// An edge node.
    Rack,
    /// A processing unit.
    Gear,
    /// A gear's input or output.
    Port,
    /// A path between two ports.
    Wire,
    /// A scenario.
    Scenario,
    /// A protocol spec.
    Spec,
    /// A connection or session (e.g. a terminal's TCP connection).
    Session,
}

impl EntityType {
    const ALL: [EntityType; 7] = [
        EntityType::Rack,
        EntityType::Gear,
        EntityType::Port,
        EntityType::Wire,
        EntityType::Scenario,
        EntityType::Spec,
        EntityType::Session,
    ];

    /// The type's code in the id's top byte.
    pub fn code(self) -> u8 {
        match self {
            EntityType::Rack => 1,
            EntityType::Gear => 2,
            EntityType::Port => 3,
            EntityType::Wire => 4,
            EntityType::Scenario => 5,
            EntityType::Spec => 6,
            EntityType::Session => 7,
        }
    }

    /// The type with the given code.
    pub fn from_code(code: u8) -> Option<EntityType> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Lowercase name (`rack`, `gear`, …).
    pub fn name(self) -> &'static str {
        match self {
            EntityType::Rack => "rack",
            EntityType::Gear => "gear",
            EntityType::Port => "port",
            EntityType::Wire => "wire",
            EntityType::Scenario => "scenario",
            EntityType::Spec => "spec",
            EntityType::Session => "session",
        }
    }
}

/// A fluxEntityID: `[type 8][machine 16][sequence 40]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntityId(u64);

impl EntityId {
    /// Largest sequence number (40 bits).
    pub const MAX_SEQUENCE: u64 = (1 << 40) - 1;

    /// Wraps a raw value.
    pub const fn from_raw(raw: u64) -> EntityId {
        EntityId(raw)
    }

    /// Builds an id; `None` when `sequence` needs more than 40 bits.
    pub fn new(kind: EntityType, machine: u16, sequence: u64) -> Option<EntityId> {
        (sequence <= Self::MAX_SEQUENCE)
            .then(|| EntityId(u64::from(kind.code()) << 56 | u64::from(machine) << 40 | sequence))
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The type code (top byte).
    pub fn type_code(self) -> u8 {
        self.0.to_be_bytes()[0]
    }

    /// The type, when the code is known.
    pub fn kind(self) -> Option<EntityType> {
        EntityType::from_code(self.type_code())
    }

    /// The machine id.
    pub fn machine(self) -> u16 {
        u16::from_be_bytes([self.0.to_be_bytes()[1], self.0.to_be_bytes()[2]])
    }

    /// The sequence number.
    pub fn sequence(self) -> u64 {
        self.0 & Self::MAX_SEQUENCE
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind().map_or("?", EntityType::name);
        write!(f, "EntityId({kind}:{}:{})", self.machine(), self.sequence())
    }
}

/// A source of time for an [`IdGenerator`], in Unix milliseconds.
pub trait Clock: Send + Sync {
    /// The current time in Unix milliseconds. It may step back; the
    /// generator copes.
    fn now_unix_ms(&self) -> u64;

    /// Waits about `ms` milliseconds (the generator is ahead of the clock).
    fn wait_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Wall-clock time that never steps back within the process.
///
/// It reads the wall clock once, then advances with the monotonic clock.
/// On Linux it reads the coarse monotonic clock (about 9 ns a read here
/// instead of 35 ns; resolution a few ms, well inside what a k-sortable id
/// needs); elsewhere `Instant`.
#[derive(Debug)]
pub struct SystemClock {
    anchor_unix_ms: u64,
    anchor_mono_ms: u64,
}

impl SystemClock {
    /// A clock anchored to the wall clock now.
    pub fn new() -> SystemClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SystemClock {
            anchor_unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
            anchor_mono_ms: mono_ms(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_unix_ms(&self) -> u64 {
        self.anchor_unix_ms + (mono_ms() - self.anchor_mono_ms)
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn mono_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000
}

#[cfg(not(target_os = "linux"))]
fn mono_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Why an id could not be issued or the generator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The generator is ahead of the clock by more than it may borrow.
    #[error("id generator is {ahead_ms} ms ahead of the clock; waiting is required")]
    WouldBlock {
        /// How far ahead, in milliseconds.
        ahead_ms: u64,
    },
    /// The 39-bit tick space is used up (year 2060).
    #[error("fluxID time space exhausted")]
    Exhausted,
    /// The clock is before the fluxID epoch.
    #[error("clock reads before the fluxID epoch (2026-01-01T00:00:00Z)")]
    BeforeEpoch,
    /// The clock is far behind the persisted high-water mark.
    #[error(
        "clock is {behind_ms} ms behind the id high-water mark in {path}; fix the clock or wait"
    )]
    ClockBehind {
        /// How far behind, in milliseconds.
        behind_ms: u64,
        /// The state file.
        path: PathBuf,
    },
    /// The state file could not be read or written.
    #[error("id state file {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The state file does not hold a high-water mark.
    #[error("id state file {path} is corrupt: {reason}")]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// An earlier write of the state file failed; the generator stays stopped.
    #[error("id generator stopped after a state file failure")]
    Poisoned,
}

struct StateFile {
    path: PathBuf,
    /// Set after a failed write: nothing more is issued (habit 10).
    poisoned: bool,
}

/// A thread-safe fluxID generator for one machine id.
///
/// Use one generator per machine id per process (the Rack owns one); two
/// generators with the same machine id would issue the same ids.
pub struct IdGenerator<C: Clock = SystemClock> {
    machine: u16,
    clock: C,
    /// Last counter value (tick << 8 | sequence) handed out.
    last: AtomicU64,
    /// Counter value up to which the state file vouches (`u64::MAX` without one).
    reserved: AtomicU64,
    state: Option<Mutex<StateFile>>,
}

impl<C: Clock> fmt::Debug for IdGenerator<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdGenerator")
            .field("machine", &self.machine)
            .field(
                "last",
                &FluxId(self.last.load(Ordering::Relaxed) << MACHINE_BITS),
            )
            .finish_non_exhaustive()
    }
}

/// How a restarted generator treats a high-water mark ahead of its clock.
const MAX_STARTUP_WAIT_MS: u64 = 10_000;

impl IdGenerator<SystemClock> {
    /// A generator on the system clock, without persistence.
    pub fn new(machine: u16) -> IdGenerator<SystemClock> {
        IdGenerator::with_clock(machine, SystemClock::new())
    }

    /// A generator on the system clock that persists its high-water mark in
    /// `path` (created if missing) and continues above it.
    pub fn with_state_file(machine: u16, path: impl AsRef<Path>) -> Result<Self, IdError> {
        IdGenerator::with_clock_and_state(machine, SystemClock::new(), path)
    }
}

impl<C: Clock> IdGenerator<C> {
    /// How far (in ticks, 2 ms each) ids may run ahead of the clock when a
    /// tick's sequence is used up: 512 ticks, about one second.
    pub const MAX_BORROW_TICKS: u64 = 512;
    /// How far ahead of the issued ids the state file's mark is set: one
    /// write per ~second of ids at full rate.
    const RESERVE: u64 = Self::MAX_BORROW_TICKS << SEQ_BITS;

    /// A generator on the given clock, without persistence.
    pub fn with_clock(machine: u16, clock: C) -> Self {
        IdGenerator {
            machine,
            clock,
            last: AtomicU64::new(0),
            reserved: AtomicU64::new(u64::MAX),
            state: None,
        }
    }

    /// A generator on the given clock, persisting to `path`.
    pub fn with_clock_and_state(
        machine: u16,
        clock: C,
        path: impl AsRef<Path>,
    ) -> Result<Self, IdError> {
        let path = path.as_ref().to_path_buf();
        let mark = read_state(&path)?;
        let g = IdGenerator {
            machine,
            clock,
            last: AtomicU64::new(mark),
            reserved: AtomicU64::new(mark),
            state: Some(Mutex::new(StateFile {
                path: path.clone(),
                poisoned: false,
            })),
        };
        let now = g.now_tick()?;
        let mark_tick = mark >> SEQ_BITS;
        if mark_tick > now + Self::MAX_BORROW_TICKS + MAX_STARTUP_WAIT_MS / TICK_MS {
            return Err(IdError::ClockBehind {
                behind_ms: (mark_tick - now) * TICK_MS,
                path,
            });
        }
        Ok(g)
    }

    /// The generator's machine id.
    pub fn machine(&self) -> u16 {
        self.machine
    }

    #[inline]
    fn now_tick(&self) -> Result<u64, IdError> {
        let ms = self.clock.now_unix_ms();
        ms.checked_sub(EPOCH_UNIX_MS)
            .map(|d| d / TICK_MS)
            .ok_or(IdError::BeforeEpoch)
    }

    /// The next id, or [`IdError::WouldBlock`] when the generator would have
    /// to wait for the clock.
    #[inline]
    pub fn try_next(&self) -> Result<FluxId, IdError> {
        let now = self.now_tick()?;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = (now << SEQ_BITS).max(last + 1);
            let tick = candidate >> SEQ_BITS;
            if candidate > COUNTER_MAX {
                return Err(IdError::Exhausted);
            }
            if tick > now + Self::MAX_BORROW_TICKS {
                return Err(IdError::WouldBlock {
                    ahead_ms: (tick - now - Self::MAX_BORROW_TICKS) * TICK_MS,
                });
            }
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if candidate > self.reserved.load(Ordering::Acquire) {
                        self.reserve(candidate)?;
                    }
                    return Ok(FluxId(candidate << MACHINE_BITS | u64::from(self.machine)));
                }
                Err(actual) => last = actual,
            }
        }
    }

    /// The next id, waiting for the clock when the generator is ahead of it.
    pub fn next(&self) -> Result<FluxId, IdError> {
        loop {
            match self.try_next() {
                Err(IdError::WouldBlock { ahead_ms }) => self.clock.wait_ms(ahead_ms.max(1)),
                other => return other,
            }
        }
    }

    /// Persists a mark above `counter` before the id is handed out, so that
    /// a crash right after cannot lead to its reuse.
    #[cold]
    fn reserve(&self, counter: u64) -> Result<(), IdError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let mut state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.poisoned {
            return Err(IdError::Poisoned);
        }
        if counter <= self.reserved.load(Ordering::Acquire) {
            return Ok(()); // another thread reserved past us meanwhile
        }
        let mark = counter.saturating_add(Self::RESERVE).min(COUNTER_MAX);
        if let Err(source) = write_state(&state.path, mark) {
            state.poisoned = true;
            return Err(IdError::State {
                path: state.path.clone(),
                source,
            });
        }
        self.reserved.store(mark, Ordering::Release);
        Ok(())
    }
}

const STATE_MAGIC: &str = "fluxrig-id-hwm v1 ";

fn read_state(path: &Path) -> Result<u64, IdError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let corrupt = |reason| IdError::CorruptState {
                path: path.to_path_buf(),
                reason,
            };
            let rest = s
                .trim_end()
                .strip_prefix(STATE_MAGIC)
                .ok_or(corrupt("missing header"))?;
            let mark: u64 = rest.parse().map_err(|_| corrupt("bad high-water mark"))?;
            if mark > COUNTER_MAX {
                return Err(corrupt("high-water mark out of range"));
            }
            Ok(mark)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(IdError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the mark durably: temp file, fsync, rename, fsync of the directory.
fn write_state(path: &Path, mark: u64) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{STATE_MAGIC}{mark}")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A clock the test moves by hand; waiting advances it.
    #[derive(Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn at(ms: u64) -> Self {
            ManualClock(AtomicU64::new(ms))
        }
        fn set(&self, ms: u64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_unix_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn wait_ms(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    const T0: u64 = EPOCH_UNIX_MS + 1_000_000;

    #[test]
    fn layout_round_trips() {
        let id = FluxId::from_parts(12_345, 7, 42).unwrap();
        assert_eq!((id.tick(), id.sequence(), id.machine()), (12_345, 7, 42));
        assert!(id.is_well_formed());
        assert!(FluxId::from_parts(1 << 39, 0, 0).is_none());
        assert_eq!(
            FluxId::from_parts((1 << 39) - 1, 255, 65535).unwrap().get(),
            u64::MAX >> 1
        );
    }

    #[test]
    fn entity_layout_round_trips() {
        let e = EntityId::new(EntityType::Gear, 513, 99).unwrap();
        assert_eq!(e.kind(), Some(EntityType::Gear));
        assert_eq!(e.machine(), 513);
        assert_eq!(e.sequence(), 99);
        assert!(EntityId::new(EntityType::Rack, 0, 1 << 40).is_none());
    }

    #[test]
    fn ids_within_a_tick_count_up_then_borrow() {
        let g = IdGenerator::with_clock(3, ManualClock::at(T0));
        let ids: Vec<_> = (0..300).map(|_| g.try_next().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let tick0 = ids[0].tick();
        assert_eq!(ids[255].tick(), tick0);
        assert_eq!(ids[256].tick(), tick0 + 1, "borrowed the next tick");
        assert!(ids.iter().all(|i| i.machine() == 3));
    }

    #[test]
    fn borrowing_is_bounded() {
        let g = IdGenerator::with_clock(0, ManualClock::at(T0));
        let limit = (IdGenerator::<ManualClock>::MAX_BORROW_TICKS + 1) << SEQ_BITS;
        for _ in 0..limit {
            g.try_next().unwrap();
        }
        assert!(matches!(g.try_next(), Err(IdError::WouldBlock { .. })));
        // next() waits (the manual clock advances while waiting).
        assert!(g.next().is_ok());
    }

    #[test]
    fn clock_step_back_never_reuses_an_id() {
        let clock = ManualClock::at(T0 + 10_000);
        let g = IdGenerator::with_clock(1, clock);
        let before: Vec<_> = (0..1000).map(|_| g.next().unwrap()).collect();
        g.clock.set(T0); // ten seconds back
        let after: Vec<_> = (0..1000).map(|_| g.next().unwrap()).collect();
        let max_before = *before.iter().max().unwrap();
        assert!(after.iter().all(|id| *id > max_before));
    }

    #[test]
    fn before_epoch_is_an_error() {
        let g = IdGenerator::with_clock(0, ManualClock::at(EPOCH_UNIX_MS - 1));
        assert!(matches!(g.try_next(), Err(IdError::BeforeEpoch)));
    }

    #[test]
    fn state_file_continues_above_last_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.state");
        let last = {
            let g = IdGenerator::with_clock_and_state(9, ManualClock::at(T0), &path).unwrap();
            (0..10_000).map(|_| g.next().unwrap()).last().unwrap()
        };
        // Restart with the clock a little behind where the ids ended.
        let g = IdGenerator::with_clock_and_state(9, ManualClock::at(T0), &path).unwrap();
        let first = g.next().unwrap();
        assert!(first > last, "{first:?} must be above {last:?}");
    }

    #[test]
    fn state_file_far_ahead_of_clock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.state");
        {
            let g = IdGenerator::with_clock_and_state(9, ManualClock::at(T0 + 3_600_000), &path)
                .unwrap();
            g.next().unwrap();
        }
        let err = IdGenerator::with_clock_and_state(9, ManualClock::at(T0), &path).unwrap_err();
        assert!(matches!(err, IdError::ClockBehind { .. }), "{err}");
    }

    #[test]
    fn corrupt_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.state");
        fs::write(&path, "garbage").unwrap();
        let err = IdGenerator::with_clock_and_state(9, ManualClock::at(T0), &path).unwrap_err();
        assert!(matches!(err, IdError::CorruptState { .. }), "{err}");
    }
}
