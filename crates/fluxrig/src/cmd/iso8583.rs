//! `fluxrig iso8583 decode|issuer|load`: look at a message, simulate an
//! issuer, and load-test an ISO 8583 endpoint.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fluxrig_iso8583::framing::{Framing, LengthPrefix};
use fluxrig_iso8583::net::{FrameReader, NetError};
use fluxrig_iso8583::{Length, Message, MessageBuilder, Spec, mask, to_value};
use fluxrig_msg::json::JsonValue;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use crate::cmd::spec::{DataDir, resolve};
use crate::exit::{CmdResult, Failure};

/// Dialect and framing shared by the subcommands.
#[derive(Debug, Clone, Args)]
pub(crate) struct Wire {
    /// Dialect: a bundled name, an SDL file, or a name or hash in the store.
    #[arg(long, default_value = "iso8583-1987-ascii")]
    spec: String,
    /// Length prefix of each frame: 2be (2-byte binary, big endian), 2le, or 4ascii.
    #[arg(long, default_value = "2be")]
    prefix: LengthPrefix,
    /// Bytes of TPDU or network header after the prefix, kept as they are.
    #[arg(long, default_value_t = 0)]
    header_len: usize,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = 8192)]
    max_frame: usize,
    #[command(flatten)]
    data: DataDir,
}

impl Wire {
    fn framing(&self) -> Framing {
        Framing {
            prefix: self.prefix,
            header_len: self.header_len,
            max_frame: self.max_frame,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Iso8583Command {
    /// Decode one message from stdin into JSON, with card data masked.
    #[command(
        after_help = "Example:\n  printf '0800822000000000000004000000000000001127101530000001301' \\\n    | fluxrig iso8583 decode --spec iso8583-1987-ascii"
    )]
    Decode {
        /// stdin is hex text (whitespace ignored) rather than raw bytes.
        #[arg(long)]
        hex: bool,
        /// stdin starts with a length prefix (and header): strip them.
        #[arg(long)]
        framed: bool,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        wire: Wire,
    },
    /// Run an issuer simulator: answers requests by simple rules.
    ///
    /// 0100/0200 get 0110/0210 echoing the request's elements (DE 2, 3, 4, 7,
    /// 11, 12, 13, 37, 41, 42, 49), with DE 39 `00` when DE 4 ≤ 000000100000,
    /// else `51`; an amount ending in 999 gets no answer (to exercise
    /// timeouts). 0800 → 0810 and 0400/0420/0421 → 0410/0430 with DE 39 `00`.
    #[command(
        after_help = "Example:\n  fluxrig iso8583 issuer --listen 127.0.0.1:9583 --log issuer.jsonl"
    )]
    Issuer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9583")]
        listen: SocketAddr,
        /// Append one JSON line per received message (PAN masked).
        #[arg(long)]
        log: Option<PathBuf>,
        #[command(flatten)]
        wire: Wire,
    },
    /// Load-test an ISO 8583 endpoint with authorizations at a fixed rate.
    ///
    /// Open loop: requests leave on schedule whatever the latency, pipelined
    /// on each connection. PANs are Luhn-valid test numbers (4111 11…).
    #[command(
        after_help = "Example:\n  fluxrig iso8583 load --target 127.0.0.1:8583 --tps 2000 --duration 30s --concurrency 8 --json"
    )]
    Load {
        /// Address to connect to.
        #[arg(long, default_value = "127.0.0.1:8583")]
        target: SocketAddr,
        /// Requests per second, over all connections.
        #[arg(long, default_value_t = 1000)]
        tps: u64,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Connections (each its own terminal id and STAN sequence).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// A request without a reply after this long counts as a timeout.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Make every Nth request's amount end in 999 (the simulator does not
        /// answer those); 0: never.
        #[arg(long, default_value_t = 0)]
        no_answer_every: u64,
        /// 6-digit PAN prefixes (BINs) of the test cards, used in turn
        /// (`411111,555555` sends to both issuers of the example switch).
        #[arg(long, value_delimiter = ',', default_value = "411111")]
        pan_prefixes: Vec<String>,
        /// Print one JSON object: `sent`, `received`, `tps`, `p50_ms`,
        /// `p90_ms`, `p99_ms`, `p999_ms`, `max_ms`, `approved`, `declined`,
        /// `timeouts`, `errors`, `mismatches` (replies that match no request
        /// in flight, or answer it wrongly: must be 0) and `late` (replies to
        /// requests already counted as timeouts).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wire: Wire,
    },
}

pub(crate) fn run(cmd: Iso8583Command) -> CmdResult {
    match cmd {
        Iso8583Command::Decode {
            hex,
            framed,
            pretty,
            wire,
        } => decode(hex, framed, pretty, &wire),
        Iso8583Command::Issuer { listen, log, wire } => {
            let spec = resolve(&wire.spec, &wire.data)?;
            runtime()?.block_on(issuer(spec, listen, log, wire.framing()))
        }
        Iso8583Command::Load {
            target,
            tps,
            duration,
            concurrency,
            timeout,
            no_answer_every,
            pan_prefixes,
            json,
            wire,
        } => {
            if tps == 0 || concurrency == 0 || duration.is_zero() {
                return Err(Failure::invalid(anyhow::anyhow!(
                    "--tps, --concurrency and --duration must be above zero"
                )));
            }
            let spec = resolve(&wire.spec, &wire.data)?;
            let cfg = LoadConfig {
                target,
                tps,
                duration,
                concurrency,
                timeout,
                no_answer_every,
                pan_prefixes: parse_prefixes(&pan_prefixes)?,
                framing: wire.framing(),
                live: false,
            };
            let report = runtime()?.block_on(load(Arc::new(spec), cfg))?;
            print_report(&report, json);
            Ok(())
        }
    }
}

/// Checks `--pan-prefixes`: 6 digits each.
pub(crate) fn parse_prefixes(list: &[String]) -> Result<Arc<Vec<[u8; 6]>>, Failure> {
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let b: [u8; 6] = p
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; 6]| b.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| {
                Failure::invalid(anyhow::anyhow!("--pan-prefixes: `{p}` is not 6 digits"))
            })?;
        out.push(b);
    }
    if out.is_empty() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "--pan-prefixes needs at least one prefix"
        )));
    }
    Ok(Arc::new(out))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?)
}

fn stderr_line(args: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.write_all(b"\n");
}

// ---------------------------------------------------------------------------
// decode

fn decode(hex: bool, framed: bool, pretty: bool, wire: &Wire) -> CmdResult {
    let spec = resolve(&wire.spec, &wire.data)?;
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    if hex {
        let text: Vec<u8> = input
            .into_iter()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        input = Vec::with_capacity(text.len() / 2);
        if !text.len().is_multiple_of(2) {
            return Err(Failure::invalid(anyhow::anyhow!("hex input of odd length")));
        }
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("zz");
            let b = u8::from_str_radix(s, 16).map_err(|_| {
                Failure::invalid(anyhow::anyhow!("invalid hex at character {}", 2 * i))
            })?;
            input.push(b);
        }
    }
    let (header, body): (&[u8], &[u8]) = if framed {
        match wire.framing().cut(&input) {
            Ok(Some((f, used))) if used == input.len() => (f.header, f.message),
            Ok(Some(_)) => return Err(Failure::invalid(anyhow::anyhow!("bytes after the frame"))),
            Ok(None) => return Err(Failure::invalid(anyhow::anyhow!("incomplete frame"))),
            Err(e) => return Err(Failure::invalid(e)),
        }
    } else {
        (&[], &input)
    };
    let msg = spec.decode(body).map_err(Failure::invalid)?;
    let mut data = to_value(&msg);
    mask::mask_data(&spec, &mut data);
    let mut meta = serde_json::Map::new();
    meta.insert(
        fluxrig_iso8583::META_SPEC.into(),
        spec.hash().to_hex().into(),
    );
    meta.insert("iso8583.dialect".into(), spec.name().into());
    if !header.is_empty() {
        let h = header.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        });
        meta.insert("iso8583.header".into(), h.into());
    }
    let out = json!({"meta": meta, "data": serde_json::to_value(JsonValue(&data)).context("rendering JSON")?});
    let text = if pretty {
        serde_json::to_string_pretty(&out)
    } else {
        serde_json::to_string(&out)
    }
    .context("rendering JSON")?;
    println!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------
// issuer

/// DE 39 values for approved and declined, fitted to the dialect's DE 39.
fn response_codes(spec: &Spec) -> (&'static str, &'static str) {
    match spec.element(39).map(|e| e.format.length) {
        Some(Length::Fixed(3)) => ("000", "116"),
        _ => ("00", "51"),
    }
}

/// Elements echoed when the dialect lists none for a request type.
const ECHO: [u8; 11] = [2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49];

/// Builds the simulator's answer to `req` into `out`; false when it stays silent.
fn answer(spec: &Spec, req: &Message<'_>, out: &mut Vec<u8>) -> bool {
    let mti = req.mti();
    let Some(resp) = spec.response_mti(mti) else {
        return false;
    };
    let (ok, declined) = response_codes(spec);
    let amount = req.field(4).map(|f| f.text());
    let class = &mti[1..2];
    let code = if class == "1" || class == "2" {
        match amount.as_deref() {
            Some(a) if a.ends_with("999") => return false,
            Some(a) if a.len() <= 12 && a.parse::<u64>().is_ok_and(|v| v > 100_000) => declined,
            _ => ok,
        }
    } else {
        ok
    };
    let mut b = MessageBuilder::new();
    b.set_mti(resp);
    let echo = spec.message(mti).map_or(&ECHO[..], |m| m.echo.as_slice());
    let src = req.to_builder();
    for &n in echo {
        b.set_input(n, src.get(n));
    }
    b.set(39, code);
    spec.encode(&b, out).is_ok()
}

struct IssuerLog {
    tx: tokio::sync::mpsc::Sender<String>,
}

fn log_line(msg: &Message<'_>) -> String {
    let text = |n: u8| msg.field(n).map(|f| f.text().into_owned());
    json!({
        "mti": msg.mti(),
        "stan": text(11),
        "rrn": text(37),
        "terminal": text(41),
        "pan_masked": text(2).map(|p| mask::mask_pan(&p)),
        "amount": text(4),
    })
    .to_string()
}

async fn issuer(
    spec: Spec,
    listen: SocketAddr,
    log: Option<PathBuf>,
    framing: Framing,
) -> CmdResult {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr().context("local address")?;
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "listening on {local} ({}, sha256 {})",
            spec.name(),
            spec.hash()
        )
        .context("writing stdout")?;
        out.flush().context("writing stdout")?;
    }
    let log = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<String>(8192);
            std::thread::spawn(move || write_log(file, rx));
            Some(Arc::new(IssuerLog { tx }))
        }
        None => None,
    };
    let spec = Arc::new(spec);
    let bad_frames = Arc::new(AtomicU64::new(0));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let spec = Arc::clone(&spec);
                let log = log.clone();
                let bad = Arc::clone(&bad_frames);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &spec, framing, log.as_deref()).await {
                        let n = bad.fetch_add(1, Ordering::Relaxed) + 1;
                        stderr_line(format_args!("issuer: closed {peer}: {e} ({n} bad connections so far)"));
                    }
                });
            }
        }
    }
    drop(log);
    Ok(())
}

fn write_log(file: std::fs::File, mut rx: tokio::sync::mpsc::Receiver<String>) {
    let mut w = BufWriter::new(file);
    while let Some(line) = rx.blocking_recv() {
        let _ = writeln!(w, "{line}");
        // Flush whenever the queue is drained, so readers see whole lines soon.
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(w, "{line}");
        }
        let _ = w.flush();
    }
    let _ = w.flush();
}

async fn serve(
    stream: TcpStream,
    spec: &Spec,
    framing: Framing,
    log: Option<&IssuerLog>,
) -> anyhow::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, framing);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut msg_buf = Vec::with_capacity(1024);
    loop {
        let mut frame = reader.next_frame().await?;
        out.clear();
        loop {
            let Some(f) = frame else {
                if !out.is_empty() {
                    wr.write_all(&out).await.map_err(NetError::from)?;
                }
                return Ok(());
            };
            let msg = spec
                .decode(f.message)
                .map_err(|e| anyhow::anyhow!("undecodable message: {e}"))?;
            if let Some(log) = log {
                let _ = log.tx.send(log_line(&msg)).await;
            }
            msg_buf.clear();
            if answer(spec, &msg, &mut msg_buf) {
                framing
                    .write(f.header, &msg_buf, &mut out)
                    .map_err(NetError::from)?;
            }
            frame = reader.buffered_frame()?;
            if frame.is_none() {
                break;
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(NetError::from)?;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

// ---------------------------------------------------------------------------
// load

pub(crate) struct LoadConfig {
    pub(crate) target: SocketAddr,
    pub(crate) tps: u64,
    pub(crate) duration: Duration,
    pub(crate) concurrency: usize,
    pub(crate) timeout: Duration,
    pub(crate) no_answer_every: u64,
    /// Test card BINs, used in turn.
    pub(crate) pan_prefixes: Arc<Vec<[u8; 6]>>,
    pub(crate) framing: Framing,
    /// Print progress on stderr every second.
    pub(crate) live: bool,
}

#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    received: u64,
    approved: u64,
    declined: u64,
    timeouts: u64,
    errors: u64,
    mismatches: u64,
    /// Replies to requests already counted as timeouts.
    late: u64,
}

impl Counts {
    /// Adds another connection's counts.
    fn add(&mut self, k: &Counts) {
        self.sent += k.sent;
        self.received += k.received;
        self.approved += k.approved;
        self.declined += k.declined;
        self.timeouts += k.timeouts;
        self.errors += k.errors;
        self.mismatches += k.mismatches;
        self.late += k.late;
    }
}

pub(crate) struct Report {
    counts: Counts,
    hist: Histogram<u64>,
    elapsed: Duration,
}

/// What a connection remembers of a request in flight.
struct Pending {
    at: Instant,
    amount: u64,
}

struct Conn {
    pending: Mutex<HashMap<(u32, u16), Pending>>,
    /// Requests given up on (timeouts), and when: a reply to one of them
    /// is late, not wrong.
    expired: Mutex<HashMap<(u32, u16), Instant>>,
    counts: Mutex<Counts>,
    hist: Mutex<Histogram<u64>>,
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// A Luhn-valid 16-digit test PAN under a 6-digit prefix.
fn test_pan(seq: u64, prefix: [u8; 6], out: &mut [u8; 16]) {
    out[..6].copy_from_slice(&prefix);
    let mut v = seq % 1_000_000_000;
    for i in (6..15).rev() {
        out[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
    // Luhn: double every second digit from the right, starting left of the check digit.
    let mut sum = 0_u32;
    for (i, &c) in out[..15].iter().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    out[15] = b'0' + u8::try_from((10 - sum % 10) % 10).unwrap_or(0);
}

/// MMDDhhmmss and hhmmss and MMDD of a Unix time (UTC).
fn clock(now: SystemTime) -> (String, String, String) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (hour, min, sec) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (H. Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let doe = shifted - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        format!("{month:02}{day:02}{hour:02}{min:02}{sec:02}"),
        format!("{hour:02}{min:02}{sec:02}"),
        format!("{month:02}{day:02}"),
    )
}

pub(crate) async fn load(spec: Arc<Spec>, cfg: LoadConfig) -> Result<Report, Failure> {
    let started = Instant::now();
    // Connection c of C sends at tps/C per second: its k-th request is due
    // k * C / tps seconds after the start.
    let pace = Pace {
        tps: u128::from(cfg.tps),
        conns: cfg.concurrency as u128,
    };
    let mut tasks = Vec::with_capacity(cfg.concurrency);
    let mut conns = Vec::with_capacity(cfg.concurrency);
    let seq = Arc::new(AtomicU64::new(0));
    for c in 0..cfg.concurrency {
        let stream = TcpStream::connect(cfg.target)
            .await
            .with_context(|| format!("connecting to {}", cfg.target))?;
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            pending: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            hist: Mutex::new(new_hist()),
        });
        conns.push(Arc::clone(&conn));
        let spec = Arc::clone(&spec);
        let seq = Arc::clone(&seq);
        let terminal = u16::try_from(c + 1).unwrap_or(u16::MAX);
        let (framing, duration, timeout, every) =
            (cfg.framing, cfg.duration, cfg.timeout, cfg.no_answer_every);
        let prefixes = Arc::clone(&cfg.pan_prefixes);
        tasks.push(tokio::spawn(async move {
            run_conn(
                stream, spec, conn, terminal, pace, framing, duration, timeout, every, seq,
                &prefixes,
            )
            .await;
        }));
    }
    let ticker = cfg.live.then(|| {
        let conns = conns.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                live_line(&conns, started.elapsed());
            }
        })
    });
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = ticker {
        t.abort();
        live_line(&conns, started.elapsed());
        stderr_line(format_args!(""));
    }
    let mut counts = Counts::default();
    let mut hist = new_hist();
    for c in conns {
        let k = c.counts.lock().map_or_else(
            |e| std::mem::take(&mut *e.into_inner()),
            |mut g| std::mem::take(&mut *g),
        );
        counts.add(&k);
        if let Ok(h) = c.hist.lock() {
            let _ = hist.add(&*h);
        }
    }
    let _ = started;
    Ok(Report {
        counts,
        hist,
        elapsed: cfg.duration,
    })
}

/// One progress line on stderr (rewritten in place on a terminal).
#[allow(clippy::cast_precision_loss)] // display values
fn live_line(conns: &[Arc<Conn>], elapsed: Duration) {
    let mut c = Counts::default();
    let mut hist = new_hist();
    for conn in conns {
        if let Ok(k) = conn.counts.lock() {
            c.add(&k);
        }
        if let Ok(h) = conn.hist.lock() {
            let _ = hist.add(&*h);
        }
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let line = format!(
        "{:>4}s  sent {:>8}  approved {:>8}  declined {:>7}  timeouts {:>5}  mismatches {}  {:>7.0} TPS  p99 {:.1} ms",
        elapsed.as_secs(),
        c.sent,
        c.approved,
        c.declined,
        c.timeouts,
        c.mismatches,
        c.received as f64 / secs,
        ms(&hist, 0.99)
    );
    let mut e = io::stderr().lock();
    if std::io::IsTerminal::is_terminal(&e) {
        let _ = write!(e, "\r{line}");
        let _ = e.flush();
    } else {
        let _ = writeln!(e, "{line}");
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_conn(
    stream: TcpStream,
    spec: Arc<Spec>,
    conn: Arc<Conn>,
    terminal: u16,
    pace: Pace,
    framing: Framing,
    duration: Duration,
    timeout: Duration,
    every: u64,
    seq: Arc<AtomicU64>,
    prefixes: &[[u8; 6]],
) {
    let (rd, mut wr) = stream.into_split();
    let reader_conn = Arc::clone(&conn);
    let reader_spec = Arc::clone(&spec);
    let done = Arc::new(tokio::sync::Notify::new());
    let done_r = Arc::clone(&done);
    let reader = tokio::spawn(async move {
        read_replies(
            rd,
            &reader_spec,
            &reader_conn,
            terminal,
            framing,
            timeout,
            &done_r,
        )
        .await;
    });

    let term = format!("TERM{terminal:04}");
    let start = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut stan: u32 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut msg = Vec::with_capacity(512);
    let mut pan = [0_u8; 16];
    let tick = Duration::from_millis(1);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = pace.due(elapsed);
        buf.clear();
        let (de7, de12, de13) = clock(SystemTime::now());
        while sent < due {
            sent += 1;
            stan = if stan >= 999_999 { 1 } else { stan + 1 };
            let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
            let prefix = prefixes[usize::try_from(n % prefixes.len() as u64).unwrap_or(0)];
            test_pan(n.wrapping_mul(7_919), prefix, &mut pan);
            // Amounts spread over 0.01..2000.00; none ends in 999 unless asked.
            let mut amount = (n.wrapping_mul(2_654_435_761) % 200_000) + 1;
            if every > 0 && n.is_multiple_of(every) {
                amount = amount / 1000 * 1000 + 999;
            } else if amount % 1000 == 999 {
                amount -= 1;
            }
            let key = (stan, terminal);
            let de11 = format!("{stan:06}");
            let de4 = format!("{amount:012}");
            let de37 = format!("{:012}", n % 1_000_000_000_000);
            let pan_s = std::str::from_utf8(&pan).unwrap_or("4111111111111111");
            let mut b = MessageBuilder::new();
            b.set_mti("0100")
                .set(2, pan_s)
                .set(3, "000000")
                .set(4, &de4)
                .set(7, &de7)
                .set(11, &de11)
                .set(12, &de12)
                .set(13, &de13)
                .set(22, "051")
                .set(25, "00")
                .set(37, &de37)
                .set(41, &term)
                .set(42, "FLUXRIGLOAD0001")
                .set(49, "978");
            msg.clear();
            if spec.encode(&b, &mut msg).is_err() || framing.write(&[], &msg, &mut buf).is_err() {
                bump(&conn, |c| c.errors += 1);
                continue;
            }
            let replaced = conn.pending.lock().is_ok_and(|mut p| {
                p.insert(
                    key,
                    Pending {
                        at: Instant::now(),
                        amount,
                    },
                )
                .is_some()
            });
            bump(&conn, |c| {
                c.sent += 1;
                if replaced {
                    // A STAN still outstanding after a full wrap: the old one is lost.
                    c.timeouts += 1;
                }
            });
        }
        if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
            bump(&conn, |c| c.errors += 1);
            break;
        }
        let next = start + pace.at(sent);
        tokio::time::sleep_until(next.max(tokio::time::Instant::now() + tick / 4)).await;
    }
    // Wait for the last replies, then let the reader sweep what is left.
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if conn.pending.lock().map_or(true, |p| p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done.notify_one();
    let _ = reader.await;
    let _ = wr.shutdown().await;
}

/// The schedule of one connection, in integers.
#[derive(Debug, Clone, Copy)]
struct Pace {
    tps: u128,
    conns: u128,
}

impl Pace {
    /// Requests due by `elapsed` (the first is due at once).
    fn due(self, elapsed: Duration) -> u64 {
        u64::try_from(elapsed.as_nanos() * self.tps / (self.conns * 1_000_000_000) + 1)
            .unwrap_or(u64::MAX)
    }

    /// When request number `k` (from 0) is due.
    fn at(self, k: u64) -> Duration {
        let nanos = u128::from(k) * self.conns * 1_000_000_000 / self.tps;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn bump(conn: &Conn, f: impl FnOnce(&mut Counts)) {
    if let Ok(mut c) = conn.counts.lock() {
        f(&mut c);
    }
}

async fn read_replies(
    rd: tokio::net::tcp::OwnedReadHalf,
    spec: &Spec,
    conn: &Conn,
    terminal: u16,
    framing: Framing,
    timeout: Duration,
    done: &tokio::sync::Notify,
) {
    let mut reader = FrameReader::new(rd, framing);
    let (ok, _) = response_codes(spec);
    let mut sweep = tokio::time::interval(Duration::from_millis(100));
    let finish = done.notified();
    tokio::pin!(finish);
    loop {
        tokio::select! {
            () = &mut finish => {
                sweep_pending(conn, Duration::ZERO);
                return;
            }
            _ = sweep.tick() => sweep_pending(conn, timeout),
            frame = reader.next_frame() => {
                match frame {
                    Ok(Some(f)) => {
                        let now = Instant::now();
                        handle_reply(spec, conn, terminal, ok, f.message, now);
                        while let Ok(Some(f)) = reader.buffered_frame() {
                            handle_reply(spec, conn, terminal, ok, f.message, now);
                        }
                    }
                    Ok(None) => {
                        sweep_pending(conn, Duration::ZERO);
                        return;
                    }
                    Err(_) => {
                        bump(conn, |c| c.errors += 1);
                        sweep_pending(conn, Duration::ZERO);
                        return;
                    }
                }
            }
        }
    }
}

/// How long a timed-out request is remembered, to tell a late reply from a
/// wrong one.
const REMEMBER_EXPIRED: Duration = Duration::from_mins(1);

fn sweep_pending(conn: &Conn, older_than: Duration) {
    let now = Instant::now();
    let mut gone = Vec::new();
    if let Ok(mut p) = conn.pending.lock() {
        p.retain(|k, v| {
            let keep = now.duration_since(v.at) < older_than;
            if !keep {
                gone.push(*k);
            }
            keep
        });
    }
    if let Ok(mut e) = conn.expired.lock() {
        e.retain(|_, at| now.duration_since(*at) < REMEMBER_EXPIRED);
        e.extend(gone.iter().map(|k| (*k, now)));
    }
    if !gone.is_empty() {
        bump(conn, |c| c.timeouts += gone.len() as u64);
    }
}

fn handle_reply(spec: &Spec, conn: &Conn, terminal: u16, ok: &str, frame: &[u8], now: Instant) {
    let Ok(m) = spec.decode(frame) else {
        bump(conn, |c| c.errors += 1);
        return;
    };
    let stan = m.field(11).and_then(|f| f.text().parse::<u32>().ok());
    let term_ok = m
        .field(41)
        .is_some_and(|f| f.text() == format!("TERM{terminal:04}"));
    let pending = match (stan, term_ok) {
        (Some(s), true) => conn
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&(s, terminal))),
        _ => None,
    };
    let Some(p) = pending else {
        let late = match (stan, term_ok) {
            (Some(s), true) => conn
                .expired
                .lock()
                .is_ok_and(|mut e| e.remove(&(s, terminal)).is_some()),
            _ => false,
        };
        bump(conn, |c| {
            if late {
                c.late += 1;
            } else {
                c.mismatches += 1;
            }
        });
        return;
    };
    let amount_ok = m
        .field(4)
        .and_then(|f| f.text().parse::<u64>().ok())
        .is_some_and(|a| a == p.amount);
    let approved = m.field(39).is_some_and(|f| f.text() == ok);
    let micros = u64::try_from(now.duration_since(p.at).as_micros()).unwrap_or(u64::MAX);
    if let Ok(mut h) = conn.hist.lock() {
        let _ = h.record(micros.max(1));
    }
    bump(conn, |c| {
        c.received += 1;
        if m.mti() != "0110" || !amount_ok {
            c.mismatches += 1;
        } else if approved {
            c.approved += 1;
        } else {
            c.declined += 1;
        }
    });
}

#[allow(clippy::cast_precision_loss)] // display values
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    (h.value_at_quantile(q) as f64 / 1000.0 * 1000.0).round() / 1000.0
}

#[allow(clippy::cast_precision_loss)] // display values
pub(crate) fn print_report(r: &Report, as_json: bool) {
    let c = &r.counts;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let tps = ((c.approved + c.declined) as f64 / secs * 10.0).round() / 10.0;
    let max_ms = if r.hist.is_empty() {
        0.0
    } else {
        (r.hist.max() as f64).round() / 1000.0
    };
    let v = json!({
        "sent": c.sent,
        "received": c.received,
        "tps": tps,
        "p50_ms": ms(&r.hist, 0.50),
        "p90_ms": ms(&r.hist, 0.90),
        "p99_ms": ms(&r.hist, 0.99),
        "p999_ms": ms(&r.hist, 0.999),
        "max_ms": max_ms,
        "approved": c.approved,
        "declined": c.declined,
        "timeouts": c.timeouts,
        "errors": c.errors,
        "mismatches": c.mismatches,
        "late": c.late,
    });
    if as_json {
        println!("{v}");
    } else {
        println!(
            "sent {} received {} ({} approved, {} declined), {} timeouts ({} answered late), {} errors, {} mismatches",
            c.sent, c.received, c.approved, c.declined, c.timeouts, c.late, c.errors, c.mismatches
        );
        println!(
            "{tps} TPS; latency ms: p50 {} p90 {} p99 {} p99.9 {} max {max_ms}",
            v["p50_ms"], v["p90_ms"], v["p99_ms"], v["p999_ms"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pans_are_luhn_valid_and_in_range() {
        let mut pan = [0_u8; 16];
        for seq in [0, 1, 7, 123_456_789, 999_999_999, 1_000_000_007] {
            test_pan(seq, *b"411111", &mut pan);
            assert!(pan.starts_with(b"411111"));
            let mut sum = 0;
            for (i, &c) in pan.iter().rev().enumerate() {
                let mut d = u32::from(c - b'0');
                if i % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
            }
            assert_eq!(sum % 10, 0, "{}", std::str::from_utf8(&pan).unwrap());
        }
    }

    #[test]
    fn a_reply_to_a_timed_out_request_is_late_and_an_unknown_one_a_mismatch() {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let conn = Conn {
            pending: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            hist: Mutex::new(new_hist()),
        };
        let now = Instant::now();
        let reply = |stan: &str, amount: &str| {
            let mut b = MessageBuilder::new();
            b.set_mti("0110")
                .set(4, amount)
                .set(11, stan)
                .set(39, "00")
                .set(41, "TERM0007");
            spec.encode_to_vec(&b).unwrap()
        };
        if let Ok(mut p) = conn.pending.lock() {
            for (stan, ago) in [(1, 10), (2, 0)] {
                let at = now.checked_sub(Duration::from_secs(ago)).unwrap();
                p.insert((stan, 7), Pending { at, amount: 100 });
            }
        }
        sweep_pending(&conn, Duration::from_secs(5));
        let t = Instant::now();
        handle_reply(spec, &conn, 7, "00", &reply("000001", "000000000100"), t);
        handle_reply(spec, &conn, 7, "00", &reply("000002", "000000000100"), t);
        handle_reply(spec, &conn, 7, "00", &reply("000003", "000000000100"), t);
        // A second reply to the timed-out request is no longer just late.
        handle_reply(spec, &conn, 7, "00", &reply("000001", "000000000100"), t);
        let c = conn.counts.lock().unwrap();
        assert_eq!(
            (c.timeouts, c.late, c.received, c.approved, c.mismatches),
            (1, 1, 1, 1, 2)
        );
    }

    #[test]
    fn clock_formats_utc() {
        // 2026-11-27 07:45:09 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_765_509);
        assert_eq!(
            clock(t),
            ("1127074509".into(), "074509".into(), "1127".into())
        );
    }
}
