//! Helpers shared by fluxrig's tests: where things are, how to start real
//! peers (Python tools in the project's venv, servers on free loopback
//! ports), and proptest strategies for fluxrig's types.
//!
//! Tests talk to real peers; nothing here fakes one.

#![allow(clippy::missing_panics_doc, clippy::unwrap_used)] // test helpers panic by design

pub mod strategies;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (where `Cargo.lock` is).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("Cargo.lock").exists())
        .unwrap_or_else(|| here.parent().and_then(Path::parent).unwrap_or(here))
        .to_path_buf()
}

/// The Python interpreter of the project's test venv (`.venv`, made by
/// `make test-deps`), or `$FLUXRIG_PYTHON`.
///
/// Panics with the command to run when the venv is missing: a test that
/// needs a real peer fails rather than passes without it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLUXRIG_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the test venv is missing: run `make test-deps` (or `make test`, which does it)"
    );
    venv
}

/// A `Command` running a Python script from `tests/python/` with the venv's interpreter.
pub fn python_script(name: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(workspace_root().join("tests/python").join(name));
    c
}

/// A child process killed (and reaped) when dropped, so a failing test
/// never leaves a server behind.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Starts `cmd` with stdout piped and waits for its first line that
    /// starts with `prefix`; returns the guard and the rest of that line
    /// (e.g. a port a server chose).
    pub fn spawn_and_wait_for(mut cmd: Command, prefix: &str) -> (ChildGuard, String) {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let guard = ChildGuard(child);
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        // Keep draining stdout so the peer never blocks on a full pipe.
                        std::thread::spawn(move || for _ in lines {});
                        return (guard, rest.trim().to_owned());
                    }
                }
                _ => panic!("the peer exited before printing `{prefix}`"),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Raises this process's soft limit of open files to at least `n` (up to
/// the hard limit; children started afterwards inherit it), for tests that
/// hold many connections. Panics, naming the limits, when the hard limit
/// is below `n`.
pub fn raise_open_files(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= n) {
        return;
    }
    assert!(
        now.maximum.is_none_or(|m| m >= n),
        "this test needs {n} open files; the hard limit is {:?} (raise it: ulimit -Hn)",
        now.maximum
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: now.maximum,
        },
    )
    .expect("raise the limit of open files");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `openssl` with `args` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`,
/// `client.key`) in `dir`, made with the `openssl` command, valid 2 days.
pub fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fluxrig test CA",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, extf, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN=fluxrig test {name}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }
}
