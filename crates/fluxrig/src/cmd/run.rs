//! `fluxrig run`: run a scenario as a Rack.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as IoWrite};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Args;
use fluxrig_gears::CardDataAtRest;
use fluxrig_rack::{GearStatus, Rack, RackError, RackHandle, RackOptions, SyncPolicy};

use crate::exit::{CmdResult, Failure};

/// Arguments of `fluxrig run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fluxrig run examples/quickstart.yaml\n  fluxrig run scenario.yaml --for 30s --quiet\n  fluxrig run scenario.yaml --watch        # apply edits to the file without downtime"
)]
pub(crate) struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// The Rack's data directory (id high-water mark, dead letters, …).
    #[arg(long, value_name = "DIR", env = "FLUXRIG_DATA", default_value = "data")]
    data: PathBuf,
    /// Which rack of the scenario to run (when it declares several).
    #[arg(long, value_name = "NAME")]
    rack: Option<String>,
    /// Run for this long (e.g. 30s, 5m), then stop: sources stop, the rest drains.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
    /// Apply changes to the scenario file as they are saved (SIGHUP does the same).
    #[arg(long)]
    watch: bool,
    /// Print neither the live status nor the summary.
    #[arg(long, short)]
    quiet: bool,
    /// Machine id of the Rack's fluxID generator (0 = unassigned).
    #[arg(long, default_value_t = 0)]
    machine: u16,
    /// How long gears may take to drain when stopping or swapping.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// When the write-ahead log syncs: `always` (a group-committed fsync
    /// before any acknowledgement), `interval:DURATION` (e.g. interval:100ms;
    /// power loss may lose that much) or `none` (throw-away data).
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_sync)]
    wal_sync: SyncPolicy,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464; 0.0.0.0:9464 to let other hosts scrape them).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// The admin endpoint `fluxrig top` and `fluxrig tail` talk to (also
    /// serves /metrics). Its address is written to <DATA>/admin.addr; the
    /// default is an ephemeral port on loopback; `off` turns it off.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    admin_listen: String,
    #[command(flatten)]
    otlp: OtlpArgs,
}

/// OTLP export of spans and metrics (docs/telemetry.md). The standard
/// `OTEL_EXPORTER_OTLP_*` variables are read when the flags are absent.
#[derive(Debug, Args)]
#[command(next_help_heading = "Telemetry export (OTLP)")]
pub(crate) struct OtlpArgs {
    /// Export spans and metrics to this OTLP collector (e.g.
    /// http://127.0.0.1:4318 for HTTP/protobuf, http://127.0.0.1:4317 for
    /// gRPC). Without it nothing is exported and no span is recorded.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    #[arg(long, value_name = "PROTOCOL", env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf", value_parser = parse_protocol)]
    otlp_protocol: fluxrig_telemetry::otlp::Protocol,
    /// A header on every export request (gRPC: metadata), e.g.
    /// `authorization=Bearer TOKEN`; repeat for more.
    #[arg(long = "otlp-header", value_name = "KEY=VALUE", env = "OTEL_EXPORTER_OTLP_HEADERS", value_delimiter = ',', value_parser = parse_header)]
    otlp_headers: Vec<(String, String)>,
    /// CA certificate (PEM) that signs an https collector's certificate.
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    otlp_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --otlp-key).
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
    )]
    otlp_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CLIENT_KEY")]
    otlp_key: Option<PathBuf>,
    /// How often metrics are exported.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    otlp_interval: Duration,
    /// Fraction of new traces whose every hop is recorded (0 to 1); a trace
    /// arriving with a `traceparent` keeps its caller's decision.
    #[arg(long, value_name = "RATIO", env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = parse_ratio)]
    trace_sample: f64,
    /// Hops at least this slow are recorded even when not sampled (failed
    /// hops always are).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "100ms")]
    trace_slow: Duration,
    /// Spans waiting for export; past it, spans are dropped and counted
    /// (fluxrig_telemetry_dropped_total{what="spans"}), never waited for.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    trace_queue: usize,
}

fn parse_protocol(s: &str) -> Result<fluxrig_telemetry::otlp::Protocol, String> {
    s.parse()
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        // Never echo the text: it may hold a token.
        _ => Err("a header is KEY=VALUE".to_owned()),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0 and 1")),
    }
}

/// A started exporter: stop it with `cancel`, then await `task`.
struct Export {
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<fluxrig_telemetry::otlp::ExportTotals>,
}

impl OtlpArgs {
    /// The tracer (and its queue) when export is configured.
    fn tracer(&self) -> Option<(Arc<fluxrig_telemetry::Tracer>, fluxrig_telemetry::SpanQueue)> {
        self.otlp_endpoint.as_ref()?;
        Some(fluxrig_telemetry::Tracer::new(
            self.trace_queue,
            fluxrig_telemetry::Sampling {
                ratio: self.trace_sample,
                slow: self.trace_slow,
            },
        ))
    }

    fn start(
        &self,
        handle: &RackHandle,
        scenario: &str,
        spans: fluxrig_telemetry::SpanQueue,
    ) -> Result<Option<Export>, Failure> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let cfg = fluxrig_telemetry::otlp::OtlpConfig {
            endpoint: endpoint.clone(),
            protocol: self.otlp_protocol,
            headers: self.otlp_headers.clone(),
            ca: self.otlp_ca.clone(),
            cert: self.otlp_cert.clone(),
            key: self.otlp_key.clone(),
            interval: self.otlp_interval,
            timeout: Duration::from_secs(10),
            resource: vec![
                ("service.name".to_owned(), "fluxrig".to_owned()),
                (
                    "service.version".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                ),
                ("fluxrig.rack".to_owned(), scenario.to_owned()),
            ],
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let h = handle.clone();
        let task = fluxrig_telemetry::otlp::spawn(&cfg, move || h.metrics(), spans, cancel.clone())
            .map_err(Failure::invalid)?;
        tracing::info!(endpoint = %endpoint, protocol = ?self.otlp_protocol, "exporting spans and metrics over OTLP");
        Ok(Some(Export { cancel, task }))
    }
}

fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    match s {
        "always" => Ok(SyncPolicy::Always),
        "none" => Ok(SyncPolicy::None),
        _ => match s.strip_prefix("interval:") {
            Some(d) => match humantime::parse_duration(d) {
                Ok(d) if !d.is_zero() => Ok(SyncPolicy::Interval(d)),
                Ok(_) => Err("an interval of zero: use `always`".to_owned()),
                Err(e) => Err(format!("`{d}`: {e}")),
            },
            None => Err(format!(
                "`{s}` is not a sync policy: always, none or interval:DURATION"
            )),
        },
    }
}

pub(crate) fn run(args: RunArgs) -> CmdResult {
    let scenario = crate::cmd::scenario::load(&args.scenario, &args.data)?;
    let scenario = scenario
        .for_rack(args.rack.as_deref())
        .map_err(Failure::invalid)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fluxrig")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let trace_setup = args.otlp.tracer();
        let (tracer, spans) = match trace_setup {
            Some((t, q)) => (Some(t), Some(q)),
            None => (None, None),
        };
        let opts = RackOptions {
            data_dir: args.data.clone(),
            machine: args.machine,
            drain_timeout: args.drain_timeout,
            wal_sync: args.wal_sync,
            // Card traffic reaches the disk sealed and masked (the coat check).
            at_rest: Some(Arc::new(CardDataAtRest::new(&args.data))),
            tracer,
            ..RackOptions::default()
        };
        let rack = Rack::build(&scenario, opts).map_err(|e| match e {
            // A gear that cannot start (port in use, unwritable file) is invalid input.
            RackError::Build(_) => Failure::invalid(e),
            _ => Failure::from(anyhow::Error::new(e)),
        })?;
        let handle = rack.handle();
        let addr_file = start_endpoints(&args, &handle).await?;
        let export = match spans {
            Some(q) => args.otlp.start(&handle, &scenario.name, q)?,
            None => None,
        };
        tracing::info!(
            scenario = %scenario.name, version = %scenario.version, hash = %scenario.hash_hex(),
            gears = scenario.gears.len(), data = %args.data.display(), "rack starting"
        );
        let started = Instant::now();
        let live = !args.quiet && std::io::stderr().is_terminal();
        let status = live.then(|| tokio::spawn(live_status(handle.clone())));
        tokio::spawn(signals(
            handle.clone(),
            args.scenario.clone(),
            args.data.clone(),
            args.rack.clone(),
        ));
        if args.watch {
            tokio::spawn(watch(
                handle.clone(),
                args.scenario.clone(),
                args.data.clone(),
                args.rack.clone(),
            ));
        }
        if let Some(d) = args.run_for {
            let h = handle.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                h.stop().await;
            });
        }
        let summary = rack.run().await;
        if let Some(d) = args.run_for {
            // `--for` runs that long even when every source ended earlier.
            let left = d.saturating_sub(started.elapsed());
            tokio::time::sleep(left).await;
        }
        if let Some(s) = status {
            s.abort();
            let _ = s.await;
            clear_status();
        }
        if let Some(f) = addr_file {
            let _ = std::fs::remove_file(f);
        }
        if let Some(e) = export {
            // A last export of what is queued and of the final counters.
            e.cancel.cancel();
            if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_secs(15), e.task).await {
                tracing::info!(
                    spans = t.spans,
                    metric_exports = t.metric_exports,
                    failures = t.failures,
                    "OTLP export finished"
                );
            } else {
                tracing::warn!("the last OTLP export did not finish in 15 s");
            }
        }
        if !args.quiet {
            print_summary(&summary, started.elapsed());
        }
        Ok(())
    })
}

/// Starts the metrics and admin listeners; gives back the file holding the
/// admin address (removed when the Rack stops).
async fn start_endpoints(args: &RunArgs, handle: &RackHandle) -> Result<Option<PathBuf>, Failure> {
    if let Some(addr) = &args.metrics_listen {
        let at = crate::admin::serve(addr, crate::admin::metrics_router(handle.clone()))
            .await
            .map_err(Failure::invalid)?;
        tracing::info!(url = %format!("http://{at}/metrics"), "serving metrics");
    }
    if args.admin_listen == "off" {
        return Ok(None);
    }
    let at = crate::admin::serve(
        &args.admin_listen,
        crate::admin::admin_router(handle.clone(), &args.data),
    )
    .await
    .map_err(Failure::invalid)?;
    let file = crate::admin::addr_file(&args.data);
    std::fs::write(&file, format!("{at}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    tracing::info!(addr = %at, "admin endpoint (fluxrig top, fluxrig tail)");
    Ok(Some(file))
}

/// SIGINT/SIGTERM stop the Rack; SIGHUP reloads the scenario.
async fn signals(handle: RackHandle, file: PathBuf, data: PathBuf, rack: Option<String>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => { handle.stop().await; }
            _ = term.recv() => { handle.stop().await; }
            _ = hup.recv() => reload(&handle, &file, &data, rack.as_deref()).await,
        }
    }
}

/// Validates the scenario file again and swaps to it; an invalid file is
/// reported and the running scenario stays.
async fn reload(handle: &RackHandle, file: &Path, data: &Path, rack: Option<&str>) {
    let next = match fluxrig_scenario::Scenario::load(file, &fluxrig_gears::find, data) {
        Ok(s) => s,
        Err(problems) => {
            tracing::error!("scenario change not applied:\n{problems}");
            return;
        }
    };
    let next = match next.for_rack(rack) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "scenario change not applied");
            return;
        }
    };
    let hash = next.hash_hex();
    match handle.apply(next).await {
        Ok(r) => tracing::info!(
            hash = %hash, kept = ?r.kept, replaced = ?r.replaced, added = ?r.added, removed = ?r.removed,
            "scenario change applied"
        ),
        Err(e) => tracing::error!(error = %e, "scenario change not applied"),
    }
}

/// Polls the scenario file and applies it when it changes.
async fn watch(handle: RackHandle, file: PathBuf, data: PathBuf, rack: Option<String>) {
    let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let mut last = stamp(&file);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = stamp(&file);
        if now.is_some() && now != last {
            last = now;
            // Let the editor finish writing.
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = stamp(&file).or(last);
            reload(&handle, &file, &data, rack.as_deref()).await;
        }
    }
}

const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Redraws a compact per-gear status on stderr.
async fn live_status(handle: RackHandle) {
    let mut prev: Vec<GearStatus> = handle.status();
    let mut lines = 0;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = handle.status();
        let mut out = String::new();
        if lines > 0 {
            let _ = write!(out, "\x1b[{lines}A");
        }
        for g in &now {
            let before = prev
                .iter()
                .find(|p| p.name == g.name)
                .map(|p| p.stats)
                .unwrap_or_default();
            let dt = STATUS_EVERY.as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
            let _ = writeln!(
                out,
                "\x1b[2K  {:<16} {:<10} in {:>10.0}/s  out {:>10.0}/s  errors {:>6}",
                g.name,
                g.gear_type,
                rate(g.stats.messages_in, before.messages_in),
                rate(g.stats.messages_out, before.messages_out),
                g.stats.errors
            );
        }
        lines = now.len();
        let mut err = std::io::stderr().lock();
        let _ = IoWrite::write_all(&mut err, out.as_bytes());
        let _ = err.flush();
        prev = now;
    }
}

fn clear_status() {
    let _ = std::io::stderr().flush();
}

fn print_summary(summary: &[GearStatus], elapsed: Duration) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "rack stopped after {:.1}s", elapsed.as_secs_f64());
    let _ = writeln!(
        err,
        "  {:<16} {:<10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "gear", "type", "in", "out", "errors", "rejected", "restarts"
    );
    for g in summary {
        let _ = writeln!(
            err,
            "  {:<16} {:<10} {:>10} {:>10} {:>8} {:>8} {:>8}",
            g.name,
            g.gear_type,
            g.stats.messages_in,
            g.stats.messages_out,
            g.stats.errors,
            g.stats.rejected,
            g.stats.restarts
        );
    }
}
