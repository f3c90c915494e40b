//! The real binary: it reports its bound addresses, and on SIGTERM lets an in-flight slow
//! request finish, then exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

/// Strips ANSI colour codes, in case the log writer adds them.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    if !have_tool("kill") {
        return;
    }
    let upstream = TestUpstream::standard().await;
    let dir = std::env::temp_dir().join(format!("sidecar-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n[proxy]\nshutdown_grace = \"15s\"\n",
            upstream.url()
        ),
    )
    .expect("write config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let stderr = child.stderr.take().expect("stderr");
    // Read the log on a thread; the listening line carries the bound addresses.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let (proxy, admin) = loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the binary logs its addresses in time");
        if line.contains("listening") {
            break (
                field(&line, "proxy").expect("proxy=ADDR in the listening line"),
                field(&line, "admin").expect("admin=ADDR in the listening line"),
            );
        }
    };
    let (status, _, _) = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    let in_flight = tokio::spawn(async move { get(&format!("http://{proxy}/slow?ms=1500")).await });
    upstream.wait_for(1).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    let (status, _, body) = in_flight.await.expect("in-flight request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow but done");

    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    let log: Vec<String> = lines_rx.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
