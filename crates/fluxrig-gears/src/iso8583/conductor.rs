//! `conductor`: routes decoded ISO 8583 requests to issuer groups,
//! correlates the replies back to the terminal that asked, answers timeouts,
//! sends reversals until acknowledged, and stops duplicates.
//!
//! Invariants:
//! * a reply reaches a terminal only when it matches a pending request by
//!   the correlation key **and** came from the target the request went to;
//!   anything else is counted as unmatched and dropped (logged, no values);
//! * a request is forwarded at most once per correlation key while it is
//!   pending or remembered (`duplicate_window`);
//! * an authorization or financial request that timed out after being
//!   forwarded gets a 0420 reversal, repeated as 0421 until a 0430 arrives.
//!
//! The reversal queue sits behind [`ReversalQueue`], in memory, and is
//! written through to a write-ahead log on disk (`reversal_log`): a
//! reversal is durable before the terminal hears of the timeout, and the
//! queue survives a restart. With `durable_replies` the same log records
//! each forward (not waited for) and each answer: a reply leaves for the
//! terminal only once its record is durable — replies wait in
//! `awaiting`, in log order, while the conductor goes on with other
//! messages, and every reply of one group commit is released together. A
//! forward found unanswered after a restart is reversed. See
//! `docs/adr/0008-switch-durability.md`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use compact_str::CompactString;
use fluxrig_config::Duration;
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, Outputs, PortRef, PortSpec, Role,
};
use fluxrig_iso8583::{MTI_KEY, Sensitivity, Spec, get_element, remove_element, set_element};
use fluxrig_msg::{FluxMsg, Value};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

use super::reversal_log::{AnsweredRecord, ReversalLog, Unsettled};
use crate::coatcheck::META_TTL;

use super::{META_CONN, META_HEADER, META_PEER, META_TARGET, default_spec, load_spec};

/// How a group spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The first target that is up; the next ones when it fails (default).
    #[default]
    Failover,
    /// Each target in turn; the next one when a target fails.
    RoundRobin,
    /// The target with the fewest requests waiting for a reply.
    LeastOutstanding,
}

/// A destination group: issuer-side targets of an `iso8583_io` client.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Target names (the `targets[].name` of the `iso8583_io` client).
    pub targets: Vec<String>,
    /// `failover`, `round_robin` or `least_outstanding`.
    #[serde(default)]
    pub balance: Balance,
}

/// A condition on one element.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMatch {
    /// The element's text equals this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The element's text starts with one of these.
    #[serde(default)]
    pub prefix: Vec<String>,
    /// The element, as a number, is at least this.
    #[serde(default)]
    pub min: Option<u64>,
    /// The element, as a number, is at most this.
    #[serde(default)]
    pub max: Option<u64>,
}

/// A routing rule: every condition given must hold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// The PAN (DE 2) starts with one of these (BIN prefixes).
    #[serde(default)]
    pub pan_prefix: Vec<String>,
    /// The PAN's leading digits fall in one of these BIN ranges, written
    /// `LOW-HIGH` with bounds of the same length (`'400000-449999'`,
    /// `'22210000-27209999'`): the PAN's first that-many digits, as a
    /// number, are between them (inclusive).
    #[serde(default)]
    pub bin_range: Vec<String>,
    /// The MTI is one of these.
    #[serde(default)]
    pub mti: Vec<String>,
    /// Conditions on elements, by number (`"4"`) or alias (`amount.transaction`).
    #[serde(default)]
    pub fields: BTreeMap<String, FieldMatch>,
    /// The group requests matching this rule go to.
    pub to: String,
}

fn default_key() -> Vec<u8> {
    vec![11, 7, 32, 41]
}

fn secs(s: u64) -> Duration {
    Duration(StdDuration::from_secs(s))
}

fn default_timeout() -> Duration {
    secs(2)
}

fn default_retry() -> Duration {
    secs(5)
}

fn default_hold() -> Duration {
    Duration(StdDuration::from_hours(24))
}

fn default_window() -> Duration {
    secs(30)
}

fn code(s: &str) -> String {
    s.to_owned()
}

fn default_timeout_code() -> String {
    code("91")
}

fn default_no_route_code() -> String {
    code("15")
}

fn default_duplicate_code() -> String {
    code("94")
}

fn default_max_pending() -> usize {
    10_000
}

fn default_busy_code() -> String {
    code("91")
}

fn default_max_remembered() -> usize {
    100_000
}

/// Config of the `conductor` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConductorConfig {
    /// The dialect of the decoded messages (for element places and pairs).
    #[serde(default = "default_spec")]
    pub spec: String,
    /// Routing rules, tried in order; the first that matches wins.
    pub routes: Vec<RouteRule>,
    /// Destination groups by name.
    pub groups: BTreeMap<String, Group>,
    /// Elements of the correlation key (default STAN, transmission
    /// date/time, acquirer id, terminal id: `[11, 7, 32, 41]`; `[37]` for RRN).
    /// On the issuer leg only those the dialect says a response echoes are used.
    #[serde(default = "default_key")]
    pub key: Vec<u8>,
    /// How long to wait for an issuer's reply.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// DE 39 answered to the terminal on a timeout, or when no target of the group is up.
    #[serde(default = "default_timeout_code")]
    pub timeout_code: String,
    /// DE 39 answered when no rule matches.
    #[serde(default = "default_no_route_code")]
    pub no_route_code: String,
    /// DE 39 answered to a duplicate whose original has no answer yet.
    #[serde(default = "default_duplicate_code")]
    pub duplicate_code: String,
    /// Wait between repeats (0421) of an unacknowledged reversal.
    #[serde(default = "default_retry")]
    pub reversal_retry: Duration,
    /// How long the card data of a reversal is kept after each attempt:
    /// every 0420/0421 carries it in meta `coatcheck.ttl`, and a coat check
    /// `restore` on the way to the issuer extends the vault entries it
    /// restores by it, so a reversal whose issuer stays silent longer than
    /// the vault's `ttl` still goes out. It must be more than twice
    /// `reversal_retry` (an entry is extended once less than half of it is
    /// left) and cover any time the Rack may be down with reversals queued.
    #[serde(default = "default_hold")]
    pub reversal_hold: Duration,
    /// How long answered requests are remembered to answer duplicates.
    #[serde(default = "default_window")]
    pub duplicate_window: Duration,
    /// Most requests forwarded and not yet answered at once (admission
    /// control); a request beyond it is not forwarded but answered DE 39
    /// `busy_code` at once. Size it as rate × issuer latency with room:
    /// queued work beyond what the issuers answer within `timeout` only
    /// turns into timeouts and reversals.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// DE 39 answered when `max_pending` requests are in flight.
    #[serde(default = "default_busy_code")]
    pub busy_code: String,
    /// Most answers remembered for duplicates (the oldest are forgotten first).
    #[serde(default = "default_max_remembered")]
    pub max_remembered: usize,
    /// Keep the reversal queue in a write-ahead log under the data dir
    /// (`<data>/conductor/<gear>/reversals/`), so queued reversals survive a
    /// restart. `false` keeps it in memory only (tests, simulations).
    #[serde(default = "default_true")]
    pub durable_reversals: bool,
    /// Release a reply to its terminal only once the transaction's record
    /// is durable in the same log (one group commit, shared by the replies
    /// that arrive together); requests still go to the issuer without
    /// waiting for the disk. A request found forwarded but unanswered after
    /// a restart is reversed (0420). "Durable" follows the Rack's
    /// `--wal-sync`: synced under `always`, written to the OS under
    /// `interval`. Default: the value of `durable_reversals`; `true` needs
    /// `durable_reversals`.
    #[serde(default)]
    pub durable_replies: Option<bool>,
}

impl ConductorConfig {
    /// Whether replies wait for their record to be durable.
    fn durable_replies(&self) -> bool {
        self.durable_replies.unwrap_or(self.durable_reversals)
    }
}

fn default_true() -> bool {
    true
}

/// The `conductor` gear type.
#[derive(Debug)]
pub struct Conductor;

/// Where an element lives in `data`.
fn element_number(spec: &Spec, name: &str) -> Option<u8> {
    match name.parse::<u8>() {
        Ok(n) => spec.element(n).map(|_| n),
        Err(_) => spec.element_by_alias(name).map(|e| e.number),
    }
}

impl GearKind for Conductor {
    type Config = ConductorConfig;
    const NAME: &'static str = "conductor";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str = "Payment switching: routes requests to issuer groups, correlates replies, answers timeouts, reverses, stops duplicates";
    const DOCS: &'static str = "Takes decoded messages (`iso8583_codec` decode) on `in`: requests from terminals \
        (they carry meta `iso8583.conn`), replies from issuers (they carry `iso8583.target`), and requests an \
        `iso8583_io` client could not send (its `error` port, wired back here: the next target of the group is \
        tried).\n\n\
        A request is matched against `routes` in order (PAN prefix, BIN range, MTI, element conditions) and goes out by \
        `issuers` with meta `iso8583.target` set to a target of the rule's group (`failover`, `round_robin` or `least_outstanding`). \
        No matching rule: the terminal is answered with DE 39 `no_route_code` (15). With `max_pending` requests \
        forwarded and not yet answered (10,000), a new one is not forwarded but answered DE 39 `busy_code` (91) \
        at once: an overloaded switch declines what it cannot answer in time instead of queueing it into \
        timeouts and reversals. 0800 from terminals are answered 0810 here.\n\n\
        Replies are correlated by `key` (default DE 11 + 7 + 32 + 41; on the issuer leg, the key elements the \
        dialect says a response echoes) and by the target the request went to, and leave by `terminals` with \
        the original request's `iso8583.conn` and header. A reply that matches nothing pending (late, unknown, \
        from another target) is counted and dropped, never delivered to another terminal.\n\n\
        After `timeout` the terminal gets the response with DE 39 `timeout_code` (91), and an authorization or \
        financial request that was forwarded gets a 0420 reversal to the same target (the request's elements with \
        the original data elements, DE 90 or DE 56 in 1993 dialects, and without DE 39 and the elements the \
        dialect classifies `track`, `pin` or `cvv`), repeated as 0421 every \
        `reversal_retry` until the 0430 arrives; each carries meta `coatcheck.ttl` = `reversal_hold` (24 h), \
        so a coat check `restore` keeps the reversal's card data in the vault as long as it is repeated. A request whose key is pending or was answered within \
        `duplicate_window` is never forwarded again: it gets the original answer when known, else DE 39 \
        `duplicate_code` (94).\n\n\
        The reversal queue is store-and-forward: with `durable_reversals` (default) each reversal is written \
        to a write-ahead log in `<data>/conductor/<gear>/reversals/` and synced **before** the terminal is \
        answered and the 0420 leaves, and its 0430 is recorded too. After a restart (also after kill -9 or \
        power loss) every reversal still waiting is sent again as 0421 until its 0430 arrives.\n\n\
        With `durable_replies` (default: as `durable_reversals`) the same log records each forwarded request \
        (without waiting: the issuer never waits on the disk) and each reply, and a reply leaves for the terminal \
        only once its record is durable: replies that arrive together share one group commit, and the conductor \
        goes on with other messages meanwhile. A duplicate of a request whose reply waits for its commit gets \
        `duplicate_code`. After a restart, every authorization or financial request the log shows forwarded and \
        never answered to its terminal is reversed (0420, then 0421 until its 0430): its terminal never heard \
        the answer.";
    const EXAMPLE: &'static str = "- name: conductor\n  type: conductor\n  config:\n    routes:\n      - {pan_prefix: ['4'], to: visa}\n      - {pan_prefix: ['5'], to: mastercard}\n    groups:\n      visa: {targets: [visa_a, visa_b], balance: failover}\n      mastercard: {targets: [mc]}\n    timeout: 2s";

    fn ports(_config: &ConductorConfig) -> Vec<PortSpec> {
        vec![
            PortSpec::input(),
            PortSpec::named_output(
                "issuers",
                "requests and reversals to issuers (meta `iso8583.target`), to encode and send",
            ),
            PortSpec::named_output(
                "terminals",
                "replies to terminals (meta `iso8583.conn`), to encode and send",
            ),
            PortSpec::error(),
        ]
    }

    fn check(config: &ConductorConfig, ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let spec = match load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                issues.push(ConfigIssue::new("spec", e));
                None
            }
        };
        for (i, r) in config.routes.iter().enumerate() {
            if !config.groups.contains_key(&r.to) {
                issues.push(ConfigIssue::new(
                    format!("routes[{i}].to"),
                    format!("no group named `{}`", r.to),
                ));
            }
            for (j, range) in r.bin_range.iter().enumerate() {
                if let Err(e) = BinRange::parse(range) {
                    issues.push(ConfigIssue::new(format!("routes[{i}].bin_range[{j}]"), e));
                }
            }
            if let Some(spec) = &spec {
                for name in r.fields.keys() {
                    if element_number(spec, name).is_none() {
                        issues.push(ConfigIssue::new(
                            format!("routes[{i}].fields.{name}"),
                            "not an element number or alias of the dialect",
                        ));
                    }
                }
            }
        }
        for (name, g) in &config.groups {
            if g.targets.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("groups.{name}.targets"),
                    "a group needs at least one target",
                ));
            }
        }
        if config.key.is_empty() {
            issues.push(ConfigIssue::new(
                "key",
                "the correlation key needs an element",
            ));
        }
        if let Some(spec) = &spec {
            for &n in &config.key {
                if spec.element(n).is_none() {
                    issues.push(ConfigIssue::new(
                        "key",
                        format!("element {n} is not in the dialect"),
                    ));
                }
            }
        }
        if config.max_pending == 0 {
            issues.push(ConfigIssue::new(
                "max_pending",
                "must be at least 1 (0 would decline every request)",
            ));
        }
        // The vault extends an entry only once less than half of the hold
        // is left: after an attempt the data lives at least hold / 2 more.
        if config.reversal_hold.get() <= config.reversal_retry.get().saturating_mul(2) {
            issues.push(ConfigIssue::new(
                "reversal_hold",
                "must be more than twice `reversal_retry` (the card data could expire between two attempts)",
            ));
        }
        if config.timeout.get().is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be above zero"));
        }
        if config.durable_replies == Some(true) && !config.durable_reversals {
            issues.push(ConfigIssue::new(
                "durable_replies",
                "needs durable_reversals: the replies' records go to the reversal log",
            ));
        }
        issues
    }

    fn build(config: &ConductorConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let spec = load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir).map_err(BuildError)?;
        let mut targets: Vec<CompactString> = Vec::new();
        let mut target_index = |t: &str| {
            targets.iter().position(|x| x == t).unwrap_or_else(|| {
                targets.push(t.into());
                targets.len() - 1
            })
        };
        let mut group_names = Vec::new();
        let mut groups = Vec::new();
        for (name, g) in &config.groups {
            group_names.push(name.clone());
            groups.push(GroupState {
                targets: g.targets.iter().map(|t| target_index(t)).collect(),
                balance: g.balance,
                next: 0,
            });
        }
        let mut routes = Vec::new();
        for r in &config.routes {
            let group = group_names
                .iter()
                .position(|g| *g == r.to)
                .ok_or_else(|| BuildError(format!("no group named `{}`", r.to)))?;
            let mut fields = Vec::new();
            for (name, m) in &r.fields {
                let n = element_number(&spec, name)
                    .ok_or_else(|| BuildError(format!("no element `{name}`")))?;
                fields.push((
                    n,
                    FieldMatch {
                        equals: m.equals.clone(),
                        prefix: m.prefix.clone(),
                        min: m.min,
                        max: m.max,
                    },
                ));
            }
            routes.push(CompiledRoute {
                pan_prefix: r.pan_prefix.clone(),
                bin_range: r
                    .bin_range
                    .iter()
                    .map(|b| BinRange::parse(b))
                    .collect::<Result<_, _>>()
                    .map_err(BuildError)?,
                mti: r.mti.clone(),
                fields,
                group,
            });
        }
        // Per request class, the key elements its response echoes.
        let mut issuer_key_elements = HashMap::new();
        for (mti, rule) in spec.messages() {
            if let Some(class) = mti_class(mti)
                && !is_response(mti)
                && !rule.echo.is_empty()
            {
                issuer_key_elements.entry(class).or_insert_with(|| {
                    config
                        .key
                        .iter()
                        .copied()
                        .filter(|n| rule.echo.contains(n))
                        .collect::<Vec<u8>>()
                });
            }
        }
        let down = vec![None; targets.len()];
        let outstanding = vec![0; targets.len()];
        Ok(Box::new(ConductorGear {
            spec,
            routes,
            groups,
            targets,
            down,
            outstanding,
            key: config.key.clone(),
            issuer_key_elements,
            timeout: config.timeout.get(),
            timeout_code: config.timeout_code.clone(),
            no_route_code: config.no_route_code.clone(),
            duplicate_code: config.duplicate_code.clone(),
            busy_code: config.busy_code.clone(),
            reversal_retry: config.reversal_retry.get(),
            reversal_hold: format!("{}ms", config.reversal_hold.get().as_millis()),
            window: config.duplicate_window.get(),
            max_pending: config.max_pending,
            max_remembered: config.max_remembered,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            reversals: Box::new(MemoryReversals::default()),
            log_dir: config.durable_reversals.then(|| {
                ctx.data_dir
                    .join("conductor")
                    .join(&*ctx.gear)
                    .join("reversals")
            }),
            log_sync: ctx.wal_sync,
            log: None,
            durable_replies: config.durable_reversals && config.durable_replies(),
            awaiting: VecDeque::new(),
            unsettled: Vec::new(),
            trimmed_at: Instant::now(),
            seq: 0,
            counts: Counts::default(),
        }))
    }
}

/// A reversal waiting for its 0430.
#[derive(Debug, Clone)]
pub struct Reversal {
    /// The issuer-leg key of the reversal (its 0430 carries the same).
    pub key: String,
    /// The target it goes to.
    pub target: usize,
    /// The reversal message (0420 data, meta `iso8583.target`).
    pub msg: FluxMsg,
    /// Sends so far.
    pub attempts: u32,
    /// When to send it again.
    pub next_at: Instant,
    /// Where it is in the reversal log (0 when the queue is in memory only).
    pub lsn: u64,
}

/// Where unacknowledged reversals wait (store-and-forward).
pub trait ReversalQueue: Send {
    /// Adds a reversal.
    fn push(&mut self, r: Reversal);
    /// Removes the reversal acknowledged by a 0430 with this key and target.
    fn ack(&mut self, key: &str, target: usize) -> Option<Reversal>;
    /// Reversals due at `now` (their `next_at` moves on by `retry`).
    fn due(&mut self, now: Instant, retry: StdDuration) -> Vec<Reversal>;
    /// The earliest `next_at`.
    fn next_due(&mut self) -> Option<Instant>;
    /// The smallest `lsn` of the reversals waiting.
    fn oldest_lsn(&self) -> Option<u64>;
    /// Reversals waiting.
    fn len(&self) -> usize;
    /// True when none waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often settled segments of the reversal log are removed.
const TRIM_EVERY: StdDuration = StdDuration::from_secs(10);
/// Size from which the conductor shrinks a table at most a quarter used:
/// its slots' bytes, so a table of whole pending requests (a few hundred
/// bytes each) is not kept at its peak.
const SHRINK_FROM_BYTES: usize = 64 * 1024;

/// True when a table of `capacity` slots of `T` holding `len` should
/// shrink: at most a quarter used, and bigger than `SHRINK_FROM_BYTES`.
fn oversized<T>(capacity: usize, len: usize) -> bool {
    capacity > 4 * len && capacity.saturating_mul(size_of::<T>()) > SHRINK_FROM_BYTES
}

/// Reversals sent again per tick at most, so a long outage's backlog
/// drains in steps instead of flooding the issuer when it returns.
const REVERSALS_PER_TICK: usize = 1000;

/// The in-memory reversal queue (lost on restart).
#[derive(Debug, Default)]
pub struct MemoryReversals {
    by_key: HashMap<String, Reversal>,
    /// (when, key) of every schedule; stale entries are skipped.
    schedule: BinaryHeap<Reverse<(Instant, String)>>,
}

impl MemoryReversals {
    /// Drops stale heads of the schedule (acknowledged or rescheduled).
    fn settle(&mut self) {
        while let Some(Reverse((at, key))) = self.schedule.peek() {
            if self.by_key.get(key).is_some_and(|r| r.next_at == *at) {
                break;
            }
            self.schedule.pop();
        }
    }
}

impl ReversalQueue for MemoryReversals {
    fn push(&mut self, r: Reversal) {
        self.schedule.push(Reverse((r.next_at, r.key.clone())));
        self.by_key.insert(r.key.clone(), r);
    }

    fn ack(&mut self, key: &str, target: usize) -> Option<Reversal> {
        if self.by_key.get(key).is_some_and(|r| r.target == target) {
            self.by_key.remove(key)
        } else {
            None
        }
    }

    fn due(&mut self, now: Instant, retry: StdDuration) -> Vec<Reversal> {
        let mut out = Vec::new();
        while out.len() < REVERSALS_PER_TICK {
            self.settle();
            let Some(Reverse((at, _))) = self.schedule.peek() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.schedule.pop() else {
                break;
            };
            if let Some(r) = self.by_key.get_mut(&key) {
                r.attempts += 1;
                r.next_at = now + retry;
                out.push(r.clone());
                self.schedule.push(Reverse((r.next_at, key)));
            }
        }
        out
    }

    fn next_due(&mut self) -> Option<Instant> {
        self.settle();
        self.schedule.peek().map(|Reverse((at, _))| *at)
    }

    fn oldest_lsn(&self) -> Option<u64> {
        self.by_key.values().map(|r| r.lsn).min()
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

struct GroupState {
    targets: Vec<usize>,
    balance: Balance,
    next: usize,
}

/// A BIN range: the first `digits` digits of a PAN, between `low` and
/// `high` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BinRange {
    digits: usize,
    low: u64,
    high: u64,
}

impl BinRange {
    fn parse(s: &str) -> Result<BinRange, String> {
        let bad = || format!("`{s}` is not a BIN range such as `400000-449999`");
        let (low, high) = s.split_once('-').ok_or_else(bad)?;
        let (low, high) = (low.trim(), high.trim());
        let digits = low.len();
        if digits == 0
            || digits > 19
            || high.len() != digits
            || !low.bytes().chain(high.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "{}: both bounds need the same number of digits (1 to 19)",
                bad()
            ));
        }
        let (low, high) = (
            low.parse::<u64>().map_err(|_| bad())?,
            high.parse::<u64>().map_err(|_| bad())?,
        );
        if low > high {
            return Err(format!("{}: the low bound is above the high one", bad()));
        }
        Ok(BinRange { digits, low, high })
    }

    fn contains(&self, pan: &str) -> bool {
        pan.get(..self.digits)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .is_some_and(|n| (self.low..=self.high).contains(&n))
    }
}

struct CompiledRoute {
    pan_prefix: Vec<String>,
    bin_range: Vec<BinRange>,
    mti: Vec<String>,
    fields: Vec<(u8, FieldMatch)>,
    group: usize,
}

/// A request forwarded and waiting for its reply.
struct Pending {
    seq: u64,
    request: FluxMsg,
    term_key: String,
    group: usize,
    target: usize,
    tried: Vec<usize>,
    /// The LSN of its `FORWARDED` record (0: not recorded).
    lsn: u64,
}

/// A forwarded request to reverse.
struct ToReverse {
    request: FluxMsg,
    target: usize,
    /// The issuer-leg key of its `FORWARDED` record, when there is one.
    settles: Option<String>,
    /// The terminal key and the timeout answer its terminal gets once the
    /// reversal is durable (none for a forward found at recovery).
    answer: Option<(String, FluxMsg)>,
}

/// What waits for a record's group commit before it leaves.
enum Held {
    /// An issuer's reply to its terminal (`ANSWERED` record).
    Reply { term_key: String, answer: FluxMsg },
    /// A reversal to its issuer (`QUEUED` record), and the timeout answer
    /// its terminal gets (none for a reversal found at recovery).
    Reversal {
        reversal: Box<Reversal>,
        answer: Option<(String, FluxMsg)>,
    },
}

/// Messages waiting for their record's group commit.
struct Release {
    commit: fluxrig_wal::Pending,
    held: Held,
    /// The LSN of the oldest record this keeps open (the request's
    /// `FORWARDED`, or the reversal's `QUEUED`; 0: none).
    pin_lsn: u64,
}

/// Whether a commit has resolved, without waiting.
fn poll_now(
    commit: &mut fluxrig_wal::Pending,
) -> std::task::Poll<Result<fluxrig_wal::Lsn, fluxrig_wal::WalError>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(commit).poll(&mut cx)
}

/// Resolves when the oldest reply awaiting its commit may go (never, when
/// none waits).
async fn first_commit(
    awaiting: &mut VecDeque<Release>,
) -> Result<fluxrig_wal::Lsn, fluxrig_wal::WalError> {
    match awaiting.front_mut() {
        Some(r) => (&mut r.commit).await,
        None => std::future::pending().await,
    }
}

/// What is remembered of a terminal key.
enum Seen {
    /// Forwarded, no answer yet.
    InFlight,
    /// Answered: the `data` of the answer given, as CBOR (a few hundred
    /// bytes in one allocation, where the tree takes dozens).
    Done(Box<[u8]>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    forwarded: u64,
    replied: u64,
    timeouts: u64,
    no_route: u64,
    duplicates: u64,
    unmatched: u64,
    reversals: u64,
    reversals_acked: u64,
    /// Requests answered `busy_code` (`max_pending` in flight).
    busy: u64,
    failovers: u64,
}

struct ConductorGear {
    spec: Arc<Spec>,
    routes: Vec<CompiledRoute>,
    groups: Vec<GroupState>,
    targets: Vec<CompactString>,
    /// Until when a target is considered down (a send to it failed).
    down: Vec<Option<Instant>>,
    /// Requests pending per target.
    outstanding: Vec<usize>,
    key: Vec<u8>,
    /// The key elements on the issuer leg, by request class (`010`).
    issuer_key_elements: HashMap<String, Vec<u8>>,
    timeout: StdDuration,
    timeout_code: String,
    no_route_code: String,
    duplicate_code: String,
    busy_code: String,
    reversal_retry: StdDuration,
    /// `reversal_hold` as meta `coatcheck.ttl` wants it.
    reversal_hold: String,
    window: StdDuration,
    max_pending: usize,
    max_remembered: usize,
    /// By issuer-leg key.
    pending: HashMap<String, Pending>,
    /// (deadline, issuer key, seq), in deadline order (the timeout is constant).
    deadlines: VecDeque<(Instant, String, u64)>,
    /// By terminal key.
    seen: HashMap<String, Seen>,
    /// (forget at, terminal key) of answered ones.
    seen_order: VecDeque<(Instant, String)>,
    reversals: Box<dyn ReversalQueue>,
    /// Where the reversal log lives (`durable_reversals`).
    log_dir: Option<PathBuf>,
    /// The Rack's sync policy, for the log.
    log_sync: fluxrig_wal::SyncPolicy,
    /// The reversal log, opened when the gear starts running.
    log: Option<ReversalLog>,
    /// Replies wait for their `ANSWERED` record to be durable (and
    /// forwards are recorded): `durable_replies`.
    durable_replies: bool,
    /// Replies waiting for their commit, in log order.
    awaiting: VecDeque<Release>,
    /// Forwards found unanswered in the log at start, reversed once the
    /// ports are up.
    unsettled: Vec<Unsettled>,
    /// When settled segments of the log were last removed.
    trimmed_at: Instant,
    seq: u64,
    counts: Counts,
}

/// The MTI with the function digit made even and the origin digit dropped:
/// a request and its response, and a 0420 and its 0421 repeat, share it.
fn mti_class(mti: &str) -> Option<String> {
    let b = mti.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let f = (b[2] - b'0') & !1;
    Some(format!("{}{}{}", char::from(b[0]), char::from(b[1]), f))
}

/// True when the MTI is a response (odd function digit: 0110, 0430, 0810).
fn is_response(mti: &str) -> bool {
    mti.as_bytes().get(2).is_some_and(|d| (d - b'0') % 2 == 1)
}

fn text<'v>(spec: &Spec, data: &'v Value, n: u8) -> Option<&'v str> {
    get_element(spec, data, n).and_then(Value::as_str)
}

/// The original data elements a reversal carries, by the dialect's
/// `original.data` element: DE 90 of ISO 8583:1987 (n 42: MTI, STAN,
/// transmission date/time, acquirer and forwarding institution ids,
/// zero-filled) or DE 56 of ISO 8583:1993 (MTI, STAN, local date/time,
/// LL acquirer id). `None` when the dialect has neither.
/// The data of the 0420 reversing `request`: its elements without DE 39,
/// with the original data elements (DE 90 or 56), and without the track,
/// PIN and CVV elements: a reversal advice does not carry them (the issuer
/// finds the original by the rest), and they would otherwise be restored
/// from the vault and sent again, repeatedly.
fn reversal_data(spec: &Spec, request: &Value) -> Value {
    let mut data = request.clone();
    if let Some(map) = data.as_map_mut() {
        map.insert(MTI_KEY, "0420");
    }
    remove_element(spec, &mut data, 39);
    for el in spec.elements() {
        if matches!(
            el.sensitivity,
            Some(Sensitivity::Track | Sensitivity::Pin | Sensitivity::Cvv)
        ) {
            remove_element(spec, &mut data, el.number);
        }
    }
    if let Some((n, original)) = original_data(spec, request) {
        set_element(spec, &mut data, n, Value::text(original));
    }
    data
}

fn original_data(spec: &Spec, request: &Value) -> Option<(u8, String)> {
    let el = spec.element_by_alias("original.data")?;
    let field = |n: u8| text(spec, request, n).unwrap_or_default().trim();
    let num = |n: u8, width: usize| format!("{:0>width$}", field(n));
    let mti = request
        .get(MTI_KEY)
        .and_then(Value::as_str)
        .unwrap_or("0000");
    match el.number {
        90 => Some((
            90,
            format!(
                "{mti:0>4}{}{}{}{}",
                num(11, 6),
                num(7, 10),
                num(32, 11),
                num(33, 11)
            ),
        )),
        56 => {
            let acquirer = field(32);
            Some((
                56,
                format!(
                    "{mti:0>4}{}{}{:02}{acquirer}",
                    num(11, 6),
                    num(12, 12),
                    acquirer.len()
                ),
            ))
        }
        _ => None,
    }
}

impl ConductorGear {
    fn mti(data: &Value) -> &str {
        data.get(MTI_KEY)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The key over `elements` of a request class.
    fn key_of(&self, class: &str, data: &Value, elements: impl Iterator<Item = u8>) -> String {
        let mut k = String::with_capacity(48);
        k.push_str(class);
        for n in elements {
            k.push('|');
            k.push_str(text(&self.spec, data, n).unwrap_or_default());
        }
        k
    }

    /// The terminal key (all key elements) of a request.
    fn term_key(&self, class: &str, data: &Value) -> String {
        self.key_of(class, data, self.key.iter().copied())
    }

    /// The issuer-leg key: the key elements a response to `class` echoes.
    fn issuer_key(&self, class: &str, data: &Value) -> String {
        match self.issuer_key_elements.get(class) {
            Some(e) => self.key_of(class, data, e.iter().copied()),
            None => self.term_key(class, data),
        }
    }

    fn route(&self, data: &Value) -> Option<usize> {
        let mti = Self::mti(data);
        let pan = text(&self.spec, data, 2).unwrap_or_default();
        self.routes
            .iter()
            .find(|r| {
                (r.pan_prefix.is_empty()
                    || r.pan_prefix.iter().any(|p| pan.starts_with(p.as_str())))
                    && (r.bin_range.is_empty() || r.bin_range.iter().any(|b| b.contains(pan)))
                    && (r.mti.is_empty() || r.mti.iter().any(|m| m == mti))
                    && r.fields.iter().all(|(n, m)| {
                        let Some(v) = text(&self.spec, data, *n) else {
                            return false;
                        };
                        let num = v.trim().parse::<u64>().ok();
                        m.equals.as_deref().is_none_or(|e| e == v)
                            && (m.prefix.is_empty()
                                || m.prefix.iter().any(|p| v.starts_with(p.as_str())))
                            && m.min.is_none_or(|min| num.is_some_and(|x| x >= min))
                            && m.max.is_none_or(|max| num.is_some_and(|x| x <= max))
                    })
            })
            .map(|r| r.group)
    }

    /// Removes a pending request.
    fn take_pending(&mut self, key: &str) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.outstanding[p.target] = self.outstanding[p.target].saturating_sub(1);
        Some(p)
    }

    /// The next target of a group, skipping those tried and those down.
    fn pick(&mut self, group: usize, tried: &[usize], now: Instant) -> Option<usize> {
        let g = &mut self.groups[group];
        let n = g.targets.len();
        let start = match g.balance {
            Balance::Failover | Balance::LeastOutstanding => 0,
            Balance::RoundRobin => {
                g.next = (g.next + 1) % n;
                g.next
            }
        };
        let mut candidates: Vec<usize> = (0..n)
            .map(|i| g.targets[(start + i) % n])
            .filter(|t| !tried.contains(t))
            .collect();
        if g.balance == Balance::LeastOutstanding {
            candidates.sort_by_key(|&t| self.outstanding[t]);
        }
        candidates
            .iter()
            .copied()
            .find(|&t| self.down[t].is_none_or(|until| until <= now))
            .or_else(|| candidates.first().copied())
    }

    /// A response to `request` built from it: its echoed elements, DE 39 = `code`.
    fn answer(&self, request: &FluxMsg, code: &str, out: &Outputs) -> FluxMsg {
        let mti = Self::mti(&request.data);
        let resp = self.spec.response_mti(mti).map_or_else(
            || {
                let mut b = mti.as_bytes().to_vec();
                if b.len() == 4 {
                    b[2] = b[2].saturating_add(1);
                }
                String::from_utf8(b).unwrap_or_default()
            },
            str::to_owned,
        );
        let echo: Vec<u8> = self
            .spec
            .message(mti)
            .map(|m| m.echo.clone())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| vec![2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49]);
        let mut data = Value::Map(fluxrig_msg::Map::new());
        if let Some(m) = data.as_map_mut() {
            m.insert(MTI_KEY, resp.as_str());
        }
        for n in echo.iter().chain(&self.key) {
            if let Some(v) = get_element(&self.spec, &request.data, *n) {
                set_element(&self.spec, &mut data, *n, v.clone());
            }
        }
        set_element(&self.spec, &mut data, 39, Value::text(code));
        Self::to_terminal(request, data, out)
    }

    /// A message to the terminal `request` came from, with `data`.
    fn to_terminal(request: &FluxMsg, data: Value, out: &Outputs) -> FluxMsg {
        let mut m = FluxMsg::new(out.new_id(), data);
        m.reference = Some(request.id);
        m.trace = request.trace;
        m.src = Some(out.ctx().entity);
        m.ts = fluxrig_gear::now_ns();
        for k in [META_CONN, META_HEADER, META_PEER] {
            if let Some(v) = request.meta.get(k) {
                m.meta.insert(k, v);
            }
        }
        m
    }

    /// `msg` readied for a target: terminal meta and errors removed.
    fn to_target(&self, mut msg: FluxMsg, target: usize) -> FluxMsg {
        for k in [
            META_CONN,
            META_HEADER,
            META_PEER,
            "error.reason",
            "error.gear",
        ] {
            msg.meta.remove(k);
        }
        msg.meta.insert(META_TARGET, self.targets[target].as_str());
        msg
    }

    /// After a peak, shrinks the tables that no longer need their size
    /// (maps and queues never shrink by themselves).
    fn give_back_memory(&mut self) {
        fn map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
            if oversized::<(K, V)>(m.capacity(), m.len()) {
                m.shrink_to(2 * m.len());
            }
        }
        fn queue<T>(q: &mut VecDeque<T>) {
            if oversized::<T>(q.capacity(), q.len()) {
                q.shrink_to(2 * q.len());
            }
        }
        map(&mut self.seen);
        map(&mut self.pending);
        queue(&mut self.seen_order);
        queue(&mut self.deadlines);
    }

    fn remember(&mut self, term_key: String, answer: &FluxMsg, now: Instant) {
        let cbor = fluxrig_msg::cbor::to_vec(&answer.data).into_boxed_slice();
        self.seen.insert(term_key.clone(), Seen::Done(cbor));
        self.seen_order.push_back((now + self.window, term_key));
        while self.seen_order.len() > self.max_remembered {
            if let Some((_, k)) = self.seen_order.pop_front()
                && matches!(self.seen.get(&k), Some(Seen::Done(_)))
            {
                self.seen.remove(&k);
            }
        }
    }

    /// Records a forward to `target` when replies are durable (not waited
    /// for); its LSN, or 0.
    async fn record_forward(
        &mut self,
        key: &str,
        target: usize,
        data: &Value,
    ) -> Result<u64, GearError> {
        match &self.log {
            Some(log) if self.durable_replies => log
                .forwarded(key, &self.targets[target], data)
                .await
                .map(fluxrig_wal::Lsn::get)
                .map_err(GearError::Other),
            _ => Ok(0),
        }
    }

    /// Records that a forwarded request's terminal was answered without
    /// the issuer (declined when no target could take it), not waited for:
    /// a lost record costs one needless reversal after a crash.
    async fn record_settled(
        &mut self,
        key: &str,
        p: &Pending,
        answer: &FluxMsg,
    ) -> Result<(), GearError> {
        if let Some(rec) = self.answered_record(key, p, answer)
            && let Some(log) = &self.log
        {
            // Dropping the pending append does not cancel it.
            drop(log.answered(&rec).await.map_err(GearError::Other)?);
        }
        Ok(())
    }

    /// The `ANSWERED` record of `answer` to the forwarded request `p`
    /// (issuer-leg key `key`), when replies are durable.
    fn answered_record(&self, key: &str, p: &Pending, answer: &FluxMsg) -> Option<AnsweredRecord> {
        if !self.durable_replies || self.log.is_none() {
            return None;
        }
        Some(AnsweredRecord {
            key: key.to_owned(),
            target: self.targets[p.target].to_string(),
            terminal_key: p.term_key.clone(),
            mti: Self::mti(&answer.data).to_owned(),
            code: text(&self.spec, &answer.data, 39)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    async fn on_request(
        &mut self,
        msg: FluxMsg,
        io: &Ports<'_>,
        now: Instant,
    ) -> Result<(), GearError> {
        let mti = Self::mti(&msg.data).to_owned();
        let Some(class) = mti_class(&mti) else {
            io.out.fail(msg, "no valid MTI").await;
            return Ok(());
        };
        let from_issuer = msg.meta.get(META_CONN).is_none();
        if class == "080" {
            let mut a = self.answer(&msg, "00", io.out);
            if from_issuer && let Some(t) = msg.meta.get(META_TARGET) {
                // An issuer's echo: answered on its pool.
                a.meta.insert(META_TARGET, t);
                io.out.emit(io.issuers, a).await;
            } else {
                io.out.emit(io.terminals, a).await;
            }
            return Ok(());
        }
        if from_issuer {
            io.out
                .fail(
                    msg,
                    "a request without meta iso8583.conn: only terminals' requests are switched",
                )
                .await;
            return Ok(());
        }
        let term_key = self.term_key(&class, &msg.data);
        match self.seen.get(&term_key) {
            Some(Seen::Done(answer)) => {
                self.counts.duplicates += 1;
                // Our own encoding: it decodes (Null only if memory was corrupted).
                let data = fluxrig_msg::cbor::from_slice(answer, fluxrig_msg::Limits::default())
                    .unwrap_or(Value::Null);
                let a = Self::to_terminal(&msg, data, io.out);
                io.out.emit(io.terminals, a).await;
                return Ok(());
            }
            Some(Seen::InFlight) => {
                self.counts.duplicates += 1;
                let a = self.answer(&msg, &self.duplicate_code, io.out);
                io.out.emit(io.terminals, a).await;
                return Ok(());
            }
            None => {}
        }
        let Some(group) = self.route(&msg.data) else {
            self.counts.no_route += 1;
            let a = self.answer(&msg, &self.no_route_code, io.out);
            self.remember(term_key, &a, now);
            io.out.emit(io.terminals, a).await;
            return Ok(());
        };
        let issuer_key = self.issuer_key(&class, &msg.data);
        if self.pending.contains_key(&issuer_key) {
            // Another terminal key that the issuer leg cannot tell apart
            // from one in flight: refuse rather than risk a cross-wire.
            self.counts.duplicates += 1;
            let a = self.answer(&msg, &self.duplicate_code, io.out);
            io.out.emit(io.terminals, a).await;
            return Ok(());
        }
        if self.pending.len() >= self.max_pending {
            // Admission: what cannot be answered in time is declined now,
            // not queued towards a timeout and a reversal.
            self.counts.busy += 1;
            let a = self.answer(&msg, &self.busy_code, io.out);
            io.out.emit(io.terminals, a).await;
            return Ok(());
        }
        let Some(target) = self.pick(group, &[], now) else {
            let a = self.answer(&msg, &self.timeout_code, io.out);
            io.out.emit(io.terminals, a).await;
            return Ok(());
        };
        self.seq += 1;
        let fwd = self.to_target(msg.clone(), target);
        let lsn = self.record_forward(&issuer_key, target, &msg.data).await?;
        self.outstanding[target] += 1;
        self.pending.insert(
            issuer_key.clone(),
            Pending {
                seq: self.seq,
                request: msg,
                term_key: term_key.clone(),
                group,
                target,
                tried: vec![target],
                lsn,
            },
        );
        self.deadlines
            .push_back((now + self.timeout, issuer_key.clone(), self.seq));
        self.seen.insert(term_key, Seen::InFlight);
        self.counts.forwarded += 1;
        io.out.emit(io.issuers, fwd).await;
        Ok(())
    }

    /// A request an `iso8583_io` client could not send: try the next target.
    async fn on_send_failure(
        &mut self,
        msg: FluxMsg,
        io: &Ports<'_>,
        now: Instant,
    ) -> Result<(), GearError> {
        let mti = Self::mti(&msg.data).to_owned();
        let class = mti_class(&mti).unwrap_or_default();
        let failed = msg
            .meta
            .get(META_TARGET)
            .and_then(|t| self.targets.iter().position(|x| x == t));
        if let Some(t) = failed {
            self.down[t] = Some(now + StdDuration::from_secs(1));
        }
        if class == "040" || class == "042" {
            // A reversal: it stays queued and is repeated.
            return Ok(());
        }
        let issuer_key = self.issuer_key(&class, &msg.data);
        let Some(p) = self.pending.get_mut(&issuer_key) else {
            return Ok(());
        };
        if failed.is_some_and(|t| t != p.target) {
            return Ok(());
        }
        let (group, tried) = (p.group, p.tried.clone());
        match self.pick(group, &tried, now) {
            Some(next) => {
                self.counts.failovers += 1;
                // Recovery reverses towards the target tried last.
                self.record_forward(&issuer_key, next, &msg.data).await?;
                if let Some(p) = self.pending.get_mut(&issuer_key) {
                    self.outstanding[p.target] = self.outstanding[p.target].saturating_sub(1);
                    self.outstanding[next] += 1;
                    p.target = next;
                    p.tried.push(next);
                }
                let fwd = self.to_target(msg, next);
                io.out.emit(io.issuers, fwd).await;
            }
            None => {
                // Every target failed: decline now (nothing reached an issuer).
                if let Some(p) = self.take_pending(&issuer_key) {
                    let a = self.answer(&p.request, &self.timeout_code, io.out);
                    self.record_settled(&issuer_key, &p, &a).await?;
                    self.remember(p.term_key, &a, now);
                    io.out.emit(io.terminals, a).await;
                }
            }
        }
        Ok(())
    }

    async fn on_response(
        &mut self,
        msg: FluxMsg,
        io: &Ports<'_>,
        now: Instant,
    ) -> Result<(), GearError> {
        let mti = Self::mti(&msg.data).to_owned();
        let class = mti_class(&mti).unwrap_or_default();
        let from = msg
            .meta
            .get(META_TARGET)
            .and_then(|t| self.targets.iter().position(|x| x == t));
        let key = self.issuer_key(&class, &msg.data);
        if class == "042" || class == "040" {
            if let Some(r) = from.and_then(|t| self.reversals.ack(&key, t)) {
                self.counts.reversals_acked += 1;
                if let Some(log) = &self.log
                    && let Err(e) = log.acked(&r.key, &self.targets[r.target]).await
                {
                    // Only costs a repeated 0421 after a restart.
                    tracing::warn!(error = %e, "cannot record a reversal's acknowledgement");
                }
            } else {
                self.unmatched(&mti);
            }
            return Ok(());
        }
        let matches = from.is_some_and(|t| self.pending.get(&key).is_some_and(|p| p.target == t));
        if !matches {
            self.unmatched(&mti);
            return Ok(());
        }
        let Some(p) = self.take_pending(&key) else {
            return Ok(());
        };
        let mut data = msg.data;
        // The terminal gets its own key back, whatever the issuer echoed.
        for &n in &self.key {
            match get_element(&self.spec, &p.request.data, n) {
                Some(v) => {
                    set_element(&self.spec, &mut data, n, v.clone());
                }
                None => {
                    remove_element(&self.spec, &mut data, n);
                }
            }
        }
        let a = Self::to_terminal(&p.request, data, io.out);
        self.counts.replied += 1;
        if let Some(rec) = self.answered_record(&key, &p, &a)
            && let Some(log) = &self.log
        {
            // Released by `release` once durable; until then a duplicate
            // of the request finds it in flight (94), not answered.
            let commit = log.answered(&rec).await.map_err(GearError::Other)?;
            self.awaiting.push_back(Release {
                commit,
                held: Held::Reply {
                    term_key: p.term_key,
                    answer: a,
                },
                pin_lsn: p.lsn,
            });
            return Ok(());
        }
        self.remember(p.term_key, &a, now);
        io.out.emit(io.terminals, a).await;
        Ok(())
    }

    /// Sends the replies whose records are durable: the oldest, whose
    /// commit resolved with `first`, and every later one the same commit
    /// (or an earlier-finished one) covered.
    async fn release(
        &mut self,
        first: Result<fluxrig_wal::Lsn, fluxrig_wal::WalError>,
        io: &Ports<'_>,
        now: Instant,
    ) -> Result<(), GearError> {
        if let Err(e) = first {
            // The log failed: these replies cannot be made durable. The
            // terminals time out and reverse; the switch stops.
            return Err(GearError::Other(format!(
                "reversal log: a reply's record cannot be made durable: {e}"
            )));
        }
        let mut done = self.awaiting.pop_front();
        while let Some(r) = done {
            match r.held {
                Held::Reply { term_key, answer } => {
                    self.remember(term_key, &answer, now);
                    io.out.emit(io.terminals, answer).await;
                }
                Held::Reversal { reversal, answer } => {
                    self.send_reversal(*reversal, answer, io, now).await;
                }
            }
            done = None;
            // Every LSN below this one is on disk: the replies the same
            // commit covered go now, without a wake-up each.
            let synced = self.log.as_ref().map_or(0, |l| l.synced_lsn().get());
            if let Some(next) = self.awaiting.front_mut() {
                if next.commit.last_lsn().get() < synced {
                    done = self.awaiting.pop_front();
                    continue;
                }
                match poll_now(&mut next.commit) {
                    std::task::Poll::Ready(Ok(_)) => done = self.awaiting.pop_front(),
                    std::task::Poll::Ready(Err(e)) => {
                        return Err(GearError::Other(format!(
                            "reversal log: a reply's record cannot be made durable: {e}"
                        )));
                    }
                    std::task::Poll::Pending => {}
                }
            }
        }
        Ok(())
    }

    /// Waits for every reply still awaiting its commit and sends it (at
    /// shutdown, once the input is closed).
    async fn release_all(&mut self, io: &Ports<'_>) -> Result<(), GearError> {
        while !self.awaiting.is_empty() {
            let first = first_commit(&mut self.awaiting).await;
            self.release(first, io, Instant::now()).await?;
        }
        Ok(())
    }

    fn unmatched(&mut self, mti: &str) {
        self.counts.unmatched += 1;
        let n = self.counts.unmatched;
        // Rate-limited: the 1st, 2nd, 4th, 8th… and then every 1000th.
        if n.is_power_of_two() || n.is_multiple_of(1000) {
            tracing::warn!(
                mti,
                unmatched = n,
                "reply matches no pending request: dropped"
            );
        }
    }

    /// Timeouts, reversal repeats, forgetting old answers.
    async fn on_tick(&mut self, io: &Ports<'_>, now: Instant) -> Result<(), GearError> {
        // Timeouts of forwarded authorizations and financials get a
        // reversal, durable before the terminal hears of the timeout.
        let mut reverse = Vec::new();
        while let Some((at, _, _)) = self.deadlines.front() {
            if *at > now {
                break;
            }
            let Some((_, issuer_key, seq)) = self.deadlines.pop_front() else {
                break;
            };
            if self.pending.get(&issuer_key).is_none_or(|p| p.seq != seq) {
                continue;
            }
            let Some(p) = self.take_pending(&issuer_key) else {
                continue;
            };
            self.counts.timeouts += 1;
            let a = self.answer(&p.request, &self.timeout_code, io.out);
            let class = mti_class(Self::mti(&p.request.data)).unwrap_or_default();
            if class == "010" || class == "020" {
                // Remembered (for duplicates) when it is given: once the
                // reversal is durable.
                reverse.push(ToReverse {
                    settles: (p.lsn != 0).then_some(issuer_key),
                    request: p.request,
                    target: p.target,
                    answer: Some((p.term_key, a)),
                });
            } else {
                self.remember(p.term_key, &a, now);
                io.out.emit(io.terminals, a).await;
            }
        }
        if !reverse.is_empty() {
            self.reverse(reverse, io, now).await?;
        }
        for r in self.reversals.due(now, self.reversal_retry) {
            let mut m = r.msg;
            if let Some(map) = m.data.as_map_mut() {
                map.insert(MTI_KEY, "0421");
            }
            m.id = io.out.new_id();
            m.meta.insert(META_TTL, self.reversal_hold.as_str());
            io.out.emit(io.issuers, m).await;
        }
        while let Some((at, _)) = self.seen_order.front() {
            if *at > now {
                break;
            }
            if let Some((_, k)) = self.seen_order.pop_front()
                && matches!(self.seen.get(&k), Some(Seen::Done(_)))
            {
                self.seen.remove(&k);
            }
        }
        self.give_back_memory();
        if let Some(log) = &self.log
            && now.duration_since(self.trimmed_at) >= TRIM_EVERY
        {
            self.trimmed_at = now;
            let oldest = [
                self.reversals.oldest_lsn(),
                self.pending
                    .values()
                    .map(|p| p.lsn)
                    .filter(|&l| l != 0)
                    .min(),
                self.awaiting
                    .iter()
                    .map(|r| r.pin_lsn)
                    .filter(|&l| l != 0)
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(fluxrig_wal::Lsn);
            if let Err(e) = log.trim(oldest) {
                tracing::warn!(error = %e, "cannot remove settled reversal log segments");
            }
        }
        Ok(())
    }

    /// Queues the 0420 reversals of forwarded requests that timed out:
    /// each is written to the log and waits in `awaiting` for its group
    /// commit (the loop does not wait); once durable, `release` answers its
    /// terminal and sends it.
    async fn reverse(
        &mut self,
        timed_out: Vec<ToReverse>,
        io: &Ports<'_>,
        now: Instant,
    ) -> Result<(), GearError> {
        for p in timed_out {
            let data = reversal_data(&self.spec, &p.request.data);
            let key = self.issuer_key("042", &data);
            let mut msg = FluxMsg::new(io.out.new_id(), data);
            msg.reference = Some(p.request.id);
            msg.trace = p.request.trace;
            msg.src = Some(io.out.ctx().entity);
            msg.ts = fluxrig_gear::now_ns();
            msg.meta.insert(META_TTL, self.reversal_hold.as_str());
            let msg = self.to_target(msg, p.target);
            let reversal = Reversal {
                key,
                target: p.target,
                msg,
                attempts: 1,
                next_at: now + self.reversal_retry,
                lsn: 0,
            };
            let Some(log) = &self.log else {
                self.send_reversal(reversal, p.answer, io, now).await;
                continue;
            };
            let commit = log
                .queued(
                    &reversal.key,
                    &self.targets[p.target],
                    &reversal.msg,
                    p.settles.as_deref(),
                )
                .await
                .map_err(GearError::Other)?;
            let lsn = commit.lsn().get();
            // Sent by `release` once durable; the loop goes on meanwhile.
            self.awaiting.push_back(Release {
                commit,
                held: Held::Reversal {
                    reversal: Box::new(Reversal { lsn, ..reversal }),
                    answer: p.answer,
                },
                pin_lsn: lsn,
            });
        }
        Ok(())
    }

    /// Answers a timed-out request's terminal (when there is one) and sends
    /// its reversal, now in the queue.
    async fn send_reversal(
        &mut self,
        r: Reversal,
        answer: Option<(String, FluxMsg)>,
        io: &Ports<'_>,
        now: Instant,
    ) {
        if let Some((term_key, answer)) = answer {
            self.remember(term_key, &answer, now);
            io.out.emit(io.terminals, answer).await;
        }
        let msg = r.msg.clone();
        self.reversals.push(r);
        self.counts.reversals += 1;
        io.out.emit(io.issuers, msg).await;
    }

    /// Opens the reversal log and queues again what it holds.
    fn restore(&mut self, now: Instant) -> Result<(), GearError> {
        let Some(dir) = self.log_dir.clone() else {
            return Ok(());
        };
        if self.log.is_some() {
            return Ok(());
        }
        let (log, recovered) = ReversalLog::open(&dir, self.log_sync).map_err(GearError::Other)?;
        self.unsettled = recovered.unsettled;
        let (mut queued, mut orphans) = (0, 0);
        for r in recovered.reversals {
            let Some(target) = self.targets.iter().position(|t| *t == r.target) else {
                orphans += 1;
                continue;
            };
            self.reversals.push(Reversal {
                key: r.key,
                target,
                msg: r.msg,
                // Sent before the restart: what goes now is a repeat (0421).
                attempts: 1,
                next_at: now,
                lsn: r.lsn.get(),
            });
            queued += 1;
        }
        if queued > 0 {
            tracing::info!(
                reversals = queued,
                "reversal queue restored: sending them again as 0421"
            );
        }
        if orphans > 0 {
            tracing::error!(
                reversals = orphans,
                "queued reversals name targets no longer configured: kept in the log, not sent"
            );
        }
        self.log = Some(log);
        Ok(())
    }

    /// Reverses the forwards the log held unanswered at start: their
    /// terminals never heard the issuer's answer (the reply is released only
    /// once its record is durable), so whatever the issuer decided is
    /// undone. Only authorizations and financials are reversed.
    async fn reverse_unsettled(&mut self, io: &Ports<'_>, now: Instant) -> Result<(), GearError> {
        let unsettled = std::mem::take(&mut self.unsettled);
        if unsettled.is_empty() {
            return Ok(());
        }
        let (mut reversible, mut others, mut orphans) = (Vec::new(), 0, 0);
        for u in unsettled {
            let class = mti_class(Self::mti(&u.data)).unwrap_or_default();
            if class != "010" && class != "020" {
                others += 1;
                continue;
            }
            let Some(target) = self.targets.iter().position(|t| *t == u.target) else {
                orphans += 1;
                continue;
            };
            let mut request = FluxMsg::new(io.out.new_id(), u.data);
            request.src = Some(io.out.ctx().entity);
            reversible.push(ToReverse {
                request,
                target,
                settles: Some(u.key),
                answer: None,
            });
        }
        if !reversible.is_empty() {
            tracing::warn!(
                requests = reversible.len(),
                "requests forwarded before the restart were never answered to their terminals: reversing them (0420)"
            );
            self.reverse(reversible, io, now).await?;
        }
        if others > 0 {
            tracing::info!(
                requests = others,
                "requests forwarded before the restart were never answered: not reversible, left to their terminals"
            );
        }
        if orphans > 0 {
            tracing::error!(
                requests = orphans,
                "unanswered requests name targets no longer configured: not reversed"
            );
        }
        Ok(())
    }

    fn next_wake(&mut self) -> Instant {
        let far = Instant::now() + StdDuration::from_hours(1);
        [
            self.deadlines.front().map(|d| d.0),
            self.reversals.next_due(),
            self.seen_order.front().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }
}

/// The gear's output ports.
struct Ports<'a> {
    out: &'a Outputs,
    issuers: PortRef,
    terminals: PortRef,
}

impl Gear for ConductorGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let (Some(issuers), Some(terminals)) = (io.port("issuers"), io.port("terminals"))
            else {
                return Err(GearError::Other("conductor ports missing".to_owned()));
            };
            self.restore(Instant::now())?;
            {
                let (_, out) = io.split();
                let ports = Ports {
                    out,
                    issuers,
                    terminals,
                };
                self.reverse_unsettled(&ports, Instant::now()).await?;
            }
            let mut last = self.counts;
            let mut report = tokio::time::interval(StdDuration::from_secs(10));
            loop {
                let wake = self.next_wake();
                let (mut input, out) = io.split();
                let ports = Ports {
                    out,
                    issuers,
                    terminals,
                };
                // Unbiased: neither a burst of input nor a backlog of due
                // reversals starves the other.
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {
                        self.on_tick(&ports, Instant::now()).await?;
                    }
                    first = first_commit(&mut self.awaiting), if !self.awaiting.is_empty() => {
                        self.release(first, &ports, Instant::now()).await?;
                    }
                    _ = report.tick() => {
                        if self.counts != last {
                            last = self.counts;
                            let c = self.counts;
                            tracing::info!(
                                forwarded = c.forwarded, replied = c.replied, timeouts = c.timeouts,
                                no_route = c.no_route, duplicates = c.duplicates, unmatched = c.unmatched,
                                reversals = c.reversals, reversals_acked = c.reversals_acked,
                                reversals_queued = self.reversals.len(), busy = c.busy,
                                failovers = c.failovers,
                                "conductor"
                            );
                        }
                    }
                    m = input.recv() => {
                        let Some(msg) = m else { break };
                        let now = Instant::now();
                        let mti = Self::mti(&msg.data);
                        if msg.meta.get("error.reason").is_some() && msg.meta.get(META_TARGET).is_some() {
                            self.on_send_failure(msg, &ports, now).await?;
                        } else if is_response(mti) {
                            self.on_response(msg, &ports, now).await?;
                        } else {
                            self.on_request(msg, &ports, now).await?;
                        }
                    }
                }
            }
            let (_, out) = io.split();
            let ports = Ports {
                out,
                issuers,
                terminals,
            };
            self.release_all(&ports).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::{TestKit, TestRun};
    use fluxrig_iso8583::{MessageBuilder, to_value};
    use fluxrig_msg::FluxId;

    use super::super::reversal_log::{LogRecord, read_records};
    use super::*;

    const CONFIG: &str =
        "routes:\n  - {pan_prefix: ['4'], to: visa}\ngroups:\n  visa: {targets: [a]}\n";

    /// Runs the conductor with `config` over `inputs`, its data (the
    /// reversal log) under `dir`; the run must end well.
    async fn run_at(dir: &std::path::Path, config: &str, inputs: Vec<FluxMsg>) -> TestRun {
        let kind = Typed::<Conductor>::new();
        let run = TestKit::new(&kind, config)
            .base_dir(dir)
            .inputs(inputs)
            .run()
            .await
            .unwrap();
        assert_eq!(run.result, Ok(()));
        run
    }

    /// `CONFIG` + `extra` over `inputs`, replies going out as they come
    /// (durable replies: their own tests), under a temporary data dir.
    async fn run_plain(extra: &str, inputs: Vec<FluxMsg>) -> TestRun {
        let dir = tempfile::tempdir().unwrap();
        run_at(
            dir.path(),
            &format!("{CONFIG}durable_replies: false\n{extra}"),
            inputs,
        )
        .await
    }

    /// A decoded message with `meta`.
    fn msg(
        mti: &str,
        pan: &str,
        stan: &str,
        terminal: &str,
        code: Option<&str>,
        meta: &[(&str, &str)],
    ) -> FluxMsg {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut b = MessageBuilder::new();
        b.set_mti(mti)
            .set(2, pan)
            .set(3, "000000")
            .set(4, "000000000100")
            .set(7, "1127101530")
            .set(11, stan)
            .set(41, terminal)
            .set(49, "978");
        if let Some(c) = code {
            b.set(39, c);
        }
        let raw = spec.encode_to_vec(&b).unwrap();
        let mut m = FluxMsg::new(FluxId::default(), to_value(&spec.decode(&raw).unwrap()));
        for (k, v) in meta {
            m.meta.insert(*k, *v);
        }
        m
    }

    /// The pending table after an overload (2,000 requests at once: 3,584
    /// slots of whole requests, over a megabyte) is given back once they
    /// are answered; a table still a third used, or small, is kept.
    #[test]
    fn tables_shrink_by_their_bytes() {
        assert!(size_of::<(String, Pending)>() * 3584 > 1 << 20);
        assert!(oversized::<(String, Pending)>(3584, 0));
        assert!(oversized::<(String, Pending)>(3584, 100));
        assert!(!oversized::<(String, Pending)>(3584, 1200));
        assert!(!oversized::<(String, Pending)>(64, 0));
        assert!(!oversized::<(String, Seen)>(1024, 0));
    }

    /// Issuer `a`'s 0110 for a Visa card of `terminal`.
    fn reply_from_a(terminal: &str, stan: &str, code: &str) -> FluxMsg {
        msg(
            "0110",
            "4111111111111111",
            stan,
            terminal,
            Some(code),
            &[(META_TARGET, "a")],
        )
    }

    fn field<'m>(m: &'m FluxMsg, path: &[&str]) -> Option<&'m str> {
        path.iter()
            .try_fold(&m.data, |v, k| v.get(k))
            .and_then(Value::as_str)
    }

    #[test]
    fn a_reversal_carries_the_original_data_elements() {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut req = msg("0100", "4111111111111111", "000123", "TERM0001", None, &[]).data;
        let de90 = ["0100", "000123", "1127101530", "00000000000", "00000000000"].concat();
        assert_eq!(original_data(spec, &req), Some((90, de90)));
        set_element(spec, &mut req, 32, Value::text("123456"));
        let (n, de90) = original_data(spec, &req).unwrap();
        assert_eq!((n, de90.len()), (90, 42));
        assert_eq!(&de90[20..31], "00000123456");
    }

    #[test]
    fn a_reversal_leaves_out_track_pin_and_response_code() {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut req = msg(
            "0100",
            "4111111111111111",
            "000123",
            "TERM0001",
            Some("00"),
            &[],
        )
        .data;
        set_element(spec, &mut req, 35, Value::text("4111111111111111=2812101"));
        set_element(spec, &mut req, 52, Value::text("0123456789ABCDEF"));
        let rev = reversal_data(spec, &req);
        assert_eq!(rev.get(MTI_KEY).and_then(Value::as_str), Some("0420"));
        for n in [35, 39, 52] {
            assert!(get_element(spec, &rev, n).is_none(), "DE {n} in {rev:?}");
        }
        for n in [2, 4, 11, 41, 90] {
            assert!(get_element(spec, &rev, n).is_some(), "no DE {n} in {rev:?}");
        }
    }

    #[test]
    fn bin_ranges_compare_the_leading_digits_as_numbers() {
        let r = BinRange::parse("222100-272099").unwrap();
        assert!(r.contains("2221000000000009"));
        assert!(r.contains("2720990000000000"));
        assert!(!r.contains("2721000000000000"));
        assert!(!r.contains("5555555555554444"));
        assert!(!r.contains("22210"), "shorter than the range");
        assert!(!r.contains("22a1000000000009"));
        for bad in [
            "4000-49999",
            "400000",
            "49-40",
            "4x-49",
            "-",
            "12345678901234567890-12345678901234567890",
        ] {
            assert!(BinRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn replies_reach_only_their_terminal_and_duplicates_are_not_forwarded() {
        let visa = "4111111111111111";
        let inputs = vec![
            msg(
                "0100",
                visa,
                "000001",
                "TERM0001",
                None,
                &[(META_CONN, "1")],
            ),
            // Same STAN and time, another terminal: another transaction.
            msg(
                "0100",
                visa,
                "000001",
                "TERM0002",
                None,
                &[(META_CONN, "2")],
            ),
            reply_from_a("TERM0002", "000001", "00"),
            // From a target the request did not go to: dropped.
            msg(
                "0110",
                visa,
                "000001",
                "TERM0001",
                Some("00"),
                &[(META_TARGET, "b")],
            ),
            reply_from_a("TERM0001", "000001", "51"),
            // A duplicate of an answered request: the same answer, to its own connection.
            msg(
                "0100",
                visa,
                "000001",
                "TERM0001",
                None,
                &[(META_CONN, "3")],
            ),
            msg(
                "0100",
                "6011111111111117",
                "000002",
                "TERM0001",
                None,
                &[(META_CONN, "5")],
            ),
            // A late copy of a reply already delivered: dropped.
            reply_from_a("TERM0001", "000001", "00"),
            msg(
                "0100",
                visa,
                "000003",
                "TERM0001",
                None,
                &[(META_CONN, "1")],
            ),
            // A duplicate while the original is in flight: 94.
            msg(
                "0100",
                visa,
                "000003",
                "TERM0001",
                None,
                &[(META_CONN, "4")],
            ),
            // A terminal's echo is answered here.
            msg(
                "0800",
                visa,
                "000004",
                "TERM0001",
                None,
                &[(META_CONN, "1")],
            ),
            // So is an issuer's, on its own pool.
            msg(
                "0800",
                visa,
                "000005",
                "TERM0001",
                None,
                &[(META_TARGET, "a")],
            ),
            // An issuer's other requests are not switched.
            msg(
                "0100",
                visa,
                "000006",
                "TERM0001",
                None,
                &[(META_TARGET, "a")],
            ),
        ];
        let run = run_plain("", inputs).await;

        let fwd = &run.outputs["issuers"];
        let fwd_keys: Vec<_> = fwd[..3]
            .iter()
            .map(|m| (field(m, &["trace", "stan"]), field(m, &["terminal", "id"])))
            .collect();
        assert_eq!(
            fwd_keys,
            [
                (Some("000001"), Some("TERM0001")),
                (Some("000001"), Some("TERM0002")),
                (Some("000003"), Some("TERM0001")),
            ]
        );
        assert!(
            fwd.iter()
                .all(|m| m.meta.get(META_TARGET) == Some("a") && m.meta.get(META_CONN).is_none())
        );
        assert_eq!(fwd.len(), 4);
        assert_eq!(field(&fwd[3], &["mti"]), Some("0810"));
        assert_eq!(run.outputs["error"].len(), 1);

        let replies: Vec<_> = run.outputs["terminals"]
            .iter()
            .map(|m| {
                (
                    m.meta.get(META_CONN).unwrap(),
                    field(m, &["mti"]).unwrap(),
                    field(m, &["terminal", "id"]).unwrap_or("-"),
                    field(m, &["response", "code"]).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            replies,
            [
                ("2", "0110", "TERM0002", "00"),
                ("1", "0110", "TERM0001", "51"),
                ("3", "0110", "TERM0001", "51"),
                ("5", "0110", "TERM0001", "15"),
                ("4", "0110", "TERM0001", "94"),
                ("1", "0810", "TERM0001", "00"),
            ]
        );
    }

    #[tokio::test]
    async fn beyond_max_pending_a_request_is_declined_busy_not_forwarded() {
        let visa = "4111111111111111";
        let req = |stan: &str, conn: &str| {
            msg("0100", visa, stan, "TERM0001", None, &[(META_CONN, conn)])
        };
        let inputs = vec![
            req("000001", "1"),
            req("000002", "2"),
            // Two in flight: the third is declined at once.
            req("000003", "3"),
            reply_from_a("TERM0001", "000001", "00"),
            // One answered: room again.
            req("000004", "4"),
        ];
        let run = run_plain("max_pending: 2\nbusy_code: '96'\n", inputs).await;
        let forwarded: Vec<_> = run.outputs["issuers"]
            .iter()
            .map(|m| field(m, &["trace", "stan"]).unwrap())
            .collect();
        assert_eq!(forwarded, ["000001", "000002", "000004"]);
        let replies: Vec<_> = run.outputs["terminals"]
            .iter()
            .map(|m| {
                (
                    m.meta.get(META_CONN).unwrap(),
                    field(m, &["response", "code"]).unwrap(),
                )
            })
            .collect();
        assert_eq!(replies, [("3", "96"), ("1", "00")]);
    }

    #[test]
    fn max_pending_of_zero_and_a_short_reversal_hold_are_config_issues() {
        let kind = Typed::<Conductor>::new();
        for (extra, key) in [
            ("max_pending: 0\n", "max_pending"),
            ("reversal_retry: 10s\nreversal_hold: 20s\n", "reversal_hold"),
        ] {
            let node = fluxrig_config::parse(&format!("{CONFIG}{extra}")).unwrap();
            let err = fluxrig_gear::GearType::prepare(&kind, &node, &CheckContext::default())
                .unwrap_err();
            assert!(err.iter().any(|e| e.to_string().contains(key)), "{err:?}");
        }
        let node = fluxrig_config::parse(&format!(
            "{CONFIG}reversal_retry: 10s\nreversal_hold: 21s\n"
        ))
        .unwrap();
        assert!(fluxrig_gear::GearType::prepare(&kind, &node, &CheckContext::default()).is_ok());
    }

    #[tokio::test]
    async fn a_durable_reply_has_its_record_and_an_unanswered_forward_is_reversed_after_a_restart()
    {
        let visa = "4111111111111111";
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("conductor/under_test/reversals");
        let inputs = vec![
            msg(
                "0100",
                visa,
                "000001",
                "TERM0001",
                None,
                &[(META_CONN, "1")],
            ),
            msg(
                "0100",
                visa,
                "000002",
                "TERM0001",
                None,
                &[(META_CONN, "1")],
            ),
            reply_from_a("TERM0001", "000001", "00"),
            // While the reply awaits its commit (or right after), a
            // duplicate gets the answer or 94, never a second forward.
            msg(
                "0100",
                visa,
                "000001",
                "TERM0001",
                None,
                &[(META_CONN, "2")],
            ),
        ];
        // A long timeout: STAN 000002 stays unanswered when the run ends,
        // as if the Rack died.
        let config = format!("{CONFIG}timeout: 1h\n");
        let run = run_at(dir.path(), &config, inputs).await;
        assert_eq!(run.outputs["issuers"].len(), 2);
        let replies: Vec<_> = run.outputs["terminals"]
            .iter()
            .map(|m| {
                (
                    m.meta.get(META_CONN).unwrap(),
                    field(m, &["trace", "stan"]).unwrap(),
                    field(m, &["response", "code"]).unwrap(),
                )
            })
            .collect();
        assert!(replies.contains(&("1", "000001", "00")), "{replies:?}");
        assert_eq!(replies.len(), 2, "{replies:?}");
        let answered: Vec<AnsweredRecord> = read_records(&log_dir)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                LogRecord::Answered(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert_eq!(
            (answered[0].mti.as_str(), answered[0].code.as_str()),
            ("0110", "00")
        );
        assert!(
            answered[0].terminal_key.contains("|000001|"),
            "{answered:?}"
        );

        // The restart: STAN 000002 was forwarded and never answered, so it
        // is reversed (0420, to the same target) before anything else.
        let run = run_at(dir.path(), &config, Vec::new()).await;
        let sent: Vec<_> = run.outputs["issuers"]
            .iter()
            .map(|m| {
                (
                    field(m, &["mti"]).unwrap(),
                    field(m, &["trace", "stan"]).unwrap(),
                    m.meta.get(META_TARGET).unwrap(),
                )
            })
            .collect();
        assert_eq!(sent, [("0420", "000002", "a")]);
        assert!(run.outputs["terminals"].is_empty());

        // Settled by its queued reversal: the next start does not reverse
        // it again (the reversal itself waits for its 0430, as 0421).
        let run = run_at(dir.path(), &config, Vec::new()).await;
        assert!(
            run.outputs["issuers"]
                .iter()
                .all(|m| field(m, &["mti"]) != Some("0420")),
        );
    }

    #[tokio::test]
    async fn durable_replies_need_durable_reversals() {
        let kind = Typed::<Conductor>::new();
        let dir = tempfile::tempdir().unwrap();
        let config = format!("{CONFIG}durable_reversals: false\ndurable_replies: true\n");
        let e = TestKit::new(&kind, &config)
            .base_dir(dir.path())
            .run()
            .await
            .unwrap_err();
        assert!(e.contains("durable_replies"), "{e}");
    }

    #[test]
    fn the_memory_queue_repeats_due_reversals_until_acknowledged() {
        let t0 = Instant::now();
        let retry = StdDuration::from_secs(5);
        let mut q = MemoryReversals::default();
        let rev = |key: &str, target: usize, secs: u64| Reversal {
            key: key.to_owned(),
            target,
            msg: FluxMsg::new(FluxId::default(), Value::Null),
            attempts: 1,
            next_at: t0 + StdDuration::from_secs(secs),
            lsn: secs,
        };
        q.push(rev("a", 0, 5));
        q.push(rev("b", 1, 3));
        q.push(rev("c", 0, 9));
        assert_eq!(q.next_due(), Some(t0 + StdDuration::from_secs(3)));
        assert_eq!(q.oldest_lsn(), Some(3));
        let due: Vec<_> = q
            .due(t0 + StdDuration::from_secs(6), retry)
            .into_iter()
            .map(|r| (r.key, r.attempts))
            .collect();
        assert_eq!(due, [("b".to_owned(), 2), ("a".to_owned(), 2)]);
        // A 0430 from another target acknowledges nothing.
        assert!(q.ack("a", 1).is_none());
        assert!(q.ack("a", 0).is_some());
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_due(), Some(t0 + StdDuration::from_secs(9)));
        let due: Vec<_> = q
            .due(t0 + StdDuration::from_secs(12), retry)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(due, ["c", "b"]);
        assert!(q.due(t0 + StdDuration::from_secs(12), retry).is_empty());
    }

    #[test]
    fn mti_classes_pair_requests_responses_and_repeats() {
        assert_eq!(mti_class("0100").as_deref(), Some("010"));
        assert_eq!(mti_class("0110").as_deref(), Some("010"));
        assert_eq!(mti_class("0420").as_deref(), Some("042"));
        assert_eq!(mti_class("0421").as_deref(), Some("042"));
        assert_eq!(mti_class("0430").as_deref(), Some("042"));
        assert_eq!(mti_class("01x0"), None);
        assert!(is_response("0110") && is_response("0430") && !is_response("0421"));
    }
}
