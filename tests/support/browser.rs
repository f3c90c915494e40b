//! A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol: one page,
//! with every network request, console message and uncaught exception it produced on record.
//!
//! The browser listens on a loopback port it picks itself (`--remote-debugging-port=0`, read back
//! from `DevToolsActivePort` in its fresh profile) and is closed, then killed by its pid, on drop.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::process::tool;
use super::PATIENCE;

/// Flags for a quiet, self-contained browser: no sandbox (containers run tests as root), no GPU,
/// and none of Chromium's own background traffic (updates, sync, field trials).
const FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1600",
];

pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Every event received, in order (each carries the `sessionId` of its page).
    events: Vec<Value>,
    /// The page's DevTools session, once [`Browser::open`] has run.
    session: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

// === impl Browser ===

impl Browser {
    /// Starts `chromium` with a new empty profile; `None` when it is not installed (outside CI,
    /// see [`tool`]).
    pub fn launch() -> Option<Browser> {
        let chromium = tool("chromium")?;
        let dir = tempfile::tempdir().expect("a temporary directory for the browser");
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromium.log");
        let stderr = std::fs::File::create(&log).expect("chromium log file");
        let mut child = Command::new(chromium)
            .args(FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("chromium starts");
        let (port, path) = match wait_for_devtools(&profile, &mut child) {
            Ok(found) => found,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{why}{}", tail(&log));
            }
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket handshake: {e}"));
        // Short reads from here on, so waits can check their deadline between messages.
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Some(Browser {
            child,
            socket,
            next_id: 1,
            events: Vec::new(),
            session: None,
            log,
            _dir: dir,
        })
    }

    /// Opens a new page with the network, console and log domains recording, loads `url` and
    /// waits for its load event.
    pub fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        );
        for domain in ["Page", "Runtime", "Network", "Log"] {
            self.call(&format!("{domain}.enable"), json!({}));
        }
        let navigated = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = navigated.get("errorText") {
            panic!("cannot load {url}: {error}");
        }
        self.wait_until("the page's load event", PATIENCE, |b| {
            b.page_events("Page.loadEventFired").next().map(|_| ())
        });
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value as JSON.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Calls `check` (events keep arriving in between) until it returns `Some`, or fails.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}{}",
                tail(&self.log)
            );
            // Whatever arrives meanwhile is recorded.
            let _ = self.next_message(Instant::now() + Duration::from_millis(100));
        }
    }

    /// The URL of every request the page made, in order.
    pub fn requests(&self) -> Vec<String> {
        self.page_events("Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str())
            .map(str::to_string)
            .collect()
    }

    /// Requests that failed (refused, blocked by the content security policy, aborted).
    pub fn failed_requests(&self) -> Vec<String> {
        self.page_events("Network.loadingFailed")
            .map(|e| e["params"].to_string())
            .collect()
    }

    /// Console errors and assertions, uncaught exceptions and browser log errors, as text.
    pub fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for event in self.events.iter().filter(|e| self.on_page(e)) {
            let params = &event["params"];
            let bad = match event["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    matches!(params["type"].as_str(), Some("error" | "assert"))
                }
                Some("Runtime.exceptionThrown") => true,
                Some("Log.entryAdded") => params["entry"]["level"] == "error",
                _ => false,
            };
            if bad {
                errors.push(params.to_string());
            }
        }
        errors
    }

    /// Main-frame navigations so far (a reload counts as one more).
    pub fn navigations(&self) -> usize {
        self.page_events("Page.frameNavigated")
            .filter(|e| e["params"]["frame"].get("parentId").is_none())
            .count()
    }

    /// The page's traffic so far as HAR 1.2, as DevTools' "Save all as HAR with content"
    /// writes it: one entry per finished request, from the Network domain's events, each
    /// body read back with `Network.getResponseBody`.
    pub fn har(&mut self) -> Value {
        let finished: Vec<String> = self
            .page_events("Network.loadingFinished")
            .filter_map(|e| e["params"]["requestId"].as_str())
            .map(str::to_string)
            .collect();
        let mut entries = Vec::new();
        for id in finished {
            let sent = self
                .page_events("Network.requestWillBeSent")
                .find(|e| e["params"]["requestId"] == id.as_str())
                .map(|e| e["params"].clone());
            let received = self
                .page_events("Network.responseReceived")
                .find(|e| e["params"]["requestId"] == id.as_str())
                .map(|e| e["params"]["response"].clone());
            let (Some(sent), Some(received)) = (sent, received) else {
                continue;
            };
            let body = self.call("Network.getResponseBody", json!({ "requestId": id }));
            let wall = sent["wallTime"].as_f64().unwrap_or(0.0);
            let started = std::time::UNIX_EPOCH + Duration::from_secs_f64(wall);
            let mut content = json!({
                "size": body["body"].as_str().map_or(0, str::len),
                "mimeType": received["mimeType"],
                "text": body["body"],
            });
            if body["base64Encoded"] == true {
                content["encoding"] = json!("base64");
            }
            entries.push(json!({
                "startedDateTime": humantime::format_rfc3339_millis(started).to_string(),
                "time": 0,
                "request": {
                    "method": sent["request"]["method"],
                    "url": sent["request"]["url"],
                    "httpVersion": "HTTP/1.1",
                    "headers": [], "queryString": [], "cookies": [],
                    "headersSize": -1, "bodySize": -1,
                },
                "response": {
                    "status": received["status"],
                    "statusText": received["statusText"],
                    "httpVersion": "HTTP/1.1",
                    "headers": [], "cookies": [],
                    "content": content,
                    "redirectURL": "",
                    "headersSize": -1, "bodySize": -1,
                },
                "cache": {},
                "timings": { "send": 0, "wait": 0, "receive": 0 },
            }));
        }
        json!({
            "log": {
                "version": "1.2",
                "creator": { "name": "consistency-sidecar tests", "version": "1" },
                "pages": [],
                "entries": entries,
            }
        })
    }

    fn page_events<'a>(&'a self, method: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| e["method"] == method && self.on_page(e))
    }

    fn on_page(&self, event: &Value) -> bool {
        self.session.is_some() && event["sessionId"].as_str() == self.session.as_deref()
    }

    /// Sends one command (to the page once one is open) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Some(answer) = self.next_message(deadline) else {
                panic!(
                    "no answer to {method} within {PATIENCE:?}{}",
                    tail(&self.log)
                );
            };
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    panic!("{method} failed: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// The next message before `deadline`; events are recorded on the way.
    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("DevTools sent bad JSON ({e}): {text}"));
                    if value.get("id").is_none() {
                        self.events.push(value.clone());
                    }
                    return Some(value);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("DevTools connection failed: {e}{}", tail(&self.log)),
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A clean close lets Chromium take its helper processes down with it.
        let close = json!({ "id": self.next_id, "method": "Browser.close" });
        let _ = self.socket.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for Chromium to write the port and path of its DevTools endpoint into the profile.
fn wait_for_devtools(profile: &Path, child: &mut Child) -> Result<(u16, String), String> {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut text = String::new();
        if std::fs::File::open(&file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
        {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse() {
                    return Ok((port, path.trim().to_string()));
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromium exited before listening ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "chromium wrote no {} within {PATIENCE:?}",
                file.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "\n--- last lines of chromium's log\n{}",
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}
