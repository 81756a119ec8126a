//! `file_in`, `file_out`, `stdin`, `stdout`: messages from and to files and
//! the console.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, Role,
};
use fluxrig_msg::{FluxMsg, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::format::{InFormat, OutFormat, line_to_data, next_envelope, write_msg};

/// Longest accepted line (or CBOR envelope), so one bad file cannot
/// exhaust memory.
const MAX_RECORD: usize = 4 << 20;

/// Reads messages from `reader` until it ends (or the gear is cancelled),
/// emitting them on `out`. Bad records are dead-lettered with their line
/// or byte offset; reading goes on.
async fn read_messages<R: AsyncRead + Unpin>(
    reader: R,
    format: InFormat,
    origin: &str,
    io: &mut GearIo,
    skip: &mut u64,
) -> Result<(), GearError> {
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    // `skip` counts records already emitted before a restart.
    let mut n: u64 = 0;
    if format == InFormat::Cbor {
        let mut buf = Vec::new();
        let mut at = 0;
        let mut eof = false;
        loop {
            match next_envelope(&buf, at, eof) {
                Ok(Some((mut msg, used))) => {
                    at += used;
                    n += 1;
                    if n <= *skip {
                        continue;
                    }
                    *skip = n;
                    if msg.ts == 0 {
                        msg.ts = fluxrig_gear::now_ns();
                    }
                    io.send(msg).await;
                }
                Ok(None) if eof => return Ok(()),
                Ok(None) => {
                    if io.is_cancelled() {
                        return Ok(());
                    }
                    buf.drain(..at);
                    at = 0;
                    if buf.len() > MAX_RECORD {
                        return Err(GearError::Other(format!(
                            "{origin}: CBOR item larger than {MAX_RECORD} bytes"
                        )));
                    }
                    let chunk = reader
                        .fill_buf()
                        .await
                        .map_err(|e| GearError::io(origin.to_owned(), e))?;
                    let got = chunk.len();
                    eof = got == 0;
                    buf.extend_from_slice(chunk);
                    reader.consume(got);
                }
                Err(e) => {
                    // A CBOR sequence cannot be resynchronised after a bad item.
                    let mut msg = FluxMsg::new(io.new_id(), Value::Null);
                    msg.raw = Some(buf[at..].to_vec().into());
                    io.fail(msg, format!("{origin}: {e}")).await;
                    return Ok(());
                }
            }
        }
    }
    let mut line = Vec::new();
    loop {
        if io.is_cancelled() {
            return Ok(());
        }
        line.clear();
        let got = (&mut reader)
            .take(MAX_RECORD as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| GearError::io(origin.to_owned(), e))?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if n <= *skip {
            continue;
        }
        *skip = n;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > MAX_RECORD {
            let mut msg = FluxMsg::new(io.new_id(), Value::Null);
            msg.raw = Some(line[..256].to_vec().into());
            io.fail(
                msg,
                format!("{origin}: line {n} is longer than {MAX_RECORD} bytes"),
            )
            .await;
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            reader
                .read_until(b'\n', &mut rest)
                .await
                .map_err(|e| GearError::io(origin.to_owned(), e))?;
            continue;
        }
        if format == InFormat::Jsonl && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut msg = FluxMsg::new(io.new_id(), Value::Null);
        msg.ts = fluxrig_gear::now_ns();
        msg.src = Some(io.ctx().entity);
        match line_to_data(format, &line) {
            Ok(data) => {
                msg.data = data;
                io.send(msg).await;
            }
            Err(e) => {
                msg.raw = Some(line.clone().into());
                io.fail(msg, format!("{origin}: line {n}: {e}")).await;
            }
        }
    }
}

/// Config of the `file_in` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInConfig {
    /// The file to read (relative paths resolve against the scenario's directory).
    pub path: PathBuf,
    /// How the file holds messages.
    #[serde(default)]
    pub format: InFormat,
}

/// The `file_in` gear type.
#[derive(Debug)]
pub struct FileIn;

impl GearKind for FileIn {
    type Config = FileInConfig;
    const NAME: &'static str = "file_in";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str =
        "Reads messages from a file (lines, JSON lines or a CBOR sequence), then ends";
    const DOCS: &'static str = "`lines`: each line becomes `{\"line\": \"<text>\"}`. `jsonl`: each line is \
        parsed as JSON into `data` (blank lines are skipped). `cbor`: a CBOR sequence of fluxMsg envelopes, \
        kept as they are (ids included). A line that is not UTF-8, not JSON or longer than 4 MiB goes to \
        the dead-letter log with its line number; reading continues. The file must exist when the \
        scenario is validated.";
    const EXAMPLE: &'static str =
        "- name: input\n  type: file_in\n  config: {path: data/orders.jsonl, format: jsonl}";

    fn check(config: &FileInConfig, ctx: &CheckContext) -> Vec<ConfigIssue> {
        let path = if config.path.is_absolute() {
            config.path.clone()
        } else {
            ctx.base_dir.join(&config.path)
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Vec::new(),
            Ok(_) => vec![ConfigIssue::new(
                "path",
                format!("{} is not a file", path.display()),
            )],
            Err(e) => vec![ConfigIssue::new(
                "path",
                format!("cannot read {}: {e}", path.display()),
            )],
        }
    }

    fn build(config: &FileInConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let path = ctx.resolve(&config.path);
        File::open(&path)
            .map_err(|e| BuildError(format!("cannot open {}: {e}", path.display())))?;
        Ok(Box::new(FileInGear {
            path,
            format: config.format,
            done: 0,
        }))
    }
}

struct FileInGear {
    path: PathBuf,
    format: InFormat,
    /// Records already emitted (a restarted gear resumes after them).
    done: u64,
}

impl Gear for FileInGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let origin = self.path.display().to_string();
            let file = tokio::fs::File::open(&self.path)
                .await
                .map_err(|e| GearError::io(origin.clone(), e))?;
            read_messages(file, self.format, &origin, io, &mut self.done).await
        })
    }
}

/// Config of the `stdin` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// How standard input holds messages.
    #[serde(default)]
    pub format: InFormat,
}

/// The `stdin` gear type.
#[derive(Debug)]
pub struct Stdin;

impl GearKind for Stdin {
    type Config = StdinConfig;
    const NAME: &'static str = "stdin";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str = "Reads messages from standard input until it closes";
    const DOCS: &'static str =
        "Formats as for `file_in`. The gear ends when standard input reaches end of file.";
    const EXAMPLE: &'static str = "- name: input\n  type: stdin\n  config: {format: jsonl}";

    fn build(config: &StdinConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(StdinGear {
            format: config.format,
            done: 0,
        }))
    }
}

struct StdinGear {
    format: InFormat,
    done: u64,
}

impl Gear for StdinGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let stdin = tokio::io::stdin();
            let cancel = io.ctx().cancel.clone();
            tokio::select! {
                r = read_messages(stdin, self.format, "stdin", io, &mut self.done) => r,
                () = cancel.cancelled() => Ok(()),
            }
        })
    }
}

/// How `file_out` opens its file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Add to the end of an existing file (default).
    #[default]
    Append,
    /// Start from an empty file.
    Truncate,
}

/// Config of the `file_out` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileOutConfig {
    /// The file to write (created with its directories; relative paths
    /// resolve against the scenario's directory).
    pub path: PathBuf,
    /// How to write messages.
    #[serde(default)]
    pub format: OutFormat,
    /// With `jsonl`, write each message's whole JSON form instead of its `data`.
    #[serde(default)]
    pub envelope: bool,
    /// Append to or truncate an existing file.
    #[serde(default)]
    pub mode: FileMode,
}

/// The `file_out` gear type.
#[derive(Debug)]
pub struct FileOut;

fn open_out(path: &std::path::Path, mode: FileMode) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = OpenOptions::new();
    o.create(true);
    match mode {
        FileMode::Append => o.append(true),
        FileMode::Truncate => o.write(true).truncate(true),
    };
    o.open(path)
}

impl GearKind for FileOut {
    type Config = FileOutConfig;
    const NAME: &'static str = "file_out";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str =
        "Writes messages to a file (JSON lines, lines or a CBOR sequence)";
    const DOCS: &'static str = "`jsonl` writes the message's `data` as one JSON object per line \
        (`envelope: true` writes the whole fluxMsg JSON form instead); `lines` writes text; `cbor` writes \
        deterministic CBOR envelopes back to back. Writes are batched and flushed whenever the input \
        momentarily runs dry, and at shutdown. A message with no JSON form (a map with non-text keys) \
        goes to `error`. In a Rack, each delivery is recorded in the write-ahead log with the file's \
        length after it (the file is synced first under the sync policy `always`); after a crash, in \
        `append` mode, the file is cut back to the last recorded length and the messages after it are \
        replayed: each message is in the file exactly once.";
    const EXAMPLE: &'static str =
        "- name: sink\n  type: file_out\n  config: {path: out/quickstart.jsonl, format: jsonl}";

    fn build(config: &FileOutConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let path = ctx.resolve(&config.path);
        let file = open_out(&path, config.mode)
            .map_err(|e| BuildError(format!("cannot open {} for writing: {e}", path.display())))?;
        Ok(Box::new(FileOutGear {
            path,
            file,
            mode: config.mode,
            format: config.format,
            envelope: config.envelope,
        }))
    }
}

struct FileOutGear {
    path: PathBuf,
    file: File,
    mode: FileMode,
    format: OutFormat,
    envelope: bool,
}

/// Where [`write_loop`] writes.
trait Output: Send {
    /// Writes the bytes, all of them.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Where the output ends now (a file's length); `None` for a stream.
    fn position(&self) -> Option<u64> {
        None
    }
    /// Makes what was written durable.
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file written at its end, its length tracked.
struct FileOutput<'a> {
    file: &'a mut File,
    len: u64,
}

impl Output for FileOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// Standard output.
struct StdoutOutput;

impl Output for StdoutOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }
}

/// The sink loop shared by `file_out` and `stdout`: take what is ready,
/// format it into one buffer, write it with one call, then report the
/// deliveries (with each message's end offset when the output is a file,
/// after syncing it when the Rack's sync policy is `always`).
async fn write_loop(
    io: &mut GearIo,
    format: OutFormat,
    envelope: bool,
    out: &mut dyn Output,
    what: &str,
) -> Result<(), GearError> {
    let mut batch = Vec::with_capacity(256);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut ends = Vec::with_capacity(256);
    let sync = io.sync_output();
    while let Some(first) = io.recv().await {
        batch.push(first);
        io.try_recv_many(&mut batch, 255);
        buf.clear();
        ends.clear();
        let base = out.position().unwrap_or(0);
        for msg in batch.drain(..) {
            let mark = buf.len();
            match write_msg(&mut buf, format, envelope, &msg) {
                Ok(()) => ends.push(base + buf.len() as u64),
                Err(e) => {
                    buf.truncate(mark);
                    io.fail(msg, e).await;
                }
            }
        }
        out.write(&buf)
            .map_err(|e| GearError::io(format!("writing {what}"), e))?;
        if out.position().is_some() {
            if sync {
                out.sync()
                    .map_err(|e| GearError::io(format!("syncing {what}"), e))?;
            }
            io.delivered_at(&ends).await?;
        } else {
            io.delivered(ends.len() as u64).await?;
        }
    }
    Ok(())
}

impl FileOutGear {
    /// Cuts the file back to the end of the last delivery the Rack
    /// recorded: bytes after it were written but never recorded (a crash
    /// came between), and their messages are replayed. Returns the length.
    fn recover(&mut self, io: &GearIo) -> Result<u64, GearError> {
        let what = self.path.display();
        let len = self
            .file
            .metadata()
            .map_err(|e| GearError::io(format!("reading the length of {what}"), e))?
            .len();
        // A truncated file starts empty at every build: no earlier offset applies.
        let Some(committed) = io
            .committed_offset()
            .filter(|_| self.mode == FileMode::Append)
        else {
            return Ok(len);
        };
        match committed.cmp(&len) {
            std::cmp::Ordering::Less => {
                self.file
                    .set_len(committed)
                    .map_err(|e| GearError::io(format!("cutting {what} back to {committed}"), e))?;
                self.file
                    .sync_all()
                    .map_err(|e| GearError::io(format!("syncing {what}"), e))?;
                tracing::info!(
                    file = %what, offset = committed, cut = len - committed,
                    "output cut back to its last recorded delivery; the rest is replayed"
                );
                Ok(committed)
            }
            std::cmp::Ordering::Equal => Ok(len),
            std::cmp::Ordering::Greater => {
                tracing::warn!(
                    file = %what, offset = committed, len,
                    "output is shorter than its last recorded delivery (replaced or cut by someone else?); writing on at its end"
                );
                Ok(len)
            }
        }
    }
}

impl Gear for FileOutGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let len = self.recover(io)?;
            let what = self.path.display().to_string();
            let mut out = FileOutput {
                file: &mut self.file,
                len,
            };
            write_loop(io, self.format, self.envelope, &mut out, &what).await
        })
    }
}

/// Config of the `stdout` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// How to write messages.
    #[serde(default)]
    pub format: OutFormat,
    /// With `jsonl`, write each message's whole JSON form instead of its `data`.
    #[serde(default)]
    pub envelope: bool,
}

/// The `stdout` gear type.
#[derive(Debug)]
pub struct Stdout;

impl GearKind for Stdout {
    type Config = StdoutConfig;
    const NAME: &'static str = "stdout";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str = "Writes messages to standard output";
    const DOCS: &'static str = "Formats as for `file_out`. Use `--quiet` with `fluxrig run` so the live \
        status does not mix with the output on a terminal.";
    const EXAMPLE: &'static str =
        "- name: console\n  type: stdout\n  config: {format: jsonl, envelope: true}";

    fn build(config: &StdoutConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        Ok(Box::new(StdoutGear {
            format: config.format,
            envelope: config.envelope,
        }))
    }
}

struct StdoutGear {
    format: OutFormat,
    envelope: bool,
}

impl Gear for StdoutGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            write_loop(io, self.format, self.envelope, &mut StdoutOutput, "stdout").await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::TestKit;
    use fluxrig_msg::FluxId;

    #[tokio::test]
    async fn file_in_reads_jsonl_and_dead_letters_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.jsonl"),
            "{\"a\":1}\n\nnot json\n{\"a\":2}\n",
        )
        .unwrap();
        let t = Typed::<FileIn>::new();
        let run = TestKit::new(&t, "{path: in.jsonl, format: jsonl}")
            .base_dir(dir.path())
            .run()
            .await
            .unwrap();
        let got: Vec<_> = run.outputs["out"]
            .iter()
            .map(|m| m.data.get("a").cloned().unwrap())
            .collect();
        assert_eq!(got, [Value::from(1), Value::from(2)]);
        assert_eq!(run.dead_letters.len(), 1);
        assert!(
            run.dead_letters[0].reason.contains("line 3: invalid JSON"),
            "{}",
            run.dead_letters[0].reason
        );
        assert_eq!(
            run.dead_letters[0].msg.raw.as_deref(),
            Some(&b"not json"[..])
        );
    }

    #[tokio::test]
    async fn missing_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let t = Typed::<FileIn>::new();
        let err = TestKit::new(&t, "{path: nope.txt}")
            .base_dir(dir.path())
            .run()
            .await
            .unwrap_err();
        assert!(err.starts_with("1:8: path: cannot read"), "{err}");
    }

    #[tokio::test]
    async fn file_out_then_file_in_round_trips_cbor_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let msgs: Vec<_> = (1..=300)
            .map(|i| {
                FluxMsg::new(
                    FluxId::from_raw(i),
                    Value::Map([("i", i)].into_iter().collect()),
                )
            })
            .collect();
        let out = Typed::<FileOut>::new();
        let run = TestKit::new(&out, "{path: sub/o.cbor, format: cbor}")
            .base_dir(dir.path())
            .inputs(msgs.clone())
            .run()
            .await
            .unwrap();
        assert_eq!(run.stats.messages_out, 300);
        let inp = Typed::<FileIn>::new();
        let run = TestKit::new(&inp, "{path: sub/o.cbor, format: cbor}")
            .base_dir(dir.path())
            .run()
            .await
            .unwrap();
        let back = &run.outputs["out"];
        assert_eq!(back.len(), 300);
        for (a, b) in msgs.iter().zip(back) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.data, b.data);
        }
    }

    #[tokio::test]
    async fn file_out_writes_data_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let msgs: Vec<_> = (1..=3)
            .map(|i| {
                FluxMsg::new(
                    FluxId::from_raw(i),
                    Value::Map([("seq", i)].into_iter().collect()),
                )
            })
            .collect();
        let out = Typed::<FileOut>::new();
        TestKit::new(&out, "{path: o.jsonl}")
            .base_dir(dir.path())
            .inputs(msgs)
            .run()
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("o.jsonl")).unwrap();
        assert_eq!(text, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n");
    }
}
