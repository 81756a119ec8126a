//! `fluxrig demo`: the payment switch of `examples/payment-switch.yaml`
//! with two issuer simulators, under load, with a live display and a
//! summary. Everything runs as child processes of this binary, on the
//! example's addresses (or those given by `--acquirer`, `--issuer-a`,
//! `--issuer-b`), and is stopped at the end.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use fluxrig_iso8583::framing::Framing;

use crate::cmd::iso8583::{LoadConfig, load, parse_prefixes, print_report, runtime};
use crate::exit::{CmdResult, Failure};

/// The example scenario, as shipped.
const SCENARIO: &str = include_str!("../../../../examples/payment-switch.yaml");
const ACQUIRER: &str = "127.0.0.1:8583";
const ISSUERS: [(&str, &str); 2] = [("A", "127.0.0.1:9583"), ("B", "127.0.0.1:9584")];

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long the load runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Authorizations per second.
    #[arg(long, default_value_t = 1000)]
    tps: u64,
    /// Terminal connections.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Make every Nth amount end in 999 (the issuer stays silent: the switch
    /// answers 91 after 2 s and reverses); 0: never.
    #[arg(long, default_value_t = 0)]
    silent_every: u64,
    /// Where the demo keeps its logs and the Rack's data.
    #[arg(long, default_value = "data/demo")]
    dir: PathBuf,
    /// Where the switch listens for terminals (the example's address by default).
    #[arg(long, default_value = ACQUIRER)]
    acquirer: SocketAddr,
    /// Where issuer A's simulator listens (cards starting with 4).
    #[arg(long, default_value = ISSUERS[0].1)]
    issuer_a: SocketAddr,
    /// Where issuer B's simulator listens (cards starting with 5).
    #[arg(long, default_value = ISSUERS[1].1)]
    issuer_b: SocketAddr,
}

/// Child processes, killed (and reaped) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            anyhow::bail!("gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Messages of each MTI in an issuer log.
fn count(log: &Path, mti: &str) -> usize {
    let needle = format!("\"mti\":\"{mti}\"");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("log file")?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting a child process")
}

pub(crate) fn run(args: &DemoArgs) -> CmdResult {
    if args.tps == 0 || args.concurrency == 0 || args.duration.is_zero() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "--tps, --concurrency and --duration must be above zero"
        )));
    }
    let issuers = [("A", args.issuer_a), ("B", args.issuer_b)];
    for addr in [args.acquirer, args.issuer_a, args.issuer_b] {
        if TcpListener::bind(addr).is_err() {
            return Err(Failure::from(anyhow::anyhow!(
                "{addr} is in use: the demo needs {}, {} and {} (other addresses: --acquirer, --issuer-a, --issuer-b)",
                args.acquirer,
                args.issuer_a,
                args.issuer_b
            )));
        }
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scenario = dir.join("payment-switch.yaml");
    // The example, moved to the addresses asked for (unchanged by default).
    let text = SCENARIO
        .replace(ACQUIRER, &args.acquirer.to_string())
        .replace(ISSUERS[0].1, &args.issuer_a.to_string())
        .replace(ISSUERS[1].1, &args.issuer_b.to_string());
    std::fs::write(&scenario, text).context("writing the scenario")?;

    let mut children = Children(Vec::new());
    let mut logs = Vec::new();
    for (name, addr) in issuers {
        let log = dir.join(format!("issuer-{}.jsonl", name.to_ascii_lowercase()));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(&exe);
        cmd.args(["iso8583", "issuer", "--listen", &addr.to_string(), "--log"])
            .arg(&log);
        children.0.push(spawn(
            &mut cmd,
            &dir.join(format!("issuer-{}.out", name.to_ascii_lowercase())),
        )?);
        logs.push(log);
    }
    let rack_log = dir.join("rack.log");
    // The Rack's data directory outlives a run: the audit query looks at this one.
    let started = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let mut cmd = Command::new(&exe);
    cmd.arg("run")
        .arg(&scenario)
        .arg("--data")
        .arg(dir.join("rack"))
        .arg("--quiet");
    children.0.push(spawn(&mut cmd, &rack_log)?);

    println!("fluxrig demo: a payment switch between terminals and two issuers");
    println!(
        "  terminals -> {} -> PAN 4… issuer A {}, PAN 5… issuer B {}",
        args.acquirer, args.issuer_a, args.issuer_b
    );
    println!("  logs in {}", dir.display());
    let acquirer = args.acquirer;
    wait_for("the switch to listen", Duration::from_secs(30), || {
        TcpStream::connect(acquirer).is_ok()
    })
    .with_context(|| format!("see {}", rack_log.display()))?;
    for log in &logs {
        wait_for("the issuers to sign on", Duration::from_secs(30), || {
            count(log, "0800") >= 2
        })
        .with_context(|| format!("see {}", rack_log.display()))?;
    }
    println!(
        "  {} TPS for {} over {} terminal connections…",
        args.tps,
        humantime::format_duration(args.duration),
        args.concurrency
    );
    let _ = std::io::stdout().flush();

    let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
        .context("the bundled dialect")?
        .context("the bundled dialect")?
        .clone();
    let cfg = LoadConfig {
        target: acquirer,
        tps: args.tps,
        duration: args.duration,
        concurrency: args.concurrency,
        timeout: Duration::from_secs(5),
        no_answer_every: args.silent_every,
        pan_prefixes: parse_prefixes(&["411111".to_owned(), "555555".to_owned()])?,
        framing: Framing::default(),
        live: true,
    };
    let report = runtime()?.block_on(load(Arc::new(spec), cfg))?;
    println!();
    println!("summary");
    print_report(&report, false);
    // Reversals go out when the switch's 2 s timeout fires: give the last ones time.
    if args.silent_every > 0 {
        std::thread::sleep(Duration::from_secs(3));
    }
    for ((name, addr), log) in issuers.iter().zip(&logs) {
        println!(
            "issuer {name} ({addr}): {} authorizations, {} reversals, {} repeats",
            count(log, "0100"),
            count(log, "0420"),
            count(log, "0421")
        );
    }
    audit_trail(&exe, &dir.join("rack"), &started);
    drop(children);
    Ok(())
}

/// What the Rack's write-ahead log says happened in this run (from
/// `since`, RFC 3339), through the same query a user would run: requests
/// taken from terminals and replies taken from each issuer, each with its
/// completion records.
fn audit_trail(exe: &std::path::Path, data: &std::path::Path, since: &str) {
    let sql = format!(
        "SELECT gear, coalesce(json_extract_string(meta, '$.\"iso8583.target\"'), '') AS issuer, \
         direction, count(*) AS records FROM messages WHERE direction IN ('in', 'done') \
         AND ts >= TIMESTAMPTZ '{since}' GROUP BY ALL ORDER BY ALL"
    );
    println!();
    println!(
        "audit trail: fluxrig audit query --data {} \"{sql}\"",
        data.display()
    );
    let status = std::process::Command::new(exe)
        .args(["audit", "query", "--data"])
        .arg(data)
        .arg(&sql)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("(the audit query did not run)");
    }
}
