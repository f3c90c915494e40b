//! The pooled keep-alive client to the upstream, and the one place where an upstream failure
//! becomes a response (502/504 with a small JSON body) and a metric.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{BoxError, ProxyBody};
use crate::config::ProxyConfig;
use crate::metrics::{Metrics, UpstreamErrorReason};

/// The upstream client: hyper-util's pooled HTTP/1.1 client.
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Builds the client with the configured connect timeout and keep-alive pool.
pub fn upstream_client(proxy: &ProxyConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(proxy.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        // Below the backend's keep-alive, so we never send on a socket it is closing.
        .pool_idle_timeout(proxy.upstream_idle_timeout)
        .pool_max_idle_per_host(proxy.upstream_max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // Header-name case as the client sent it (the server side records it), and as the
        // upstream sent it on the way back: legacy backends sometimes care.
        .http1_preserve_header_case(true)
        .build(connector)
}

/// Why a request to the upstream produced no response head.
#[derive(Debug)]
pub(crate) enum UpstreamFailure {
    /// The request failed; the client's error says how.
    Request(hyper_util::client::legacy::Error),
    /// No response head within `proxy.response_header_timeout`.
    HeadTimeout(Duration),
}

// === impl UpstreamFailure ===

impl UpstreamFailure {
    pub(crate) fn reason(&self) -> UpstreamErrorReason {
        let err = match self {
            UpstreamFailure::HeadTimeout(_) => return UpstreamErrorReason::Timeout,
            UpstreamFailure::Request(err) => err,
        };
        let timed_out = chain(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if err.is_connect() {
            return if timed_out {
                UpstreamErrorReason::Timeout
            } else {
                UpstreamErrorReason::Connect
            };
        }
        let hyper_err = chain(err).find_map(|e| e.downcast_ref::<hyper::Error>());
        match hyper_err {
            // Our side of the exchange broke: the client's request body stream failed.
            Some(e) if e.is_user() || e.is_body_write_aborted() => UpstreamErrorReason::Body,
            Some(e) if e.is_timeout() => UpstreamErrorReason::Timeout,
            _ if timed_out => UpstreamErrorReason::Timeout,
            _ => UpstreamErrorReason::Protocol,
        }
    }

    fn detail(&self, authority: &str) -> String {
        match self {
            UpstreamFailure::HeadTimeout(after) => format!(
                "no response head from upstream {authority} within {}",
                humantime::format_duration(*after)
            ),
            UpstreamFailure::Request(err) => {
                // The outer errors are generic ("client error (Connect)"); the causes say what happened.
                let causes: Vec<String> = chain(err).map(|e| e.to_string()).collect();
                format!("upstream {authority}: {}", causes.join(": "))
            }
        }
    }

    /// Counts the failure, logs it, and answers for the upstream.
    pub(crate) fn into_response(self, metrics: &Metrics, authority: &str) -> Response<ProxyBody> {
        let reason = self.reason();
        metrics.upstream_error(reason);
        let detail = self.detail(authority);
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

/// A response the proxy makes itself: `{"error": ..., "detail": ...}`.
pub fn error_response(status: StatusCode, error: &str, detail: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The upstream's response body, counting a failure mid-stream as `reason="body"`.
///
/// The error itself travels on to hyper, which then aborts the client connection: the client
/// sees a broken response (reset, or a chunked stream without its last chunk), never a shorter
/// body that looks complete.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    metrics: Arc<Metrics>,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, metrics: Arc<Metrics>) -> UpstreamBody {
        UpstreamBody { inner, metrics }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                this.metrics.upstream_error(UpstreamErrorReason::Body);
                tracing::warn!(error = %err, "upstream response body failed mid-stream");
                Poll::Ready(Some(Err(err.into())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
