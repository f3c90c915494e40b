//! Shared helpers of the `tests/deploy_*.rs` tests: external tools, temp dirs, child processes,
//! a tiny HTTP client and a YAML-subset reader for the files under `deploy/`.
#![allow(dead_code)] // each test binary uses its own share of these helpers

pub mod yaml;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `deploy/`.
pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Finds an external program on PATH (or /usr/bin, /usr/sbin, where Debian puts them).
///
/// Missing: with `CI=true` the test fails, because CI installs every tool these tests need;
/// elsewhere the test is skipped with a note on stderr (`None`).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(found);
    }
    missing(&format!("`{name}` not found on PATH"));
    None
}

/// A prerequisite is missing: fail in CI, skip elsewhere.
pub fn missing(what: &str) {
    if in_ci() {
        panic!("{what}, and CI=true: CI must install it (see .ci/run)");
    }
    eprintln!("SKIPPED: {what} (set CI=true to make this a failure)");
}

/// Runs a command to completion; returns its output whatever the status.
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

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on right now (bind :0, read, drop; a small race is accepted).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A child process that is killed (by its pid) and reaped when the guard drops, pass or panic.
pub struct ChildGuard {
    pub name: String,
    pub child: Child,
    /// Where its stdout/stderr went, for the failure report.
    pub log: Option<PathBuf>,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child, log: Option<PathBuf>) -> ChildGuard {
        ChildGuard {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process already exited (it should be serving).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}){}", self.name, self.log_tail());
        }
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "\n--- last lines of {} ({})\n{tail}",
            self.name,
            log.display()
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
pub fn spawn_logged(name: &str, mut cmd: Command, log: PathBuf) -> ChildGuard {
    let out = std::fs::File::create(&log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let err = out.try_clone().expect("clone log handle");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    ChildGuard::new(name, child, Some(log))
}

/// Spawns `cmd` and waits for a first stdout line `LISTENING <port>` (the stand-in's handshake);
/// the rest of stdout is drained into `log` so the child never blocks on a full pipe.
pub fn spawn_listening(
    name: &str,
    mut cmd: Command,
    log: PathBuf,
    timeout: Duration,
) -> (ChildGuard, u16) {
    let err = std::fs::File::create(&log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err.try_clone().expect("clone log handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ChildGuard::new(name, child, Some(log));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first.and_then(Result::ok));
        let mut err = err;
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(err, "{line}");
        }
    });
    let first = match rx.recv_timeout(timeout) {
        Ok(Some(line)) => line,
        Ok(None) => panic!(
            "{name} closed stdout before `LISTENING <port>`{}",
            guard.log_tail()
        ),
        Err(_) => panic!(
            "{name} printed no `LISTENING <port>` within {timeout:?}{}",
            guard.log_tail()
        ),
    };
    let port = first
        .strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name}: first stdout line {first:?} is not `LISTENING <port>`"));
    (guard, port)
}

/// An HTTP response as the tests need it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), body read to the end.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(body) = body {
        req.push_str(body);
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn get(addr: &str, path: &str) -> std::io::Result<Response> {
    http("GET", addr, path, None, Duration::from_secs(10))
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986's unreserved characters).
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// The durations and names of `rules.yml` the tests need, read line by line.
pub struct RuleFile {
    /// `(name, expr)` of every recording rule, in file order.
    pub records: Vec<(String, String)>,
    /// `(name, expr)` of every alerting rule, in file order.
    pub alerts: Vec<(String, String)>,
}

impl RuleFile {
    /// Reads a rules file with the structure of `deploy/prometheus/rules.yml`.
    pub fn parse(text: &str) -> RuleFile {
        let doc = yaml::parse(text);
        let mut records = Vec::new();
        let mut alerts = Vec::new();
        for group in doc.get("groups").seq() {
            for rule in group.get("rules").seq() {
                let expr = rule.get("expr").str().trim().to_string();
                if let Some(name) = rule.opt("record") {
                    records.push((name.str().to_string(), expr));
                } else {
                    alerts.push((rule.get("alert").str().to_string(), expr));
                }
            }
        }
        RuleFile { records, alerts }
    }
}
