//! Processes of a test: the `tandem` binary under test, children whose
//! stdout and stderr go to files (so that a failed test can print their
//! tail, and a test can wait for a line such as the listening address),
//! `kill -9`, SIGTERM with a deadline, reaping of the regions a SIGKILLed
//! `tandem up` leaves behind, one-shot command runs with a time limit, and a
//! process started with any arguments that serves HTTP ([`Served`]).
//!
//! Integration tests know the binary as `env!("CARGO_BIN_EXE_tandem")`, which
//! only the test crate can expand: each test file names it once,
//! `const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));`, and
//! everything that starts a process takes it from there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

use crate::endpoint::Endpoint;

/// Pause between two polls of a process's exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// The `tandem` binary under test.
#[derive(Debug, Clone, Copy)]
pub struct Tandem(&'static str);

impl Tandem {
    pub const fn at(path: &'static str) -> Tandem {
        Tandem(path)
    }

    pub fn path(self) -> &'static Path {
        Path::new(self.0)
    }

    /// A command running the binary, stdin closed.
    pub fn command(self) -> Command {
        let mut cmd = Command::new(self.0);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `tandem ARGS` to completion, with its output captured.
    pub fn run(self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().unwrap_or_else(|e| panic!("run tandem: {e}"));
        Output::of(out)
    }
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn of(out: std::process::Output) -> Output {
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout followed by stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion with its output in `out` and `err` (which may be
/// the same file); after `timeout` it is killed and the run panics.
pub fn run_logged(mut cmd: Command, out: &Path, err: &Path, timeout: Duration) -> Output {
    let stdout = File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let stderr = if err == out {
        stdout.try_clone().expect("clone the log handle")
    } else {
        File::create(err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()))
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the command") {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}:\n{}",
                std::fs::read_to_string(out).unwrap_or_default()
            );
        }
        std::thread::sleep(EXIT_POLL);
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let stdout = read(out);
    let stderr = if err == out { String::new() } else { read(err) };
    Output { code: status.code(), stdout, stderr }
}

/// A running child whose stdout and stderr are appended to files. Killed
/// (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    /// Length of the stdout file when this run started: its lines follow.
    stdout_from: u64,
}

impl Proc {
    /// Spawn `cmd` with stdout appended to `stdout` and stderr to `stderr`
    /// (the same file when they are equal).
    pub fn spawn(mut cmd: Command, stdout: &Path, stderr: &Path) -> Proc {
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        let out = open(stdout);
        let stdout_from = out.metadata().map_or(0, |m| m.len());
        let err =
            if stderr == stdout { out.try_clone().expect("clone the log") } else { open(stderr) };
        cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, stdout: stdout.to_owned(), stdout_from }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The first line this run printed to stdout, once it is complete; `Err`
    /// when the process exits first or `timeout` passes.
    pub fn first_line(&mut self, timeout: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            if let Some((line, _)) = self.stdout_lines().split_once('\n') {
                return Ok(line.to_owned());
            }
            if let Some(exit) = self.exited() {
                return Err(format!("exited ({exit}) before printing a line"));
            }
            if started.elapsed() > timeout {
                return Err(format!("printed no line within {timeout:?}"));
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// What this run printed to stdout so far.
    fn stdout_lines(&self) -> String {
        let Ok(mut f) = File::open(&self.stdout) else { return String::new() };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(self.stdout_from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM and wait up to `timeout` for the exit: the status and how long
    /// it took, or `Err(self)` (still running) on time-out.
    pub fn terminate(mut self, timeout: Duration) -> Result<(ExitStatus, Duration), Proc> {
        let started = Instant::now();
        self.signal(Signal::SIGTERM);
        match self.wait(timeout) {
            Some(exit) => Ok((exit, started.elapsed())),
            None => Err(self),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`. True
    /// when it exited on the SIGTERM.
    pub fn stop(self, timeout: Duration) -> bool {
        self.signal(Signal::SIGTERM);
        self.finish(timeout)
    }

    /// Wait up to `timeout` for an exit already asked for, then SIGKILL.
    /// True when it exited in time.
    pub fn finish(mut self, timeout: Duration) -> bool {
        self.wait(timeout).is_some()
    }

    /// Wait up to `timeout` for the exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited() {
                return Some(exit);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    pub fn signal(&self, signal: Signal) {
        let _ = send_signal(Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `tandem` process started with any arguments (`tandem router`, or a node
/// with options [`crate::Node`] does not take) that prints `... listening on
/// <url>` first on stdout; an [`Endpoint`] at that URL. Its output goes to
/// files in its own directory; it is killed when dropped (after printing its log when the
/// test is failing).
pub struct Served {
    proc: Option<Proc>,
    dir: tempfile::TempDir,
    endpoint: Endpoint,
    /// The first line it printed.
    pub line: String,
}

impl Tandem {
    /// Start `tandem ARGS` with `env` added to the test's environment and
    /// wait (up to [`crate::node::START_TIMEOUT`]) for its listening line.
    pub fn serve(self, args: &[&str], env: &[(&str, &str)]) -> Served {
        let dir = tempfile::Builder::new().prefix("tandem-served-").tempdir().expect("tempdir");
        let mut cmd = self.command();
        cmd.args(args).envs(env.iter().copied());
        let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
        let mut proc = Proc::spawn(cmd, &out, &err);
        let timeout = crate::node::START_TIMEOUT;
        let line = proc.first_line(timeout).unwrap_or_else(|why| {
            panic!("`tandem {}` {why}:\n{}", args.join(" "), log_tail(&err, 40))
        });
        let Some(url) = line.split("listening on ").nth(1).map(str::trim) else {
            panic!("`tandem {}` printed no listening line: {line:?}", args.join(" "))
        };
        let endpoint = Endpoint::new(url);
        Served { proc: Some(proc), dir, endpoint, line }
    }
}

impl Served {
    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Everything it printed to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// A served process's requests are its endpoint's.
impl std::ops::Deref for Served {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", log_tail(&self.dir.path().join("stderr.log"), 80));
        }
    }
}

/// SIGKILL every process whose command line names `needle` (a deployment's
/// directory): the regions left behind by a `tandem up` that had to be
/// SIGKILLed, or that never finished starting. A pid that was reused by an
/// unrelated process does not name the directory and is left alone.
pub fn kill_orphans(needle: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let needle = needle.to_string_lossy().into_owned();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The names of the environment variables of a running process.
pub fn env_names(pid: u32) -> std::collections::BTreeSet<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("environment of {pid}: {e}"));
    raw.split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

/// The last `n` lines of a log file, headed by its path.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    format!("---- {} (last {} lines)\n{}\n", path.display(), tail.len(), tail.join("\n"))
}
