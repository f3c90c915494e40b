//! The Python stand-in of the legacy backend (`tests/standin/legacy_backend.py`) with its
//! ledger, the sidecar as its real binary in front of it, and a client by socket address.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The Python stand-in of the legacy backend, killed on drop.
pub struct StandIn {
    child: Child,
    pub port: u16,
}

impl StandIn {
    /// Starts `tests/standin/legacy_backend.py`; `None` when python3 is missing (outside CI).
    pub fn start(args: &[&str]) -> Option<StandIn> {
        if !super::have_tool("python3") {
            return None;
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/standin/legacy_backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("stand-in prints its port");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the stand-in: {line:?}"));
        Some(StandIn { child, port })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub async fn ledger(&self) -> Value {
        let (status, _, body) = get(self.addr(), "/__ledger").await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).expect("ledger is JSON")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sidecar binary, killed on drop.
pub struct Sidecar {
    child: Child,
    config: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

static CONFIGS: AtomicUsize = AtomicUsize::new(0);

impl Sidecar {
    /// Starts the sidecar on port 0 in front of `127.0.0.1:upstream_port` with `extra` TOML,
    /// and learns its addresses from the line it logs once it listens.
    pub async fn start(upstream_port: u16, extra: &str) -> Sidecar {
        let config = std::env::temp_dir().join(format!(
            "consistency-sidecar-test-{}-{}.toml",
            std::process::id(),
            CONFIGS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&config, extra).expect("write test config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--upstream", &format!("http://127.0.0.1:{upstream_port}")])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,consistency_sidecar::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sidecar starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tell, listening) = std::sync::mpsc::channel();
        // Drains stderr for the process's whole life, so the sidecar never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
            let mut before = Vec::new();
            let found = lines.by_ref().find(|line| {
                before.push(line.clone());
                line.contains("listening")
            });
            let _ = tell.send(found.ok_or_else(|| before.join("\n")));
            lines.for_each(drop);
        });
        let line = match listening.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(line)) => line,
            Ok(Err(log)) => panic!("sidecar stopped before listening:\n{log}"),
            Err(_) => panic!("sidecar did not listen within 15s"),
        };
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} address in {line:?}"))
        };
        Sidecar {
            proxy: addr("proxy="),
            admin: addr("admin="),
            child,
            config,
        }
    }

    pub async fn metrics(&self) -> String {
        let (status, headers, body) = get(self.admin, "/metrics").await;
        assert_eq!(status, 200);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        String::from_utf8(body.to_vec()).expect("metrics are text")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

type Answer = (u16, HeaderMap, Bytes);

async fn send(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: &str,
) -> Result<Answer, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}

pub async fn try_get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    send(addr, http::Method::GET, path, "").await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, http::Method::GET, path, "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    send(addr, http::Method::POST, path, body)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// The body as JSON bytes, undoing any Content-Encoding.
pub fn decode(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let mut out = Vec::new();
    match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut out),
        _ => return body.to_vec(),
    }
    .expect("body decodes");
    out
}

/// The value of the single series of `name` carrying all `labels`, in a text exposition.
pub fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "exactly one series {name}{labels:?}");
    found[0]
}
