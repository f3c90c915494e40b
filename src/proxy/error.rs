//! The one place where an upstream failure becomes a response (502/504 with a short JSON body),
//! a log line and a metric reason.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why a request to the upstream produced no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unreachable, or the name did not resolve.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no connection within {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    /// The exchange failed: the upstream closed, sent garbage, or our request body broke.
    #[error("{}", causes(.0))]
    Request(hyper::Error),
    /// No response head within `proxy.response_header_timeout`.
    #[error("no response head within {}", humantime::format_duration(*.0))]
    HeadTimeout(Duration),
    /// The pool went away while a request waited for a connection (shutdown).
    #[error("the upstream pool is shutting down")]
    PoolClosed,
}

/// Why the proxy could not relay the upstream's answer: the `reason` label of
/// `consistency_proxy_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorReason {
    /// Refused, unreachable, or the name did not resolve.
    Connect,
    /// No connection or no response head within the configured time.
    Timeout,
    /// A body stream failed after the response began (either direction).
    Body,
    /// The upstream broke HTTP: closed early, sent garbage, reset.
    Protocol,
}

// === impl UpstreamError ===

impl UpstreamError {
    pub fn reason(&self) -> UpstreamErrorReason {
        match self {
            UpstreamError::Connect(_) | UpstreamError::PoolClosed => UpstreamErrorReason::Connect,
            UpstreamError::ConnectTimeout(_) | UpstreamError::HeadTimeout(_) => {
                UpstreamErrorReason::Timeout
            }
            // Our side of the exchange broke: the client's request body stream failed.
            UpstreamError::Request(e) if e.is_user() || e.is_body_write_aborted() => {
                UpstreamErrorReason::Body
            }
            UpstreamError::Request(e) if e.is_timeout() || timed_out(e) => {
                UpstreamErrorReason::Timeout
            }
            UpstreamError::Request(_) => UpstreamErrorReason::Protocol,
        }
    }

    /// The backend closed a kept-alive connection under us: the request never reached it, or
    /// no byte of an answer came back.
    pub(crate) fn is_stale_connection(&self) -> bool {
        let UpstreamError::Request(e) = self else {
            return false;
        };
        e.is_canceled()
            || e.is_closed()
            || e.is_incomplete_message()
            || chain(e).any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::UnexpectedEof
                    )
                })
            })
    }

    /// Logs the failure and answers for the upstream; the caller counts `reason()`.
    pub fn into_response(self, authority: &str) -> Response<Full<Bytes>> {
        let reason = self.reason();
        let detail = format!("upstream {authority}: {self}");
        tracing::warn!(reason = reason.as_str(), %detail, "upstream request failed");
        let (status, error) = match reason {
            UpstreamErrorReason::Connect => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            UpstreamErrorReason::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            UpstreamErrorReason::Body => (StatusCode::BAD_GATEWAY, "body_stream_failed"),
            UpstreamErrorReason::Protocol => (StatusCode::BAD_GATEWAY, "upstream_protocol_error"),
        };
        error_response(status, error, &detail)
    }
}

// === impl UpstreamErrorReason ===

impl UpstreamErrorReason {
    pub const ALL: [UpstreamErrorReason; 4] = [
        UpstreamErrorReason::Connect,
        UpstreamErrorReason::Timeout,
        UpstreamErrorReason::Body,
        UpstreamErrorReason::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorReason::Connect => "connect",
            UpstreamErrorReason::Timeout => "timeout",
            UpstreamErrorReason::Body => "body",
            UpstreamErrorReason::Protocol => "protocol",
        }
    }
}

/// A response the proxy makes itself: `{"error": ..., "detail": ...}`.
pub fn error_response(status: StatusCode, error: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(err);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

fn timed_out(err: &hyper::Error) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// hyper's outer errors are generic ("connection closed before message completed"); the causes
/// say what happened.
fn causes(err: &hyper::Error) -> String {
    chain(err)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
