//! Which protocol a new client connection speaks, and the hyper connection that serves it:
//! HTTP/2 with prior knowledge (h2c) opens with the connection preface, anything else is
//! HTTP/1.x.
//!
//! hyper-util's `auto` builder tells them apart by reading the first bytes and replaying them in
//! front of the socket. hyper's read buffer then starts with those bytes in it, and its next
//! reserve doubles it: 16 KiB per connection instead of 8, kept for the connection's life
//! (measured with massif, BENCHMARKS.md "Idle connections"). Peeking leaves the bytes in the
//! kernel's buffer, so hyper's first read takes the whole head into its own 8 KiB.

use std::io;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use crate::settings::Settings;

/// What every HTTP/2 connection opens with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client that has sent only the start of the preface is looked at again after this. The
/// bytes stay in the socket's buffer, so its readiness cannot say when more arrive; such a
/// client is rare (an HTTP/1 request line starting "PR", cut short), and the connection's head
/// deadline bounds the wait.
const PARTIAL_PREFACE_RECHECK: Duration = Duration::from_millis(10);

/// hyper's default limit on the number of request header fields.
const HYPER_MAX_HEADERS: usize = 100;

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// hyper's two server builders, configured from `[proxy]` once per worker.
#[derive(Debug)]
pub(super) struct Protocols {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// Reads the protocol off the first bytes without taking them from the socket. End of stream
/// before any byte counts as HTTP/1 (hyper then sees the end and finishes).
pub(super) async fn sniff(stream: &TcpStream) -> io::Result<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let seen = stream.peek(&mut first).await?;
        if seen == 0 || first[..seen] != H2_PREFACE[..seen] {
            return Ok(Protocol::Http1);
        }
        if seen == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        tokio::time::sleep(PARTIAL_PREFACE_RECHECK).await;
    }
}

// === impl Protocols ===

impl Protocols {
    /// HTTP/1.1 and h2c, with the client-side limits from `[proxy]`.
    pub(super) fn new(settings: &Settings) -> Protocols {
        let proxy = &settings.config.proxy;
        let mut http1 = http1::Builder::new();
        http1
            // The connection keeps its own head deadline (`super::deadlines`); hyper's would
            // arm a timer per request.
            .header_read_timeout(None)
            .max_buf_size(proxy.max_header_bytes)
            .preserve_header_case(true);
        // hyper's own limit is 100 headers, on the stack; any other limit costs a buffer of
        // that many header slots filled in for every request.
        if proxy.max_headers != HYPER_MAX_HEADERS {
            http1.max_headers(proxy.max_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
        Protocols { http1, http2 }
    }
}
