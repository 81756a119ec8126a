//! `fluxrig top`: a live console of a running Rack (ratatui), fed by the
//! Rack's admin endpoint (`/status`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use fluxrig_telemetry::{HistogramSnapshot, RackSnapshot};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

use crate::cmd::tail::RackArgs;
use crate::exit::CmdResult;

/// Arguments of `fluxrig top`.
#[derive(Debug, Args)]
#[command(
    after_help = "Shows per gear: message rates, hop latency p50/p99, errors, dead letters, open\nconnections and pending bytes; per wire: lane fill and drops; the write-ahead log's\ncommit rate, batch size and fsync latency. Rates and latencies cover the last\ninterval. q or Esc quits.\n\nExamples:\n  fluxrig top\n  fluxrig top --data /var/lib/fluxrig --interval 2s\n  fluxrig top --once          # print one screen as text and exit"
)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    rack: RackArgs,
    /// How often to refresh.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1s")]
    interval: Duration,
    /// Take two samples one interval apart, print the screen as text (no
    /// terminal needed) and exit.
    #[arg(long)]
    once: bool,
}

/// What the console shows: two samples and the time between them.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) prev: RackSnapshot,
    pub(crate) now: RackSnapshot,
    pub(crate) dt: Duration,
}

/// Fetches the Rack's metrics from its admin endpoint.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<RackSnapshot> {
    let body = client
        .get(format!("{url}/status"))
        .send()
        .await
        .with_context(|| format!("cannot reach the Rack at {url}"))?
        .error_for_status()?
        .bytes()
        .await
        .context("reading the Rack's status")?;
    serde_json::from_slice(&body).context("reading the Rack's status")
}

pub(crate) fn run(args: &TopArgs) -> CmdResult {
    let url = args.rack.url()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let client = crate::cmd::tail::client()?;
        let mut prev = fetch(&client, &url).await?;
        let mut at = Instant::now();
        if args.once {
            tokio::time::sleep(args.interval).await;
            let now = fetch(&client, &url).await?;
            let view = View {
                prev,
                now,
                dt: at.elapsed(),
            };
            let text = render_text(&view, 120, 40);
            print!("{text}");
            return Ok(());
        }
        let mut terminal = ratatui::init();
        let (keys_tx, keys) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
            while let Ok(ev) = event::read() {
                if let Event::Key(k) = ev
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL)))
                {
                    let _ = keys_tx.send(());
                    return;
                }
            }
        });
        let result = loop {
            tokio::time::sleep(args.interval).await;
            if keys.try_recv().is_ok() {
                break Ok(());
            }
            let now = match fetch(&client, &url).await {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let view = View {
                prev: std::mem::replace(&mut prev, now.clone()),
                now,
                dt: at.elapsed(),
            };
            at = Instant::now();
            if let Err(e) = terminal.draw(|f| draw(f, &view)) {
                break Err(e.into());
            }
        };
        ratatui::restore();
        result.map_err(Into::into)
    })
}

/// Renders one screen into a `width`×`height` text block (`--once`, tests).
pub(crate) fn render_text(view: &View, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let Ok(mut terminal) = ratatui::Terminal::new(backend) else {
        return String::new();
    };
    if terminal.draw(|f| draw(f, view)).is_err() {
        return String::new();
    }
    let buf = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[allow(clippy::cast_precision_loss)]
fn rate(now: u64, prev: u64, dt: Duration) -> f64 {
    let secs = dt.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(prev) as f64 / secs
    }
}

/// A latency in nanoseconds, short.
fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(n) if n < 1_000.0 => format!("{n:.0}ns"),
        Some(n) if n < 1_000_000.0 => format!("{:.0}µs", n / 1e3),
        Some(n) if n < 1_000_000_000.0 => format!("{:.1}ms", n / 1e6),
        Some(n) => format!("{:.2}s", n / 1e9),
    }
}

/// Quantiles over the interval, or since start when the interval saw none.
fn quantiles(now: &HistogramSnapshot, prev: Option<&HistogramSnapshot>) -> (String, String) {
    let d = prev.map_or_else(|| now.clone(), |p| now.since(p));
    let h = if d.count == 0 { now } else { &d };
    (fmt_ns(h.quantile(0.5)), fmt_ns(h.quantile(0.99)))
}

fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if n < 1024 {
        format!("{n}B")
    } else if n < 1 << 20 {
        format!("{:.1}KiB", f / 1024.0)
    } else {
        format!("{:.1}MiB", f / f64::from(1u32 << 20))
    }
}

/// Draws the console.
pub(crate) fn draw(f: &mut Frame<'_>, v: &View) {
    let n = &v.now;
    let [head, gears, wires, wal] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3 + u16::try_from(n.gears.len()).unwrap_or(u16::MAX).min(40)),
        Constraint::Min(3),
        Constraint::Length(4),
    ])
    .areas(f.area());

    let errors: u64 = n.gears.iter().map(|g| g.errors).sum();
    f.render_widget(
        Paragraph::new(Line::from(format!(
            "fluxrig top — rack {}  up {:.0}s  gears {}  wires {}  errors {}",
            n.rack,
            n.uptime_seconds,
            n.gears.len(),
            n.wires.len(),
            errors
        )))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );

    let bold = Style::default().add_modifier(Modifier::BOLD);
    let rows = n.gears.iter().map(|g| {
        let p = v.prev.gears.iter().find(|p| p.name == g.name);
        let (p50, p99) = quantiles(&g.latency, p.map(|p| &p.latency));
        let dead: u64 = g.dead_letters.iter().map(|(_, c)| c).sum();
        let link = if g.connections > 0 {
            format!("{} up", g.connections)
        } else {
            "-".to_owned()
        };
        let style = if g.errors > 0 || dead > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        Row::new(vec![
            g.name.clone(),
            g.gear_type.clone(),
            format!(
                "{:.0}",
                rate(g.messages_in, p.map_or(0, |p| p.messages_in), v.dt)
            ),
            format!(
                "{:.0}",
                rate(g.messages_out, p.map_or(0, |p| p.messages_out), v.dt)
            ),
            p50,
            p99,
            g.errors.to_string(),
            dead.to_string(),
            link,
            bytes(g.pending_bytes),
        ])
        .style(style)
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(18),
                Constraint::Length(14),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(9),
            ],
        )
        .header(
            Row::new([
                "gear", "type", "in/s", "out/s", "p50", "p99", "errors", "dead", "links", "pending",
            ])
            .style(bold),
        )
        .block(Block::default().borders(Borders::ALL).title(" gears ")),
        gears,
    );

    let rows = n.wires.iter().map(|w| {
        #[allow(clippy::cast_precision_loss)]
        let fill = if w.capacity == 0 {
            0.0
        } else {
            100.0 * w.depth as f64 / w.capacity as f64
        };
        Row::new(vec![
            w.wire.clone(),
            format!("{}/{}", w.depth, w.capacity),
            format!("{fill:.0}%"),
            w.dropped.to_string(),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(44),
                Constraint::Length(13),
                Constraint::Length(6),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["wire", "lane", "fill", "dropped"]).style(bold))
        .block(Block::default().borders(Borders::ALL).title(" wires ")),
        wires,
    );

    let (w, pw) = (&n.wal, &v.prev.wal);
    let (f50, f99) = quantiles(&w.fsync, Some(&pw.fsync));
    let batches = w.batches.saturating_sub(pw.batches);
    let records = w.records.saturating_sub(pw.records);
    #[allow(clippy::cast_precision_loss)]
    let per_batch = if batches == 0 {
        0.0
    } else {
        records as f64 / batches as f64
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "records {:.0}/s  commits {:.0}/s  {per_batch:.1} records/commit  {} written",
                rate(w.records, pw.records, v.dt),
                rate(w.batches, pw.batches, v.dt),
                bytes(w.bytes),
            )),
            Line::from(format!(
                "fsync p50 {f50}  p99 {f99}  ({} syncs)",
                w.fsync.count
            )),
        ])
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" write-ahead log "),
        ),
        wal,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fluxrig_rack::{Rack, RackOptions};

    use super::*;

    const SCENARIO: &str = "meta: {name: toptest, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 1000000, interval: 1ms}}
  - {name: enrich, type: map, config: {source: '.x = 1'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

    /// A real Rack, its real admin endpoint, the console rendered into
    /// ratatui's test backend.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn top_renders_real_values_from_a_running_rack() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, SCENARIO).unwrap();
        let data = dir.path().join("data");
        let scenario =
            fluxrig_scenario::Scenario::load(&file, &fluxrig_gears::find, &data).unwrap();
        let rack = Rack::build(
            &scenario,
            RackOptions {
                data_dir: data.clone(),
                compact_every: None,
                ..RackOptions::default()
            },
        )
        .unwrap();
        let handle = rack.handle();
        let at = crate::admin::serve(
            "127.0.0.1:0",
            crate::admin::admin_router(handle.clone(), &data),
        )
        .await
        .unwrap();
        let running = tokio::spawn(rack.run());
        let client = crate::cmd::tail::client().unwrap();
        let url = format!("http://{at}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let prev = fetch(&client, &url).await.unwrap();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = fetch(&client, &url).await.unwrap();
        let view = View {
            prev,
            now: now.clone(),
            dt: t0.elapsed(),
        };
        let text = render_text(&view, 120, 30);
        handle.stop().await;
        running.await.unwrap();

        assert!(text.contains("rack toptest"), "{text}");
        for g in ["source", "enrich", "sink"] {
            assert!(text.contains(g), "{text}");
        }
        // The map's row shows a real input rate.
        let cols: Vec<String> = text
            .lines()
            .map(|l| l.replace('│', " "))
            .find(|l| l.split_whitespace().take(2).eq(["enrich", "map"]))
            .unwrap_or_else(|| panic!("{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let in_rate: f64 = cols[2].parse().unwrap();
        assert!(in_rate > 10.0, "{text}");
        assert!(text.contains("source.out -> enrich.in"), "{text}");
        // The source records to the WAL, which syncs before acknowledging.
        assert!(now.wal.fsync.count > 0);
        assert!(
            text.contains(&format!("({} syncs)", now.wal.fsync.count)),
            "{text}"
        );
        let enrich = now.gears.iter().find(|g| g.name == "enrich").unwrap();
        assert!(enrich.latency.count > 0);
    }
}
