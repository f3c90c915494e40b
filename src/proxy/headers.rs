//! Header rewriting between client and upstream: hop-by-hop headers out, `X-Forwarded-*` and
//! `Via` in, per RFC 9110 §7.6. What a client says about the original scheme and host is only
//! believed from a trusted proxy (`proxy.trusted_proxies`), as Envoy's `xff_num_trusted_hops`
//! and Traefik's `trustedIPs` do: the backend behind us believes whatever we pass on.

use std::net::SocketAddr;

use http::header::Entry;
use http::header::{CONNECTION, FORWARDED, HOST, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const HOP_BY_HOP_COUNT: usize = 6;
/// Where `Connection` and `TE` are in [`HOP_BY_HOP`].
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 3;

/// RFC 9110 §7.6.1: meaningful for one connection only, never forwarded. Headers named in
/// `Connection` are removed as well.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The client's address, put into request extensions by the server for `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    addr: SocketAddr,
    /// The IP as `X-Forwarded-For` writes it, formatted once per connection rather than per
    /// request.
    forwarded_for: HeaderValue,
    /// Whether the peer is in `proxy.trusted_proxies`, decided once per connection: only then
    /// are its `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` passed on.
    trusted: bool,
}

impl ClientAddr {
    /// The client at `addr`, trusted as a proxy when `trusted_proxies` holds its IP.
    pub fn new(addr: SocketAddr, trusted_proxies: &[IpNet]) -> ClientAddr {
        let ip = addr.ip().to_canonical();
        ClientAddr {
            addr,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            trusted: trusted_proxies.iter().any(|net| net.contains(&ip)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

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
    client: Option<&ClientAddr>,
    authority: Option<&Authority>,
    upgrade: Option<HeaderValue>,
) {
    // Room for what is added below, in one allocation rather than a regrowth per header.
    headers.reserve(5);
    let present = hop_by_hop_present(headers);
    let wants_trailers = present[TE_AT]
        && headers
            .get_all(TE)
            .iter()
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case(b"trailers"));
    strip_present(headers, present);
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
    if let Some(client) = client {
        append_forwarded_for(headers, client);
        if !client.trusted {
            // Anyone may write these; from a peer we do not trust they say nothing, so they are
            // set below from the connection (plain http) and the request's own Host.
            headers.remove(X_FORWARDED_PROTO);
            headers.remove(X_FORWARDED_HOST);
            headers.remove(FORWARDED);
        }
    }
    // A trusted proxy in front of us (a TLS terminator, an ingress) knows the original scheme
    // and host better than we do, so its value is kept.
    if let Entry::Vacant(entry) = headers.entry(X_FORWARDED_PROTO) {
        entry.insert(HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(HOST).cloned() {
        if let Entry::Vacant(entry) = headers.entry(X_FORWARDED_HOST) {
            entry.insert(host);
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
    let present = hop_by_hop_present(headers);
    strip_present(headers, present);
}

/// Which of [`HOP_BY_HOP`] `headers` holds, found in one pass over its names: most messages
/// carry none, or only `Connection: keep-alive`, and a lookup per absent name costs more.
fn hop_by_hop_present(headers: &HeaderMap) -> [bool; HOP_BY_HOP_COUNT] {
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[at] = true;
        }
    }
    present
}

/// Removes the hop-by-hop headers `present` marks, and the headers `Connection` names.
fn strip_present(headers: &mut HeaderMap, present: [bool; HOP_BY_HOP_COUNT]) {
    if present[CONNECTION_AT] {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(tokens)
            // Removed below in any case, or not a header name (`close`).
            .filter(|t| {
                !t.eq_ignore_ascii_case(b"close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|hop| t.eq_ignore_ascii_case(hop.as_str().as_bytes()))
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
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
fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientAddr) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(client.forwarded_for.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut value = Vec::with_capacity(64);
            for line in entry.iter() {
                value.extend_from_slice(line.as_bytes());
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(client.forwarded_for.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                entry.insert(value);
            }
        }
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
