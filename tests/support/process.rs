//! External programs in tests: finding a tool (skip, or fail in CI), running a command to its
//! end, and [`Process`], a long-running child killed on drop whose output is kept for the test.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::PATIENCE;

pub use super::tool::{in_ci, on_path, tool};

/// A loopback address nothing listens on: bound on port 0, read, released.
///
/// Only for tests of what happens when nothing answers there. A server a test starts binds
/// port 0 itself and reports the port it got (see [`Process::wait_for_line`]).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Runs a command to completion in `dir`; returns its output whatever the exit status.
pub fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Runs a command and fails the test, showing its output, unless it exits 0.
pub fn run_ok(program: &Path, args: &[&str], dir: &Path) -> Output {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        program.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

/// Lines kept per process; older ones are dropped, so a chatty child cannot grow the test.
const KEPT_LINES: usize = 20_000;

/// The output of a child, line by line, shared with the threads that drain its pipes.
struct Log {
    lines: Mutex<VecDeque<String>>,
    /// Pipes still open; at zero the child has closed both (it exited, as a rule).
    open: Mutex<usize>,
    changed: Notify,
}

/// A child process with stdout and stderr drained into memory for its whole life (it never
/// blocks on a full pipe), killed by its pid and reaped when dropped, pass or panic.
pub struct Process {
    name: String,
    child: Child,
    log: Arc<Log>,
}

// === impl Process ===

impl Process {
    /// Spawns `cmd` with stdin closed and both output streams captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Log {
            lines: Mutex::new(VecDeque::new()),
            open: Mutex::new(2),
            changed: Notify::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        drain(stdout, log.clone());
        drain(stderr, log.clone());
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the child printed so far (stdout and stderr interleaved as they arrived).
    pub fn lines(&self) -> Vec<String> {
        self.log
            .lines
            .lock()
            .expect("log lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Waits until `find` accepts a line of output and returns what it made of it: the
    /// handshake of a server that binds port 0 and prints the address it got. Fails with the
    /// log if the child closes its output first, or after [`PATIENCE`].
    pub async fn wait_for_line<T>(&self, what: &str, mut find: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Registered before looking, so a line that lands in between still wakes us.
            let changed = self.log.changed.notified();
            // Read before the lines: a pipe is closed only after its last line is in.
            let closed = *self.log.open.lock().expect("log lock") == 0;
            let found = self
                .log
                .lines
                .lock()
                .expect("log lock")
                .iter()
                .find_map(|line| find(line));
            if let Some(found) = found {
                return found;
            }
            if closed {
                panic!(
                    "{} ended its output before {what}{}",
                    self.name,
                    self.tail()
                );
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "{} printed no {what} within {PATIENCE:?}{}",
                    self.name,
                    self.tail()
                );
            }
        }
    }

    /// Sends SIGTERM through `kill` (found with [`tool`]): no unsafe code, no extra crate.
    pub fn terminate(&self, kill: &Path) {
        self.signal(kill, "TERM");
    }

    /// Sends the signal `name` (`TERM`, `HUP`, ...) through `kill`.
    pub fn signal(&self, kill: &Path, name: &str) {
        let status = Command::new(kill)
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Waits, at most [`PATIENCE`], for the child to exit by itself.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}{}",
                self.name,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of output, for failure messages.
    pub fn tail(&self) -> String {
        let lines = self.lines();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("\n--- last lines of {}\n{tail}", self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a pipe into the log on its own thread until the child closes it.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Log>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut lines = log.lines.lock().expect("log lock");
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
            drop(lines);
            log.changed.notify_waiters();
        }
        *log.open.lock().expect("log lock") -= 1;
        log.changed.notify_waiters();
    });
}
