//! Header rewriting between client and upstream: hop-by-hop headers out, `X-Forwarded-*` and
//! `Via` in, per RFC 9110 §7.6.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

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

/// The `Upgrade` header of a request that asks for one (`Connection` lists `upgrade`).
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(tokens)
        .any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    if asks {
        headers.get(UPGRADE).cloned()
    } else {
        None
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
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
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
