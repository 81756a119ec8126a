//! `iso8583_io`: ISO 8583 over TCP, as a server (acquirer side: terminals
//! connect) or as a client pool (issuer side: we connect).
//!
//! One task owns each connection; the gear's main loop holds a bounded
//! writer handle per connection and never waits on one, and it keeps
//! draining its input while an emit waits for room, so a request/reply
//! cycle of wires cannot deadlock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fluxrig_config::Duration;
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, GearStats, Input, Outputs, PortDir, PortSpec, Role,
};
use fluxrig_iso8583::framing::{Framing, LengthPrefix};
use fluxrig_iso8583::net::{FrameReader, NetError};
use fluxrig_iso8583::{MessageBuilder, MtiEncoding, Spec};
use fluxrig_msg::{FluxMsg, Value};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{META_CONN, META_HEADER, META_PEER, META_TARGET, default_spec, hex, load_spec, unhex};

/// Server (terminals connect to us) or client (we connect to issuers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Acquirer side: listen; requests leave by `out`, replies come in by `in`.
    Server,
    /// Issuer side: a pool of connections per target; requests come in by
    /// `in`, replies leave by `out`.
    Client,
}

/// The length prefix of each frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Prefix {
    /// 2 bytes, binary, big endian (default).
    #[default]
    #[serde(rename = "2be")]
    Binary2Be,
    /// 2 bytes, binary, little endian.
    #[serde(rename = "2le")]
    Binary2Le,
    /// 4 ASCII decimal digits.
    #[serde(rename = "4ascii")]
    Ascii4,
}

/// An issuer-side target of the client pool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The name requests use in meta `iso8583.target` (and `conductor` groups).
    pub name: String,
    /// `host:port` to connect to.
    pub address: String,
    /// Connections kept open to it.
    #[serde(default = "one")]
    pub connections: NonZeroUsize,
}

fn one() -> NonZeroUsize {
    NonZeroUsize::MIN
}

fn default_max_frame() -> usize {
    8192
}

fn default_max_connections() -> usize {
    10_000
}

fn default_idle_timeout() -> Duration {
    Duration(StdDuration::from_mins(5))
}

fn default_echo() -> Duration {
    Duration(StdDuration::from_secs(30))
}

fn default_backoff() -> Duration {
    Duration(StdDuration::from_millis(100))
}

fn default_max_backoff() -> Duration {
    Duration(StdDuration::from_secs(5))
}

fn default_true() -> bool {
    true
}

/// TLS of the connections.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain this side presents: required for a server; for
    /// a client, its certificate for mTLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM CA certificates. Client: the CAs that sign the issuers'
    /// certificates (required). Server: when set, terminals must present a
    /// certificate signed by one of them (mTLS).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client: the name checked in the issuers' certificates (default: the
    /// IP address of each target, checked as such).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Config of the `iso8583_io` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Iso8583IoConfig {
    /// `server` (acquirer side) or `client` (issuer side).
    pub mode: IoMode,
    /// Server: the address to listen on (`127.0.0.1:8583`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Client: the targets to keep connections to.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Length prefix of each frame: `2be`, `2le` or `4ascii`.
    #[serde(default)]
    pub length_prefix: Prefix,
    /// Bytes of TPDU or network header after the prefix; kept bit-perfect
    /// (meta `iso8583.header`, hex) and written back on the reply.
    #[serde(default)]
    pub header_len: usize,
    /// Largest frame accepted or written (prefix excluded), in bytes. A
    /// connection sending a larger one is closed and counted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Server: most terminal connections at once (more wait to be accepted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Server: a terminal connection with no complete frame either way for
    /// this long (idle, or stalled inside a frame) is closed and counted;
    /// keep it above the time a reply may take (the conductor's timeout).
    /// `0s` keeps idle connections open forever.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Client: the dialect of the 0800 sign-on and echo messages.
    #[serde(default = "default_spec")]
    pub spec: String,
    /// Client: send a 0800 sign-on (DE 70 = 001) on each new connection.
    #[serde(default = "default_true")]
    pub sign_on: bool,
    /// Client: interval of 0800 echo keep-alives (DE 70 = 301); a connection
    /// that receives nothing for three intervals is closed and reconnected.
    /// `0s` turns both off.
    #[serde(default = "default_echo")]
    pub echo_interval: Duration,
    /// Client: wait before reconnecting; doubles up to `max_backoff`.
    #[serde(default = "default_backoff")]
    pub reconnect_backoff: Duration,
    /// Client: longest wait between reconnection attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// TLS (and mTLS) on every connection; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Iso8583IoConfig {
    fn framing(&self) -> Framing {
        Framing {
            prefix: match self.length_prefix {
                Prefix::Binary2Be => LengthPrefix::Binary2Be,
                Prefix::Binary2Le => LengthPrefix::Binary2Le,
                Prefix::Ascii4 => LengthPrefix::Ascii4,
            },
            header_len: self.header_len,
            max_frame: self.max_frame,
        }
    }
}

/// The `iso8583_io` gear type.
#[derive(Debug)]
pub struct Iso8583Io;

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address such as 127.0.0.1:8583"))
}

impl GearKind for Iso8583Io {
    type Config = Iso8583IoConfig;
    const NAME: &'static str = "iso8583_io";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str =
        "ISO 8583 over TCP: a server for terminals (acquirer side) or a client pool to issuers";
    const DOCS: &'static str = "Frames are a length prefix (`2be`, `2le` or `4ascii`), an optional header of \
        `header_len` bytes (TPDU, network header) and the message. Messages carry the message bytes in \
        `raw` (decode them with `iso8583_codec`); the header goes to meta `iso8583.header` (hex) and is \
        written back unchanged on the reply.\n\n\
        **Server** (`listen`): every terminal connection gets an id, in meta `iso8583.conn` (and the peer \
        address in `iso8583.peer`) of each request emitted on `out`. A message arriving on `in` is written \
        to the connection its `iso8583.conn` names, and only to it; when that connection is gone or is not \
        reading, the message goes to `error`.\n\n\
        **Client** (`targets`): keeps `connections` connections to each target, reconnecting with \
        exponential backoff, with a 0800 sign-on (DE 70 `001`) on connect and 0800 echoes (DE 70 `301`) \
        every `echo_interval`; their 0810 answers stay inside the gear. A connection that receives \
        nothing (no reply, no 0810) for three echo intervals is closed (logged, INFO) and reconnected, \
        so a dead issuer behind an open socket is noticed. A message on `in` goes to the \
        target named by meta `iso8583.target` (optional when there is one target), on its connections in \
        turn; with no connection up it goes to `error` (a `conductor` wired to it fails over). Replies \
        leave by `out` with `iso8583.target` and `iso8583.conn` set.\n\n\
        A frame over `max_frame` or with a bad length prefix closes that connection only; such closes are \
        counted and logged (WARN, without content). A terminal connection with no complete frame in \
        either direction for `idle_timeout` (idle, or stalled inside a frame) is closed, counted and logged \
        (INFO); keep it above the longest a reply may take.\n\n\
        **TLS** (`tls`, rustls): a server presents `cert`/`key` and, with `ca`, requires terminals to present \
        a certificate signed by it (mTLS); a client trusts `ca` and presents `cert`/`key` when given (mTLS). \
        Files are PEM, relative to the scenario.";
    const EXAMPLE: &'static str = "- name: terminals\n  type: iso8583_io\n  config: {mode: server, listen: 127.0.0.1:8583, length_prefix: 2be}\n- name: issuers\n  type: iso8583_io\n  config:\n    mode: client\n    targets: [{name: visa, address: 127.0.0.1:9583, connections: 2}]";

    fn ports(config: &Iso8583IoConfig) -> Vec<PortSpec> {
        let (in_doc, out_doc) = match config.mode {
            IoMode::Server => (
                "replies to terminals (meta `iso8583.conn` names the connection)",
                "requests from terminals",
            ),
            IoMode::Client => (
                "requests to issuers (meta `iso8583.target` names the target)",
                "replies from issuers",
            ),
        };
        vec![
            PortSpec {
                name: "in".into(),
                dir: PortDir::In,
                required: false,
                doc: in_doc.into(),
            },
            PortSpec::named_output("out", out_doc),
            PortSpec::error(),
        ]
    }

    fn check(config: &Iso8583IoConfig, ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let cap = config.framing().prefix.capacity();
        if config.max_frame > cap || config.max_frame <= config.header_len {
            issues.push(ConfigIssue::new(
                "max_frame",
                format!("must be above header_len and at most {cap} for this length prefix"),
            ));
        }
        if let Some(tls) = &config.tls {
            let need = match config.mode {
                IoMode::Server => [("cert", &tls.cert), ("key", &tls.key)],
                IoMode::Client => [("ca", &tls.ca), ("ca", &tls.ca)],
            };
            for (name, v) in need {
                if v.is_none() && !issues.iter().any(|i| i.path == format!("tls.{name}")) {
                    issues.push(ConfigIssue::new(
                        format!("tls.{name}"),
                        "required in this mode",
                    ));
                }
            }
            if tls.cert.is_some() != tls.key.is_some() {
                issues.push(ConfigIssue::new("tls", "`cert` and `key` go together"));
            }
            for (name, v) in [("cert", &tls.cert), ("key", &tls.key), ("ca", &tls.ca)] {
                if let Some(p) = v {
                    let path = if p.is_absolute() {
                        p.clone()
                    } else {
                        ctx.base_dir.join(p)
                    };
                    if !path.is_file() {
                        issues.push(ConfigIssue::new(
                            format!("tls.{name}"),
                            format!("no file {}", path.display()),
                        ));
                    }
                }
            }
            if config.mode == IoMode::Server && tls.server_name.is_some() {
                issues.push(ConfigIssue::new("tls.server_name", "only for a client"));
            }
        }
        match config.mode {
            IoMode::Server => match &config.listen {
                Some(l) => {
                    if let Err(e) = parse_addr(l) {
                        issues.push(ConfigIssue::new("listen", e));
                    }
                }
                None => issues.push(ConfigIssue::new("listen", "a server needs `listen`")),
            },
            IoMode::Client => {
                if config.targets.is_empty() {
                    issues.push(ConfigIssue::new(
                        "targets",
                        "a client needs at least one target",
                    ));
                }
                for (i, t) in config.targets.iter().enumerate() {
                    if let Err(e) = parse_addr(&t.address) {
                        issues.push(ConfigIssue::new(format!("targets[{i}].address"), e));
                    }
                    if config.targets[..i].iter().any(|o| o.name == t.name) {
                        issues.push(ConfigIssue::new(
                            format!("targets[{i}].name"),
                            format!("target `{}` is named twice", t.name),
                        ));
                    }
                }
                if let Err(e) = load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir) {
                    issues.push(ConfigIssue::new("spec", e));
                }
            }
        }
        issues
    }

    fn build(config: &Iso8583IoConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let framing = config.framing();
        match config.mode {
            IoMode::Server => {
                let addr =
                    parse_addr(config.listen.as_deref().unwrap_or_default()).map_err(BuildError)?;
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| BuildError(format!("cannot listen on {addr}: {e}")))?;
                let tls = match &config.tls {
                    Some(t) => Some(tls::acceptor(t, ctx).map_err(BuildError)?),
                    None => None,
                };
                Ok(Box::new(ServerGear {
                    addr,
                    tls,
                    listener: Some(l),
                    framing,
                    max_connections: config.max_connections.max(1),
                    idle_timeout: (!config.idle_timeout.0.is_zero())
                        .then_some(config.idle_timeout.0),
                    bad: Arc::default(),
                    idle: Arc::default(),
                }))
            }
            IoMode::Client => {
                let spec =
                    load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir).map_err(BuildError)?;
                let targets = config
                    .targets
                    .iter()
                    .map(|t| {
                        parse_addr(&t.address)
                            .map(|a| (Arc::<str>::from(t.name.as_str()), a, t.connections.get()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(BuildError)?;
                let tls = match &config.tls {
                    Some(t) => Some(tls::connector(t, ctx).map_err(BuildError)?),
                    None => None,
                };
                let server_name = config.tls.as_ref().and_then(|t| t.server_name.clone());
                Ok(Box::new(ClientGear {
                    tls,
                    server_name,
                    targets,
                    framing,
                    spec,
                    keepalive: KeepAlive {
                        sign_on: config.sign_on,
                        echo: config.echo_interval.get(),
                        backoff: config.reconnect_backoff.get(),
                        max_backoff: config.max_backoff.get(),
                    },
                    bad: Arc::default(),
                    dead: Arc::default(),
                }))
            }
        }
    }
}

/// What connection tasks tell the gear's main loop.
enum Event {
    /// A connection is up; its writer.
    Up {
        conn: u64,
        target: usize,
        writer: mpsc::Sender<Bytes>,
    },
    /// A frame arrived.
    Frame {
        conn: u64,
        peer: Arc<str>,
        header: Bytes,
        message: Bytes,
    },
    /// A connection is gone.
    Down { conn: u64 },
}

/// A connection's byte stream: TCP, or TLS over TCP.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Failures held while an emit waits; more go to the dead-letter log.
const MAX_QUEUED_FAILURES: usize = 4096;

/// How long an emit may still wait once the gear is told to stop.
const STOP_GRACE: StdDuration = StdDuration::from_secs(2);

/// How long a TLS handshake may take.
const HANDSHAKE: StdDuration = StdDuration::from_secs(10);

/// Decides whether a frame read is emitted (false: consumed by the gear).
type FrameFilter = dyn Fn(&[u8]) -> bool + Sync;

/// Frames written to one connection and not yet sent, at most.
const WRITER_QUEUE: usize = 1024;

/// When a connection counts as idle.
#[derive(Debug, Clone, Copy)]
enum Idle {
    /// Never closed for idleness.
    Never,
    /// No complete frame either way for this long (terminals).
    EitherWay(StdDuration),
    /// Nothing received for this long, whatever was sent (issuers: our
    /// echoes go out, nothing comes back).
    Received(StdDuration),
}

impl Idle {
    /// How long a connection may be idle, if it may not be forever.
    fn limit(self) -> Option<StdDuration> {
        match self {
            Idle::Never => None,
            Idle::EitherWay(d) | Idle::Received(d) => Some(d),
        }
    }
}

/// Runs one connection: frames read go to `events`, frames from its
/// writer queue are written; counts the connection and its bytes in the
/// gear's stats. Returns why it ended (`Ok` for a clean close).
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: Box<dyn Stream>,
    conn: u64,
    peer: Arc<str>,
    framing: Framing,
    events: &mpsc::Sender<Event>,
    mut writes: mpsc::Receiver<Bytes>,
    filter: Option<&FrameFilter>,
    stats: &GearStats,
    idle: Idle,
) -> Result<(), NetError> {
    /// Counts the connection open while it lives.
    struct Open<'a>(&'a GearStats);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.connection_closed();
        }
    }
    stats.connection_opened();
    let _open = Open(stats);
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new(rd, framing);
    let mut out = Vec::with_capacity(4096);
    // One timer for the connection's life: frames only note the time, and
    // when the timer fires it is moved to the last frame's time + `idle`
    // (re-arming a timer per frame costs more than the frame).
    let mut last_frame = tokio::time::Instant::now();
    let timer = tokio::time::sleep(idle.limit().unwrap_or(StdDuration::from_hours(24 * 365)));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer, if idle.limit().is_some() => {
                let limit = idle.limit().unwrap_or(StdDuration::MAX);
                let due = last_frame + limit;
                if due <= tokio::time::Instant::now() {
                    return Err(NetError::Idle(limit));
                }
                timer.as_mut().reset(due);
            }
            frame = reader.next_frame() => {
                let Some(f) = frame? else { return Ok(()) };
                last_frame = tokio::time::Instant::now();
                let mut batch = vec![(Bytes::copy_from_slice(f.header), Bytes::copy_from_slice(f.message))];
                while let Some(f) = reader.buffered_frame()? {
                    batch.push((Bytes::copy_from_slice(f.header), Bytes::copy_from_slice(f.message)));
                }
                for (header, message) in batch {
                    stats.add_bytes_in((header.len() + message.len() + framing.prefix.width()) as u64);
                    if filter.is_some_and(|keep| !keep(&message)) {
                        continue;
                    }
                    let ev = Event::Frame { conn, peer: Arc::clone(&peer), header, message };
                    if events.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
            }
            w = writes.recv() => {
                let Some(first) = w else { return Ok(()) };
                out.clear();
                out.extend_from_slice(&first);
                while let Ok(more) = writes.try_recv() {
                    out.extend_from_slice(&more);
                    if out.len() > 64 * 1024 {
                        break;
                    }
                }
                wr.write_all(&out).await?;
                stats.add_bytes_out(out.len() as u64);
                if matches!(idle, Idle::EitherWay(_)) {
                    last_frame = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// Counts and logs a connection closed for a bad frame, for being idle
/// (`idle`: the counter of those) or for an I/O error.
fn closed(bad: &AtomicU64, idle: &AtomicU64, side: &str, peer: &str, r: &Result<(), NetError>) {
    match r {
        Ok(()) => tracing::debug!(%peer, "{side} connection closed"),
        Err(e @ NetError::Idle(_)) => {
            let n = idle.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(%peer, reason = %e, closed_idle = n, "{side} connection closed: idle");
        }
        Err(NetError::Frame(e)) => {
            let n = bad.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(%peer, reason = %e, closed_for_bad_frames = n, "{side} connection closed: bad frame");
        }
        Err(e) => tracing::debug!(%peer, reason = %e, "{side} connection ended"),
    }
}

/// Something the gear's main loop emits.
enum Outgoing {
    /// A message for `out`.
    Send(FluxMsg),
    /// A message that failed, for `error` (or the dead-letter log).
    Fail(FluxMsg, String),
}

/// Emits `first` while still draining the input into `on_input` (whose
/// failures are emitted the same way, in turn), so the gear never stops
/// taking replies or requests because an output is full: in a cycle of
/// wires that would be a deadlock.
async fn emit_draining<F>(
    out: &Outputs,
    input: &mut Input<'_>,
    input_open: &mut bool,
    first: Outgoing,
    mut on_input: F,
) where
    F: FnMut(FluxMsg) -> Option<(FluxMsg, String)>,
{
    // When the gear is told to stop, downstream may stop taking messages
    // (a cycle drains in no particular order): wait a little, then give up,
    // loudly, rather than hold the Rack's stop forever.
    let grace = async {
        out.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::pin!(grace);
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(item) = queue.pop_front() {
        let emit = async {
            match item {
                Outgoing::Send(m) => out.send(m).await,
                Outgoing::Fail(m, reason) => out.fail(m, reason).await,
            }
        };
        tokio::pin!(emit);
        loop {
            tokio::select! {
                biased;
                () = &mut emit => break,
                () = &mut grace => {
                    tracing::warn!(
                        dropped = queue.len() + 1,
                        "stopping: messages downstream did not take were dropped"
                    );
                    return;
                }
                m = input.recv(), if *input_open => match m {
                    Some(m) => match on_input(m) {
                        None => {}
                        // Bounded: past the limit, failures skip the error port.
                        Some((m, r)) if queue.len() >= MAX_QUEUED_FAILURES => out.fail_now(m, r),
                        Some((m, r)) => queue.push_back(Outgoing::Fail(m, r)),
                    },
                    None => *input_open = false,
                },
            }
        }
    }
}

fn frame_msg(out: &Outputs, header: &Bytes, message: Bytes, conn: u64, peer: &str) -> FluxMsg {
    let mut msg = FluxMsg::new(out.new_id(), Value::Null);
    msg.src = Some(out.ctx().entity);
    msg.ts = fluxrig_gear::now_ns();
    msg.raw = Some(message);
    msg.meta.insert(META_CONN, conn.to_string());
    msg.meta.insert(META_PEER, peer);
    if !header.is_empty() {
        msg.meta.insert(META_HEADER, hex(header));
    }
    msg
}

/// The frame of an outgoing message: prefix, header (from meta), `raw`.
fn outgoing(framing: &Framing, msg: &FluxMsg) -> Result<Bytes, String> {
    let raw = msg
        .raw
        .as_deref()
        .ok_or("no raw bytes to send (encode first)")?;
    let header = match msg.meta.get(META_HEADER) {
        Some(h) => unhex(h).ok_or("meta iso8583.header is not hex")?,
        None => vec![0; framing.header_len],
    };
    if header.len() != framing.header_len {
        return Err(format!(
            "header of {} bytes where the framing has {}",
            header.len(),
            framing.header_len
        ));
    }
    let mut buf = Vec::with_capacity(raw.len() + header.len() + 4);
    framing
        .write(&header, raw, &mut buf)
        .map_err(|e| e.to_string())?;
    Ok(Bytes::from(buf))
}

// ---------------------------------------------------------------------------
// server

struct ServerGear {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: Option<std::net::TcpListener>,
    framing: Framing,
    max_connections: usize,
    idle_timeout: Option<StdDuration>,
    bad: Arc<AtomicU64>,
    /// Connections closed by `idle_timeout`.
    idle: Arc<AtomicU64>,
}

/// Writes a reply to the connection it names; the reason when it cannot.
fn reply(
    framing: &Framing,
    conns: &HashMap<u64, mpsc::Sender<Bytes>>,
    msg: FluxMsg,
) -> Option<(FluxMsg, String)> {
    let Some(conn) = msg.meta.get(META_CONN).and_then(|c| c.parse::<u64>().ok()) else {
        return Some((msg, "no meta iso8583.conn: which terminal?".to_owned()));
    };
    let Some(w) = conns.get(&conn) else {
        return Some((msg, format!("terminal connection {conn} is closed")));
    };
    let frame = match outgoing(framing, &msg) {
        Ok(f) => f,
        Err(e) => return Some((msg, e)),
    };
    match w.try_send(frame) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => {
            Some((msg, format!("terminal connection {conn} is not reading")))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Some((msg, format!("terminal connection {conn} is closed")))
        }
    }
}

impl ServerGear {
    async fn serve(&mut self, io: &mut GearIo) -> Result<(), GearError> {
        let std_listener = match self.listener.take() {
            Some(l) => l,
            None => std::net::TcpListener::bind(self.addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| GearError::io(format!("listening on {}", self.addr), e))?,
        };
        let listener = TcpListener::from_std(std_listener)
            .map_err(|e| GearError::io(format!("listening on {}", self.addr), e))?;
        tracing::info!(listen = %self.addr, "iso8583 server listening");
        let (events_tx, mut events) = mpsc::channel::<Event>(4096);
        let mut conns: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut next_conn: u64 = 0;
        let cancel = io.ctx().cancel.clone();
        let (mut input, out) = io.split();
        let mut input_open = true;
        let framing = self.framing;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                m = input.recv(), if input_open => match m {
                    Some(m) => match reply(&framing, &conns, m) {
                        None => out.delivered(1).await?,
                        Some((m, reason)) => {
                            let mut done = 0;
                            emit_draining(out, &mut input, &mut input_open, Outgoing::Fail(m, reason), |m| {
                                let r = reply(&framing, &conns, m);
                                if r.is_none() {
                                    done += 1;
                                }
                                r
                            })
                            .await;
                            out.delivered(done).await?;
                        }
                    },
                    None => input_open = false,
                },
                accepted = listener.accept(), if conns.len() < self.max_connections => {
                    let Ok((stream, peer)) = accepted else { continue };
                    next_conn += 1;
                    let conn = next_conn;
                    let (wtx, wrx) = mpsc::channel(WRITER_QUEUE);
                    conns.insert(conn, wtx);
                    let events = events_tx.clone();
                    let bad = Arc::clone(&self.bad);
                    let idle_closes = Arc::clone(&self.idle);
                    let idle = self.idle_timeout;
                    let tls = self.tls.clone();
                    let stats = Arc::clone(&out.ctx().stats);
                    tasks.spawn(async move {
                        let peer: Arc<str> = peer.to_string().into();
                        let _ = stream.set_nodelay(true);
                        let stream: Box<dyn Stream> = match tls {
                            None => Box::new(stream),
                            Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => Box::new(s),
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, reason = %e, "terminal TLS handshake failed");
                                    let _ = events.send(Event::Down { conn }).await;
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!(%peer, "terminal TLS handshake timed out");
                                    let _ = events.send(Event::Down { conn }).await;
                                    return;
                                }
                            },
                        };
                        let idle = idle.map_or(Idle::Never, Idle::EitherWay);
                        let r = connection(stream, conn, Arc::clone(&peer), framing, &events, wrx, None, &stats, idle).await;
                        closed(&bad, &idle_closes, "terminal", &peer, &r);
                        let _ = events.send(Event::Down { conn }).await;
                    }.in_current_span());
                }
                ev = events.recv() => match ev {
                    Some(Event::Frame { conn, peer, header, message }) => {
                        let msg = frame_msg(out, &header, message, conn, &peer);
                        let mut done = 0;
                        emit_draining(out, &mut input, &mut input_open, Outgoing::Send(msg), |m| {
                            let r = reply(&framing, &conns, m);
                            if r.is_none() {
                                done += 1;
                            }
                            r
                        })
                        .await;
                        out.delivered(done).await?;
                    }
                    Some(Event::Down { conn }) => {
                        conns.remove(&conn);
                    }
                    Some(Event::Up { .. }) | None => {}
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        Ok(())
    }
}

impl Gear for ServerGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(self.serve(io))
    }
}

// ---------------------------------------------------------------------------
// client

#[derive(Debug, Clone, Copy)]
struct KeepAlive {
    sign_on: bool,
    echo: StdDuration,
    backoff: StdDuration,
    max_backoff: StdDuration,
}

struct ClientGear {
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: Option<String>,
    targets: Vec<(Arc<str>, SocketAddr, usize)>,
    framing: Framing,
    spec: Arc<Spec>,
    keepalive: KeepAlive,
    bad: Arc<AtomicU64>,
    /// Connections closed after three echo intervals with nothing received.
    dead: Arc<AtomicU64>,
}

/// MMDDhhmmss of now (UTC), for DE 7 of network messages.
fn transmission_time() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A framed 0800 with DE 70 = `code`.
fn network_message(spec: &Spec, framing: &Framing, stan: u32, code: &str) -> Option<Bytes> {
    let de7 = transmission_time();
    let de11 = format!("{:06}", stan % 1_000_000);
    let mut b = MessageBuilder::new();
    b.set_mti("0800").set(7, &de7).set(11, &de11).set(70, code);
    let msg = spec.encode_to_vec(&b).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 8);
    framing
        .write(&vec![0; framing.header_len], &msg, &mut out)
        .ok()?;
    Some(Bytes::from(out))
}

/// True for messages the gear emits: everything but 0810 answers, which
/// answer our own sign-on and echoes. Reads only the MTI.
fn is_business(spec: &Spec, message: &[u8]) -> bool {
    let network_answer = match spec.mti_encoding() {
        MtiEncoding::Ascii => message.get(..4) == Some(b"0810"),
        MtiEncoding::Bcd => message.get(..2) == Some(&[0x08, 0x10]),
        MtiEncoding::Ebcdic => message.get(..4) == Some(&[0xF0, 0xF8, 0xF1, 0xF0]),
    };
    !network_answer
}

/// Keeps one pooled connection to a target up, forever.
#[allow(clippy::too_many_arguments)]
async fn keep_connected(
    conn_base: u64,
    target: usize,
    addr: SocketAddr,
    framing: Framing,
    spec: Arc<Spec>,
    ka: KeepAlive,
    events: mpsc::Sender<Event>,
    bad: Arc<AtomicU64>,
    dead: Arc<AtomicU64>,
    cancel: CancellationToken,
    tls: Option<(tokio_rustls::TlsConnector, Option<String>)>,
    stats: Arc<GearStats>,
) {
    let mut wait = ka.backoff;
    let mut attempt: u64 = 0;
    let stan = AtomicU64::new(0);
    let next_stan =
        || u32::try_from(stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1).unwrap_or(1);
    let peer: Arc<str> = addr.to_string().into();
    let filter_spec = Arc::clone(&spec);
    let filter = move |m: &[u8]| is_business(&filter_spec, m);
    loop {
        attempt += 1;
        let conn = conn_base + attempt;
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            s = TcpStream::connect(addr) => s,
        };
        let stream = match stream {
            Ok(s) => secure(s, addr, tls.as_ref()).await,
            Err(e) => Err(e),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Once per outage at WARN; the retries that follow at DEBUG.
                if wait == ka.backoff {
                    tracing::warn!(%addr, reason = %e, "issuer connection failed; retrying with backoff");
                } else {
                    tracing::debug!(%addr, reason = %e, "issuer connection failed; retrying");
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(ka.max_backoff);
                continue;
            }
        };
        wait = ka.backoff;
        let (wtx, wrx) = mpsc::channel(WRITER_QUEUE);
        if ka.sign_on
            && let Some(f) = network_message(&spec, &framing, next_stan(), "001")
        {
            let _ = wtx.try_send(f);
        }
        if events
            .send(Event::Up {
                conn,
                target,
                writer: wtx.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        tracing::info!(%addr, "issuer connection up");
        // Three echoes without a frame back: the issuer (or the path to
        // it) is gone even if the socket looks open; reconnect.
        let dead_after = if ka.echo.is_zero() {
            Idle::Never
        } else {
            Idle::Received(ka.echo.saturating_mul(3))
        };
        let echo = async {
            if ka.echo.is_zero() {
                return std::future::pending::<()>().await;
            }
            let mut t = tokio::time::interval(ka.echo);
            t.tick().await;
            loop {
                t.tick().await;
                if let Some(f) = network_message(&spec, &framing, next_stan(), "301") {
                    let _ = wtx.try_send(f);
                }
            }
        };
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            () = echo => Ok(()),
            r = connection(stream, conn, Arc::clone(&peer), framing, &events, wrx, Some(&filter), &stats, dead_after) => r,
        };
        closed(&bad, &dead, "issuer", &peer, &r);
        if events.send(Event::Down { conn }).await.is_err() {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A connected socket, with TLS when configured.
async fn secure(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Option<&(tokio_rustls::TlsConnector, Option<String>)>,
) -> std::io::Result<Box<dyn Stream>> {
    let _ = tcp.set_nodelay(true);
    let Some((connector, name)) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = match name {
        Some(n) => tokio_rustls::rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        None => tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    match tokio::time::timeout(HANDSHAKE, connector.connect(name, tcp)).await {
        Ok(r) => Ok(Box::new(r?)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Up connections of one target, used in turn.
#[derive(Default)]
struct Pool {
    up: Vec<(u64, mpsc::Sender<Bytes>)>,
    next: usize,
}

/// Sends a request on a connection of its target; the reason when it cannot.
fn dispatch(
    framing: &Framing,
    names: &[(Arc<str>, SocketAddr, usize)],
    pools: &mut [Pool],
    mut msg: FluxMsg,
) -> Option<(FluxMsg, String)> {
    let found = match msg.meta.get(META_TARGET) {
        Some(t) => names
            .iter()
            .position(|(n, _, _)| &**n == t)
            .ok_or_else(|| format!("no target named `{t}`")),
        None if names.len() == 1 => Ok(0),
        None => Err("no meta iso8583.target: which issuer?".to_owned()),
    };
    let target = match found {
        Ok(t) => t,
        Err(reason) => return Some((msg, reason)),
    };
    let frame = match outgoing(framing, &msg) {
        Ok(f) => f,
        Err(e) => return Some((msg, e)),
    };
    let pool = &mut pools[target];
    for _ in 0..pool.up.len() {
        pool.next = (pool.next + 1) % pool.up.len();
        if pool.up[pool.next].1.try_send(frame.clone()).is_ok() {
            return None;
        }
    }
    msg.meta.insert(META_TARGET, &*names[target].0);
    let reason = if pool.up.is_empty() {
        format!("no connection up to target `{}`", names[target].0)
    } else {
        format!("every connection to target `{}` is full", names[target].0)
    };
    Some((msg, reason))
}

impl ClientGear {
    async fn serve(&mut self, io: &mut GearIo) -> Result<(), GearError> {
        let (events_tx, mut events) = mpsc::channel::<Event>(4096);
        let cancel = io.ctx().cancel.child_token();
        let _stop = cancel.clone().drop_guard();
        let mut tasks = JoinSet::new();
        for (t, (_, addr, n)) in self.targets.iter().enumerate() {
            for c in 0..*n {
                let base = (u64::try_from(t * 1000 + c).unwrap_or(0)) << 32;
                tasks.spawn(
                    keep_connected(
                        base,
                        t,
                        *addr,
                        self.framing,
                        Arc::clone(&self.spec),
                        self.keepalive,
                        events_tx.clone(),
                        Arc::clone(&self.bad),
                        Arc::clone(&self.dead),
                        cancel.clone(),
                        self.tls.clone().map(|c| (c, self.server_name.clone())),
                        Arc::clone(&io.ctx().stats),
                    )
                    .in_current_span(),
                );
            }
        }
        drop(events_tx);
        let mut pools: Vec<Pool> = self.targets.iter().map(|_| Pool::default()).collect();
        let mut conn_target: HashMap<u64, usize> = HashMap::new();
        let (mut input, out) = io.split();
        let mut input_open = true;
        let framing = self.framing;
        let names = &self.targets;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                m = input.recv(), if input_open => match m {
                    Some(m) => match dispatch(&framing, names, &mut pools, m) {
                        None => out.delivered(1).await?,
                        Some((m, reason)) => {
                            let mut done = 0;
                            emit_draining(out, &mut input, &mut input_open, Outgoing::Fail(m, reason), |m| {
                                let r = dispatch(&framing, names, &mut pools, m);
                                if r.is_none() {
                                    done += 1;
                                }
                                r
                            })
                            .await;
                            out.delivered(done).await?;
                        }
                    },
                    None => input_open = false,
                },
                ev = events.recv() => match ev {
                    Some(Event::Up { conn, target, writer }) => {
                        conn_target.insert(conn, target);
                        pools[target].up.push((conn, writer));
                    }
                    Some(Event::Down { conn }) => {
                        if let Some(t) = conn_target.remove(&conn) {
                            pools[t].up.retain(|(c, _)| *c != conn);
                        }
                    }
                    Some(Event::Frame { conn, peer, header, message }) => {
                        let mut msg = frame_msg(out, &header, message, conn, &peer);
                        if let Some(&t) = conn_target.get(&conn) {
                            msg.meta.insert(META_TARGET, &*names[t].0);
                        }
                        let mut done = 0;
                        emit_draining(out, &mut input, &mut input_open, Outgoing::Send(msg), |m| {
                            let r = dispatch(&framing, names, &mut pools, m);
                            if r.is_none() {
                                done += 1;
                            }
                            r
                        })
                        .await;
                        out.delivered(done).await?;
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        cancel.cancel();
        tasks.shutdown().await;
        Ok(())
    }
}

impl Gear for ClientGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(self.serve(io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0810s_stay_inside() {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut b = MessageBuilder::new();
        b.set_mti("0810")
            .set(7, "1127101530")
            .set(11, "000001")
            .set(39, "00")
            .set(70, "301");
        assert!(!is_business(spec, &spec.encode_to_vec(&b).unwrap()));
        b.set_mti("0110");
        assert!(is_business(spec, &spec.encode_to_vec(&b).unwrap()));
        let f = network_message(spec, &Framing::default(), 7, "301").unwrap();
        let (frame, _) = Framing::default().cut(&f).unwrap().unwrap();
        let m = spec.decode(frame.message).unwrap();
        assert_eq!(m.mti(), "0800");
        assert_eq!(m.field(70).unwrap().text(), "301");
        assert_eq!(m.field(7).unwrap().text().len(), 10);
    }

    #[test]
    fn outgoing_frames_carry_the_header_from_meta() {
        let framing = Framing {
            prefix: LengthPrefix::Ascii4,
            header_len: 5,
            max_frame: 100,
        };
        let mut m = FluxMsg::new(fluxrig_msg::FluxId::default(), Value::Null);
        m.raw = Some(Bytes::from_static(b"0810"));
        m.meta.insert(META_HEADER, "6000010000");
        assert_eq!(
            &outgoing(&framing, &m).unwrap()[..],
            b"0009\x60\x00\x01\x00\x000810"
        );
        m.meta.insert(META_HEADER, "60");
        assert!(outgoing(&framing, &m).is_err());
        m.meta.remove(META_HEADER);
        assert_eq!(
            &outgoing(&framing, &m).unwrap()[..],
            b"0009\x00\x00\x00\x00\x000810"
        );
    }
}

/// rustls configs from PEM files.
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use fluxrig_gear::BuildContext;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::TlsConfig;

    fn certs(ctx: &BuildContext, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
        let p = ctx.resolve(path);
        let certs = CertificateDer::pem_file_iter(&p)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| format!("reading certificates from {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", p.display()));
        }
        Ok(certs)
    }

    fn key(ctx: &BuildContext, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
        let p = ctx.resolve(path);
        // The message names the file only: never key material.
        PrivateKeyDer::from_pem_file(&p)
            .map_err(|_| format!("no usable private key in {}", p.display()))
    }

    fn roots(ctx: &BuildContext, path: &Path) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for c in certs(ctx, path)? {
            roots
                .add(c)
                .map_err(|e| format!("CA in {}: {e}", path.display()))?;
        }
        Ok(roots)
    }

    /// The server side: our certificate, and client certificates when `ca` is set.
    pub(super) fn acceptor(t: &TlsConfig, ctx: &BuildContext) -> Result<TlsAcceptor, String> {
        crate::tls::install_crypto_provider();
        let (Some(cert), Some(key_path)) = (&t.cert, &t.key) else {
            return Err("a TLS server needs `cert` and `key`".to_owned());
        };
        let builder = ServerConfig::builder();
        let builder = match &t.ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots(ctx, ca)?))
                    .build()
                    .map_err(|e| format!("client verifier: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs(ctx, cert)?, key(ctx, key_path)?)
            .map_err(|e| format!("server certificate: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The client side: the CAs to trust, and our certificate for mTLS.
    pub(super) fn connector(t: &TlsConfig, ctx: &BuildContext) -> Result<TlsConnector, String> {
        crate::tls::install_crypto_provider();
        let Some(ca) = &t.ca else {
            return Err("a TLS client needs `ca`".to_owned());
        };
        let builder = ClientConfig::builder().with_root_certificates(roots(ctx, ca)?);
        let config = match (&t.cert, &t.key) {
            (Some(cert), Some(key_path)) => builder
                .with_client_auth_cert(certs(ctx, cert)?, key(ctx, key_path)?)
                .map_err(|e| format!("client certificate: {e}"))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }
}
