//! The innermost service: rewrites the request for the upstream (hop-by-hop headers out,
//! `X-Forwarded-*` and `Via` in, target pinned to the configured upstream), sends it through the
//! upstream service it is given, and rewrites the response on its way back. Bodies stream
//! through untouched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::upgrade::OnUpgrade;
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tower::Service;

use super::body::ProxyBody;
use super::error::{error_response, UpstreamError, UpstreamErrorReason};
use super::headers::{self, ClientAddr};
use super::metrics::ProxyMetrics;
use super::upgrade;
use crate::clock::LastSeen;
use crate::BoxError;

/// The upstream's body as it streams, or a response the proxy made itself.
pub type ForwardBody<B> = Either<UpstreamBody<B>, Full<Bytes>>;

/// Sends every request to the configured upstream, whatever its `Host` or target says.
#[derive(Debug, Clone)]
pub struct Forward<U> {
    upstream: U,
    authority: Arc<Authority>,
    metrics: ProxyMetrics,
    /// When the upstream last answered; `/readyz` reads it.
    answered: Arc<LastSeen>,
    head_timeout: Duration,
}

pin_project! {
    /// The upstream's response body, counting a failure mid-stream as `reason="body"`.
    ///
    /// The error itself travels on to hyper, which then aborts the client connection: the
    /// client sees a broken response (reset, or a chunked stream without its last chunk), never
    /// a shorter body that looks complete.
    #[derive(Debug)]
    pub struct UpstreamBody<B> {
        #[pin]
        inner: B,
        body_errors: IntCounter,
    }
}

// === impl Forward ===

impl<U> Forward<U> {
    /// `authority` is the upstream's `host:port`, the `Host` of requests that carry none.
    pub fn new(
        upstream: U,
        authority: Authority,
        head_timeout: Duration,
        metrics: ProxyMetrics,
        answered: Arc<LastSeen>,
    ) -> Forward<U> {
        Forward {
            upstream,
            authority: Arc::new(authority),
            metrics,
            answered,
            head_timeout,
        }
    }
}

impl<U, B> Service<Request<ProxyBody>> for Forward<U>
where
    U: Service<Request<ProxyBody>, Response = Response<B>, Error = UpstreamError>,
{
    type Response = Response<ForwardBody<B>>;
    type Error = Infallible;
    type Future = ForwardFuture<U::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        if req.method() == Method::CONNECT {
            // A tunnel to anywhere would make us an open proxy.
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not supported by this reverse proxy",
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
            );
            return ForwardFuture::answered(response);
        }
        let upgrade = match req.version() {
            Version::HTTP_10 | Version::HTTP_11 => headers::requested_upgrade(req.headers()),
            _ => None,
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        if let Err(problem) = one_host(&parts.headers, parts.version) {
            return ForwardFuture::answered(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                problem,
            ));
        }
        let Some(path) = origin_form(&parts.uri) else {
            return ForwardFuture::answered(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request target has no path to forward",
            ));
        };
        headers::rewrite_request(
            &mut parts.headers,
            parts.version,
            parts.extensions.get::<ClientAddr>(),
            parts.uri.authority(),
            upgrade,
        );
        if !parts.headers.contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        let sent = self.upstream.call(Request::from_parts(parts, body));
        ForwardFuture::Waiting {
            sent: tokio::time::timeout(self.head_timeout, sent),
            client_upgrade,
            forward: Some(Returning {
                authority: self.authority.clone(),
                metrics: self.metrics.clone(),
                answered: self.answered.clone(),
                head_timeout: self.head_timeout,
            }),
        }
    }
}

pin_project! {
    /// Either a response the proxy made at once, or the upstream's on its way.
    #[project = ForwardFutureProj]
    pub enum ForwardFuture<F> {
        Answered { response: Option<Response<Full<Bytes>>> },
        Waiting {
            #[pin]
            sent: tokio::time::Timeout<F>,
            client_upgrade: Option<OnUpgrade>,
            forward: Option<Returning>,
        },
    }
}

/// What the way back needs: the response rewritten for the client, failures answered.
#[derive(Debug)]
pub struct Returning {
    authority: Arc<Authority>,
    metrics: ProxyMetrics,
    answered: Arc<LastSeen>,
    head_timeout: Duration,
}

// === impl ForwardFuture ===

impl<F> ForwardFuture<F> {
    fn answered(response: Response<Full<Bytes>>) -> ForwardFuture<F> {
        ForwardFuture::Answered {
            response: Some(response),
        }
    }
}

impl<F, B> Future for ForwardFuture<F>
where
    F: Future<Output = Result<Response<B>, UpstreamError>>,
{
    type Output = Result<Response<ForwardBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ForwardFutureProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ForwardFuture polled after completion")
                .map(Either::Right))),
            ForwardFutureProj::Waiting {
                sent,
                client_upgrade,
                forward,
            } => {
                let sent = ready!(sent.poll(cx));
                let forward = forward
                    .take()
                    .expect("ForwardFuture polled after completion");
                Poll::Ready(Ok(match sent {
                    Ok(Ok(response)) => forward.relay(response, client_upgrade.take()),
                    Ok(Err(err)) => forward.failed(err),
                    Err(_) => forward.failed(UpstreamError::HeadTimeout(forward.head_timeout)),
                }))
            }
        }
    }
}

// === impl Returning ===

impl Returning {
    fn relay<B>(
        &self,
        mut response: Response<B>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<ForwardBody<B>> {
        self.answered.mark();
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                self.metrics
                    .upstream_error(UpstreamErrorReason::Protocol)
                    .inc();
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol_error",
                    "upstream switched protocols without being asked",
                )
                .map(Either::Right);
            };
            upgrade::spawn_tunnel(client_upgrade, hyper::upgrade::on(&mut response));
        }
        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers, parts.version, switching);
        let body = UpstreamBody {
            inner: body,
            body_errors: self
                .metrics
                .upstream_error(UpstreamErrorReason::Body)
                .clone(),
        };
        Response::from_parts(parts, Either::Left(body))
    }

    fn failed<B>(&self, failure: UpstreamError) -> Response<ForwardBody<B>> {
        self.metrics.upstream_error(failure.reason()).inc();
        failure
            .into_response(self.authority.as_str())
            .map(Either::Right)
    }
}

/// RFC 9112 §3.2: a request with more than one `Host`, or an HTTP/1.1 request with none, gets
/// 400 (as nginx answers): two hosts are two answers to "which site", and the upstream would
/// pick one we did not. HTTP/2 names its authority in `:authority` instead.
fn one_host(headers: &http::HeaderMap, version: Version) -> Result<(), &'static str> {
    match headers.get_all(HOST).iter().count() {
        0 if version == Version::HTTP_11 => Err("an HTTP/1.1 request needs a Host header"),
        0 | 1 => Ok(()),
        _ => Err("more than one Host header"),
    }
}

/// The request's path and query byte for byte, for the upstream's request line. `None` for
/// targets with no path (`OPTIONS *`, authority-form).
fn origin_form(original: &Uri) -> Option<PathAndQuery> {
    match original.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Some(pq.clone()),
        Some(_) => None,
        None => Some(PathAndQuery::from_static("/")),
    }
}

// === impl UpstreamBody ===

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                let err = err.into();
                this.body_errors.inc();
                tracing::warn!(error = %err, "upstream response body failed mid-stream");
                Poll::Ready(Some(Err(err)))
            }
            other => other.map(|frame| frame.map(|result| result.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the upstream request target.

    use super::*;

    #[test]
    fn target_keeps_path_and_query_bytes() {
        let uri: Uri = "http://evil.example/a%2Fb/%7E?x=%20&y"
            .parse()
            .expect("uri");
        assert_eq!(
            origin_form(&uri).expect("path").as_str(),
            "/a%2Fb/%7E?x=%20&y"
        );
        assert_eq!(origin_form(&"*".parse().expect("asterisk")), None);
    }
}
