//! The innermost service: rewrites the request for the upstream (hop-by-hop headers out,
//! `X-Forwarded-*` and `Via` in, target pinned to the configured upstream), sends it through the
//! pooled client, and rewrites the response on its way back. Bodies stream through untouched.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::BodyExt;
use tower::Service;

use super::body::{BoxError, ProxyBody};
use super::upgrade;
use super::upstream::{error_response, UpstreamBody, UpstreamClient, UpstreamFailure};
use crate::metrics::{Metrics, UpstreamErrorReason};
use crate::settings::Settings;

/// The client's address, put into request extensions by the server for `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Sends every request to the configured upstream, whatever its `Host` or target says.
#[derive(Debug, Clone)]
pub struct Forward {
    client: UpstreamClient,
    target: Arc<Target>,
    metrics: Arc<Metrics>,
    head_timeout: Duration,
}

/// Where requests go: the upstream's scheme and authority, fixed at start.
#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: Authority,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1: meaningful for one connection only, never forwarded. Headers named in
/// `Connection` are removed as well.
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

// === impl Forward ===

impl Forward {
    pub fn new(client: UpstreamClient, settings: &Settings, metrics: Arc<Metrics>) -> Forward {
        let upstream = &settings.config.upstream;
        Forward {
            client,
            target: Arc::new(Target {
                scheme: upstream.uri.scheme().cloned().unwrap_or(Scheme::HTTP),
                authority: upstream.authority().clone(),
            }),
            metrics,
            head_timeout: settings.config.proxy.response_header_timeout,
        }
    }

    async fn forward(self, mut req: Request<ProxyBody>) -> Response<ProxyBody> {
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
            return response;
        }
        let upgrade = match req.version() {
            Version::HTTP_10 | Version::HTTP_11 => upgrade::requested_protocol(req.headers()),
            _ => None,
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let client_addr = req.extensions().get::<ClientAddr>().map(|a| a.0.ip());

        let (mut parts, body) = req.into_parts();
        let Some(uri) = self.target.uri_for(&parts.uri) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request target has no path to forward",
            );
        };
        rewrite_request(
            &mut parts.headers,
            parts.version,
            client_addr,
            parts.uri.authority(),
            upgrade,
        );
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);

        let sent = tokio::time::timeout(self.head_timeout, self.client.request(request)).await;
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return self.failed(UpstreamFailure::Request(err)),
            Err(_) => return self.failed(UpstreamFailure::HeadTimeout(self.head_timeout)),
        };
        self.metrics.upstream_seen.mark();

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                self.metrics.upstream_error(UpstreamErrorReason::Protocol);
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol_error",
                    "upstream switched protocols without being asked",
                );
            };
            upgrade::spawn_tunnel(client_upgrade, hyper::upgrade::on(&mut response));
        }
        let (mut parts, body) = response.into_parts();
        rewrite_response(&mut parts.headers, parts.version, switching);
        let body = UpstreamBody::new(body, self.metrics.clone()).boxed_unsync();
        Response::from_parts(parts, body)
    }

    fn failed(&self, failure: UpstreamFailure) -> Response<ProxyBody> {
        failure.into_response(&self.metrics, self.target.authority.as_str())
    }
}

impl Service<Request<ProxyBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

// === impl Target ===

impl Target {
    /// The upstream URI for a request: our scheme and authority, the request's path and query
    /// byte for byte. `None` for targets with no path (`OPTIONS *`, authority-form).
    fn uri_for(&self, original: &Uri) -> Option<Uri> {
        let path = match original.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            Some(_) => return None,
            None => PathAndQuery::from_static("/"),
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .ok()
    }
}

/// Prepares client request headers for the upstream.
///
/// `authority` is the target's authority when the client sent one (absolute-form, or HTTP/2's
/// `:authority`); it then becomes `Host`, as RFC 9112 §3.2.2 requires. It never changes where
/// the request goes.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    version: Version,
    client: Option<IpAddr>,
    authority: Option<&Authority>,
    upgrade: Option<HeaderValue>,
) {
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .flat_map(tokens)
        .any(|t| t.eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers);
    if wants_trailers {
        // Without it an upstream may drop trailers; we pass them through.
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    if let Some(authority) = authority {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(HOST, host);
        }
    }
    if let Some(ip) = client {
        append_forwarded_for(headers, ip.to_canonical());
    }
    // Whoever is in front of us (a TLS terminator, a load balancer) knows the original scheme
    // and host better than we do, so an existing value is kept.
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    headers.append(VIA, via(version));
}

/// Prepares upstream response headers for the client. A `101` keeps its `Upgrade`.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, version: Version, switching: bool) {
    let upgrade = if switching {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if switching {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = upgrade {
            headers.insert(UPGRADE, protocol);
        }
    }
    headers.append(VIA, via(version));
}

/// Removes the hop-by-hop headers and every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(tokens)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Folds every `X-Forwarded-For` line into one and appends the client.
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut value = Vec::with_capacity(64);
    for line in headers.get_all(X_FORWARDED_FOR) {
        value.extend_from_slice(line.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip.to_string().as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 consistency-sidecar",
        Version::HTTP_10 => "1.0 consistency-sidecar",
        Version::HTTP_2 => "2 consistency-sidecar",
        Version::HTTP_3 => "3 consistency-sidecar",
        _ => "1.1 consistency-sidecar",
    })
}

#[cfg(test)]
mod tests;
