//! `coatcheck`: parks sensitive fields in the Rack's vault and restores
//! them; and [`CardDataAtRest`], what the Rack writes to disk instead of
//! card traffic in clear.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use fluxrig_config::Duration;
use fluxrig_gear::{
    AtRest, BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError,
    GearIo, GearKind, PortDir, PortSpec, Role,
};
use fluxrig_iso8583::mask::{mask_data, visit_classified};
use fluxrig_iso8583::{META_SPEC, Sensitivity, Spec};
use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{FluxMsg, Map, Value};
use fluxrig_vault::token::is_opaque;
use fluxrig_vault::{ParkOptions, Removed, Vault, VaultError, WhenFull as VaultWhenFull};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::iso8583::{default_spec, load_spec, registered_spec};

/// Meta key of a per-message time to live (a duration such as `30s`): for
/// the entries `park` makes, overriding the gear's `ttl`; on `restore`, the
/// entries restored are kept at least that long from now (a reversal the
/// conductor repeats until its issuer answers keeps its card data).
pub const META_TTL: &str = "coatcheck.ttl";
/// Meta key the at-rest form of a message carries: `raw` when its raw bytes
/// are sealed under the vault key, `dropped` when they had to be left out.
pub const META_SEALED: &str = "vault.sealed";

/// `park` or `restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace each selected value by a token; the value goes to the vault.
    Park,
    /// Put the values back in place of their tokens.
    Restore,
}

/// A class of sensitive data, as the dialect's `sensitivity` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Primary account numbers.
    Pan,
    /// Track data.
    Track,
    /// PIN blocks.
    Pin,
    /// Card verification values.
    Cvv,
    /// Other personal data.
    Pii,
}

impl Class {
    fn of(s: Sensitivity) -> Class {
        match s {
            Sensitivity::Pan => Class::Pan,
            Sensitivity::Track => Class::Track,
            Sensitivity::Pin => Class::Pin,
            Sensitivity::Cvv => Class::Cvv,
            Sensitivity::Pii => Class::Pii,
        }
    }
}

/// What `park` does when the vault holds `max_entries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The message goes to `error` (its card data is not passed on).
    #[default]
    Reject,
    /// The entry closest to expiry is evicted (reported on `expired`).
    EvictOldest,
}

fn all_classes() -> Vec<Class> {
    vec![Class::Pan, Class::Track, Class::Pin, Class::Cvv, Class::Pii]
}

fn default_ttl() -> Duration {
    Duration(StdDuration::from_mins(5))
}

fn default_max() -> NonZeroUsize {
    NonZeroUsize::new(1_000_000).unwrap_or(NonZeroUsize::MIN)
}

/// Config of the `coatcheck` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoatCheckConfig {
    /// `park` (values → vault, tokens in their place) or `restore`.
    pub mode: Mode,
    /// The dialect whose `sensitivity` classes select the fields (as in
    /// `iso8583_codec`).
    #[serde(default = "default_spec")]
    pub spec: String,
    /// The classes to park or restore (default: every class).
    #[serde(default = "all_classes")]
    pub classes: Vec<Class>,
    /// Explicit places instead of classes: data paths as the dialect lays
    /// them out (`card.pan`, `de48.sf3`, `de55.5A`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Classes that get format-preserving tokens (only `pan` has a format:
    /// BIN and last four kept, Luhn-valid); others get opaque tokens.
    #[serde(default)]
    pub format_preserving: Vec<Class>,
    /// How long a parked value stays in the vault (default 5 minutes); a
    /// message's meta `coatcheck.ttl` overrides it (on `restore` it extends
    /// the entries restored).
    #[serde(default = "default_ttl")]
    pub ttl: Duration,
    /// The most entries the Rack's vault may hold.
    #[serde(default = "default_max")]
    pub max_entries: NonZeroUsize,
    /// What `park` does when the vault is full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// `park` removes `raw` (the frame still holds the values in clear);
    /// the encoding side rebuilds it. Set to keep it.
    #[serde(default)]
    pub keep_raw: bool,
    /// How often `park` sweeps expired entries and picks up key changes.
    #[serde(default = "default_sweep")]
    pub sweep_every: Duration,
}

fn default_sweep() -> Duration {
    Duration(StdDuration::from_secs(1))
}

/// The `coatcheck` gear type.
#[derive(Debug)]
pub struct CoatCheck;

impl GearKind for CoatCheck {
    type Config = CoatCheckConfig;
    const NAME: &'static str = "coatcheck";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str =
        "Parks sensitive fields in the Rack's encrypted vault under tokens, or restores them";
    const DOCS: &'static str = "`park` replaces each selected value in `data` by a token and keeps the value in \
        the Rack's vault (`<data>/vault/`: AES-256-GCM under keys derived with HKDF from a master key, see \
        `docs/coat-check.md`); it drops `raw`, which still holds the values. `restore` puts the values back. \
        Fields are chosen by the dialect's `sensitivity` (`classes`, default all) or listed in `fields`. Tokens \
        are opaque (`ct_` + 32 hex) unless a class is in `format_preserving`: a PAN then keeps its length, \
        BIN and last four and stays Luhn-valid, the same PAN giving the same token under one key, so routing by \
        BIN still works. Entries live `ttl` (meta `coatcheck.ttl` overrides it per message; on `restore` the \
        same meta keeps the entries restored at least that long from now, as the conductor asks for the card \
        data of its reversals); `park` sweeps \
        them and emits one message per entry gone on `expired` when that port is wired (token, label, key id, \
        reason: `expired`, `key_retired` or `evicted`; never the value). A message that cannot be parked or restored (vault full, \
        token unknown or expired, key retired) goes to `error` with a reason naming the field, never a value; \
        on `park` its selected fields are masked first.";
    const EXAMPLE: &'static str = "- name: park\n  type: coatcheck\n  config: {mode: park, spec: iso8583-1987-ascii, format_preserving: [pan]}";

    fn ports(config: &CoatCheckConfig) -> Vec<PortSpec> {
        let mut p = PortSpec::defaults(Role::Transform);
        if config.mode == Mode::Park {
            p.push(PortSpec {
                name: "expired".into(),
                dir: PortDir::Out,
                required: false,
                doc: "one message per vault entry this gear parked that expired, was evicted or lost its key"
                    .into(),
            });
        }
        p
    }

    fn check(config: &CoatCheckConfig, ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(e) = load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir) {
            issues.push(ConfigIssue::new("spec", e));
        }
        if config.classes.is_empty() && config.fields.is_empty() {
            issues.push(ConfigIssue::new(
                "classes",
                "no class and no field: nothing to do",
            ));
        }
        if config.ttl.0.is_zero() {
            issues.push(ConfigIssue::new("ttl", "must be more than zero"));
        }
        issues
    }

    fn build(config: &CoatCheckConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let spec = load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir).map_err(BuildError)?;
        let vault = Vault::shared(&ctx.data_dir)
            .map_err(|e| BuildError(format!("cannot open the vault: {e}")))?;
        Ok(Box::new(CoatCheckGear {
            spec,
            vault,
            mode: config.mode,
            classes: config.classes.iter().copied().collect(),
            fields: config.fields.iter().cloned().collect(),
            fpt: config.format_preserving.iter().copied().collect(),
            ttl: config.ttl.0,
            max_entries: config.max_entries.get(),
            when_full: match config.when_full {
                WhenFull::Reject => VaultWhenFull::Reject,
                WhenFull::EvictOldest => VaultWhenFull::EvictOldest,
            },
            keep_raw: config.keep_raw,
            sweep_every: config.sweep_every.0.max(StdDuration::from_millis(10)),
            prefix: format!("{}:", ctx.gear),
        }))
    }
}

/// What [`CoatCheckGear::each`] calls per place: label, class (`None` for
/// an explicit field the dialect does not classify), value.
type PlaceFn<'a> = dyn FnMut(&str, Option<Sensitivity>, &mut Value) -> Result<(), String> + 'a;

struct CoatCheckGear {
    spec: Arc<Spec>,
    vault: Arc<Vault>,
    mode: Mode,
    classes: BTreeSet<Class>,
    fields: BTreeSet<String>,
    fpt: BTreeSet<Class>,
    ttl: StdDuration,
    max_entries: usize,
    when_full: VaultWhenFull,
    keep_raw: bool,
    sweep_every: StdDuration,
    /// Labels of this gear's entries start with it (`<gear>:`).
    prefix: String,
}

impl CoatCheckGear {
    fn selected(&self, label: &str, s: Sensitivity) -> bool {
        if self.fields.is_empty() {
            self.classes.contains(&Class::of(s))
        } else {
            self.fields.contains(label)
        }
    }

    /// Calls `f` on every selected place of `data`: classified ones, and the
    /// explicit `fields` the dialect does not classify.
    fn each(&self, data: &mut Value, f: &mut PlaceFn<'_>) -> Result<(), String> {
        let mut result = Ok(());
        // Places visited, to skip them among the explicit `fields` (only
        // kept when there are explicit fields).
        let mut seen = BTreeSet::new();
        let explicit = !self.fields.is_empty();
        visit_classified(&self.spec, data, &mut |label, s, v| {
            if result.is_ok() && self.selected(label, s) {
                if explicit {
                    seen.insert(label.to_owned());
                }
                result = f(label, Some(s), v);
            }
        });
        result?;
        for path in self.fields.iter().filter(|p| !seen.contains(*p)) {
            if let Some(v) = path
                .split('.')
                .try_fold(&mut *data, |v, k| v.as_map_mut()?.get_mut(k))
            {
                f(path, None, v)?;
            }
        }
        Ok(())
    }

    fn park(&self, msg: &mut FluxMsg, now: u64) -> Result<(), String> {
        let ttl = meta_ttl(msg)?.unwrap_or(self.ttl);
        let mut data = std::mem::replace(&mut msg.data, Value::Null);
        let r = self.each(&mut data, &mut |label, s, v| {
            let (text, plain) = match v {
                Value::Null => return Ok(()),
                Value::Text(t) if is_opaque(t) => return Ok(()), // parked already
                Value::Text(t) => (Some(t.to_string()), cbor::to_vec(v)),
                _ => (None, cbor::to_vec(v)),
            };
            let fpt = (s == Some(Sensitivity::Pan) && self.fpt.contains(&Class::Pan))
                .then_some(text.as_deref())
                .flatten();
            let label = format!("{}{label}", self.prefix);
            let opts = ParkOptions {
                ttl,
                format_preserving: fpt,
                label: &label,
                max_entries: self.max_entries,
                when_full: self.when_full,
            };
            let token = self
                .vault
                .park(&plain, &opts, now)
                .map_err(|e| format!("park {}: {e}", &label[self.prefix.len()..]))?;
            *v = Value::text(token);
            Ok(())
        });
        if r.is_err() {
            // What goes to `error` carries no card data.
            mask_data(&self.spec, &mut data);
            msg.raw = None;
        }
        msg.data = data;
        if !self.keep_raw {
            msg.raw = None;
        }
        r
    }

    fn restore(&self, msg: &mut FluxMsg, now: u64) -> Result<(), String> {
        let hold = meta_ttl(msg)?
            .map(|d| now.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        let unknown = |label: &str, e: VaultError| match e {
            VaultError::Unknown | VaultError::Expired => {
                format!("restore {label}: token unknown or expired")
            }
            e => format!("restore {label}: {e}"),
        };
        self.each(&mut msg.data, &mut |label, _, v| {
            let Value::Text(token) = v else {
                return Ok(());
            };
            if let Some(until) = hold {
                self.vault
                    .extend(token, until, now)
                    .map_err(|e| unknown(label, e))?;
            }
            let plain = self
                .vault
                .restore(token, now)
                .map_err(|e| unknown(label, e))?;
            *v = cbor::from_slice(&plain, Limits::DEFAULT)
                .map_err(|_| format!("restore {label}: stored value unreadable"))?;
            Ok(())
        })
    }

    async fn sweep(&self, io: &GearIo) {
        let vault = Arc::clone(&self.vault);
        let now = fluxrig_gear::now_ns();
        let swept = tokio::task::spawn_blocking(move || vault.sweep(now)).await;
        match swept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "vault sweep failed"),
            Err(e) => tracing::error!(error = %e, "vault sweep panicked"),
        }
        // Taken either way (the vault keeps them until taken); emitted only
        // when someone listens: unwired, they would all be dead letters.
        let removed = self.vault.take_removed(&self.prefix);
        let Some(port) = io.port("expired").filter(|&p| io.is_wired(p)) else {
            return;
        };
        for r in removed {
            let mut m = FluxMsg::new(io.new_id(), expiry_data(&r, &self.prefix));
            m.ts = now;
            io.emit(port, m).await;
        }
    }
}

/// The message's meta `coatcheck.ttl`, if it has one.
fn meta_ttl(msg: &FluxMsg) -> Result<Option<StdDuration>, String> {
    msg.meta
        .get(META_TTL)
        .map(|t| {
            t.parse::<Duration>()
                .map(|d| d.0)
                .map_err(|e| format!("meta {META_TTL}: {e}"))
        })
        .transpose()
}

fn expiry_data(r: &Removed, prefix: &str) -> Value {
    let mut m = Map::new();
    m.insert("token", Value::text(r.token.as_str()));
    m.insert(
        "field",
        Value::text(r.label.strip_prefix(prefix).unwrap_or(&r.label)),
    );
    m.insert("key_id", Value::int(r.key_id));
    m.insert("expires_ns", Value::int(r.expires_ns));
    m.insert("reason", Value::text(r.reason.as_str()));
    Value::Map(m)
}

impl Gear for CoatCheckGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let sweeping = self.mode == Mode::Park;
            let mut batch = Vec::with_capacity(64);
            loop {
                tokio::select! {
                    m = io.recv() => {
                        let Some(m) = m else { break };
                        batch.push(m);
                        io.try_recv_many(&mut batch, 63);
                        let now = fluxrig_gear::now_ns();
                        for mut msg in batch.drain(..) {
                            let r = match self.mode {
                                Mode::Park => self.park(&mut msg, now),
                                Mode::Restore => self.restore(&mut msg, now),
                            };
                            match r {
                                Ok(()) => io.send(msg).await,
                                Err(reason) => io.fail(msg, reason).await,
                            }
                        }
                    }
                    _ = tick.tick(), if sweeping => self.sweep(io).await,
                }
            }
            if sweeping {
                self.sweep(io).await;
            }
            Ok(())
        })
    }
}

/// The Rack's [`AtRest`] for card traffic: every message with an
/// `iso8583.*` meta key is written to disk with its `raw` bytes sealed
/// (AES-256-GCM under the vault's active key, bound to the message's
/// fluxID; meta `vault.sealed: raw`) and the fields its dialect classifies
/// masked in `data` (PAN as BIN and last four, the rest fully). If the vault
/// cannot be opened, `raw` is left out (`vault.sealed: dropped`); if the
/// dialect is unknown, `data` is left out too. Never in clear.
#[derive(Debug)]
pub struct CardDataAtRest {
    data_dir: PathBuf,
    vault: OnceLock<Option<Arc<Vault>>>,
}

impl CardDataAtRest {
    /// For the Rack whose data directory is `data_dir` (the vault is opened
    /// on the first card message).
    pub fn new(data_dir: &Path) -> CardDataAtRest {
        CardDataAtRest {
            data_dir: data_dir.to_path_buf(),
            vault: OnceLock::new(),
        }
    }

    fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault
            .get_or_init(|| match Vault::shared(&self.data_dir) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the vault: raw card frames are left out of the write-ahead log");
                    None
                }
            })
            .as_ref()
    }
}

fn is_card_traffic(msg: &FluxMsg) -> bool {
    msg.meta.iter().any(|(k, _)| k.starts_with("iso8583."))
}

impl AtRest for CardDataAtRest {
    fn protect(&self, msg: &FluxMsg) -> Option<FluxMsg> {
        if !is_card_traffic(msg) || msg.meta.get(META_SEALED).is_some() {
            return None;
        }
        let mut m = msg.clone();
        if let Some(raw) = m.raw.take() {
            let sealed = self
                .vault()
                .and_then(|v| v.seal(&m.id.get().to_be_bytes(), &raw).ok());
            match sealed {
                Some(s) => {
                    m.raw = Some(Bytes::from(s));
                    m.meta.insert(META_SEALED, "raw");
                }
                None => {
                    m.meta.insert(META_SEALED, "dropped");
                }
            }
        }
        if !m.data.is_null() {
            if let Some(spec) = m.meta.get(META_SPEC).and_then(registered_spec) {
                mask_data(&spec, &mut m.data);
            } else {
                m.data = Value::Null;
                m.meta.insert("vault.data", "dropped");
            }
        }
        Some(m)
    }

    fn recover(&self, mut msg: FluxMsg) -> FluxMsg {
        if msg.meta.get(META_SEALED) == Some("raw") {
            let id = msg.id.get().to_be_bytes();
            let raw = msg
                .raw
                .take()
                .and_then(|r| self.vault()?.unseal(&id, &r).ok());
            if raw.is_none() {
                tracing::warn!(id = %msg.id, "sealed raw bytes of a replayed message cannot be decrypted (key retired?)");
            }
            msg.raw = raw.map(Bytes::from);
            msg.meta.remove(META_SEALED);
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::TestKit;
    use fluxrig_iso8583::MessageBuilder;
    use fluxrig_msg::FluxId;

    use super::*;

    const PAN: &str = "4000001234567899";
    const TRACK: &str = "4000001234567899=29121010000000000000";
    const PIN: &str = "0123456789ABCDEF";

    fn decoded() -> FluxMsg {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut b = MessageBuilder::new();
        b.set_mti("0100")
            .set(2, PAN)
            .set(3, "000000")
            .set(4, "000000012500")
            .set(11, "004711")
            .set(35, TRACK)
            .set(41, "TERM0001")
            .set(52, PIN);
        let raw = spec.encode_to_vec(&b).unwrap();
        let m = spec.decode(&raw).unwrap();
        let mut msg = FluxMsg::new(FluxId::from_raw(42), fluxrig_iso8583::to_value(&m));
        msg.raw = Some(Bytes::from(raw));
        msg.meta.insert(META_SPEC, spec.hash().to_hex());
        msg
    }

    fn text(m: &FluxMsg, path: &[&str]) -> String {
        let mut v = &m.data;
        for k in path {
            v = v.get(k).unwrap();
        }
        v.as_str().unwrap().to_owned()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn park_then_restore_round_trips_and_nothing_is_left_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Typed::<CoatCheck>::new();
        let run = TestKit::new(&kind, "{mode: park, format_preserving: [pan]}")
            .base_dir(dir.path())
            .inputs(vec![decoded()])
            .run()
            .await
            .unwrap();
        let parked = run.outputs["out"][0].clone();
        let pan = text(&parked, &["card", "pan"]);
        assert_ne!(pan, PAN);
        assert_eq!((&pan[..6], &pan[12..]), (&PAN[..6], &PAN[12..]));
        assert!(is_opaque(&text(&parked, &["card", "track2"])));
        assert!(is_opaque(&text(&parked, &["pin", "block"])));
        assert!(parked.raw.is_none());
        let bytes = parked.to_cbor();
        for v in [PAN, TRACK, PIN] {
            assert!(!contains(&bytes, v));
        }

        let run = TestKit::new(&kind, "{mode: restore}")
            .base_dir(dir.path())
            .inputs(vec![parked])
            .run()
            .await
            .unwrap();
        let back = &run.outputs["out"][0];
        assert_eq!(text(back, &["card", "pan"]), PAN);
        assert_eq!(text(back, &["card", "track2"]), TRACK);
        assert_eq!(text(back, &["pin", "block"]), PIN);
        // The vault's files hold none of it.
        for f in std::fs::read_dir(dir.path().join("vault")).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            for v in [PAN, TRACK, PIN] {
                assert!(!contains(&bytes, v));
            }
        }
    }

    #[tokio::test]
    async fn an_unknown_token_fails_without_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Typed::<CoatCheck>::new();
        let run = TestKit::new(&kind, "{mode: restore}")
            .base_dir(dir.path())
            .inputs(vec![decoded()])
            .run()
            .await
            .unwrap();
        let failed = &run.outputs["error"];
        assert_eq!(failed.len(), 1);
        let reason = failed[0].meta.get("error.reason").unwrap();
        assert!(
            reason.contains("card.pan: token unknown or expired"),
            "{reason}"
        );
        assert!(!reason.contains(&PAN[6..12]));
    }

    /// Parks the track of one message that expires at once, under `dir`,
    /// with the output ports in `unwired` left without a wire.
    async fn park_expiring(dir: &Path, unwired: &[&str]) -> fluxrig_gear::testkit::TestRun {
        let kind = Typed::<CoatCheck>::new();
        let mut m = decoded();
        m.meta.insert(META_TTL, "1ns");
        let kit = TestKit::new(&kind, "{mode: park, classes: [track], sweep_every: 10ms}")
            .base_dir(dir)
            .inputs(vec![m])
            .cancel_after(StdDuration::from_millis(300));
        unwired
            .iter()
            .fold(kit, |kit, port| kit.unwired(port))
            .run()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn expired_entries_are_emitted_on_the_expired_port() {
        let dir = tempfile::tempdir().unwrap();
        let run = park_expiring(dir.path(), &[]).await;
        let token = text(&run.outputs["out"][0], &["card", "track2"]);
        let expired = &run.outputs["expired"];
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(
            expired[0].data.get("token").and_then(Value::as_str),
            Some(token.as_str())
        );
        assert_eq!(
            expired[0].data.get("field").and_then(Value::as_str),
            Some("card.track2")
        );
        assert_eq!(
            expired[0].data.get("reason").and_then(Value::as_str),
            Some("expired")
        );
    }

    #[tokio::test]
    async fn expiries_nobody_listens_to_are_not_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let run = park_expiring(dir.path(), &["expired"]).await;
        assert_eq!(run.outputs["out"].len(), 1);
        assert!(run.dead_letters.is_empty(), "{:?}", run.dead_letters);
        let vault = Vault::shared(dir.path()).unwrap();
        assert!(vault.is_empty());
        assert!(vault.take_removed("").is_empty(), "removals left behind");
    }

    #[test]
    fn at_rest_seals_raw_and_masks_data() {
        let dir = tempfile::tempdir().unwrap();
        let at_rest = CardDataAtRest::new(dir.path());
        let mut msg = decoded();
        // Registered as the codec gear would.
        let _ = load_spec("iso8583-1987-ascii", dir.path(), dir.path()).unwrap();
        msg.meta.insert("iso8583.conn", "7");
        let p = at_rest.protect(&msg).unwrap();
        let bytes = p.to_cbor();
        for v in [PAN, TRACK, PIN] {
            assert!(!contains(&bytes, v));
        }
        assert!(contains(&bytes, "400000******7899"));
        assert_eq!(p.meta.get(META_SEALED), Some("raw"));
        let back = at_rest.recover(p);
        assert_eq!(back.raw, msg.raw);
        // Not card traffic: untouched.
        let plain = FluxMsg::new(FluxId::from_raw(1), Value::text("x"));
        assert!(at_rest.protect(&plain).is_none());
    }
}
