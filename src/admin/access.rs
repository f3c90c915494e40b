//! Who may use the admin port: the `Host` it is addressed by, the bearer token (or the login
//! cookie a browser holds instead), and who may `POST /-/reload`.
//!
//! Closed by default, as Envoy and linkerd2-proxy keep their admin doors: a reload only from
//! loopback and never from another origin's page, names other than `localhost` refused so a
//! DNS-rebinding page cannot reach a developer's port, and, once `admin.token_file` is set,
//! nothing but the probes without the token.

use std::net::IpAddr;
use std::path::Path;

use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::AdminConfig;

/// The cookie `POST /login` sets in a browser: HttpOnly, SameSite=Strict, this port only.
pub const LOGIN_COOKIE: &str = "sidecar_admin";

/// The token of `admin.token_file`, with the cookie value derived from it.
pub struct AdminToken {
    bearer: Vec<u8>,
    /// Hex SHA-256 of the token under a fixed label: what the browser keeps, so the cookie jar
    /// never holds the token itself and any token byte is fine in a header.
    cookie: String,
}

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is a name not in `admin.allowed_hosts`.
    ForeignHost,
    /// A token is set and the request carries neither it nor the login cookie.
    NoToken,
    /// The peer of a `POST /-/reload` is outside `admin.reload_from`.
    PeerNotAllowed,
    /// `Origin` is another site's: a page in an operator's browser trying its luck.
    ForeignOrigin,
}

// === impl AdminToken ===

impl AdminToken {
    /// Reads the token: the file's text without surrounding whitespace (a trailing newline).
    pub fn read(path: &Path) -> Result<AdminToken, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(format!(
                "{} holds {} characters; a token needs at least 16",
                path.display(),
                token.len()
            ));
        }
        Ok(AdminToken::new(token.as_bytes()))
    }

    fn new(token: &[u8]) -> AdminToken {
        let mut digest = Sha256::new();
        digest.update(b"consistency-sidecar admin login\0");
        digest.update(token);
        let cookie = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        AdminToken {
            bearer: token.to_vec(),
            cookie,
        }
    }

    /// Whether `presented` (a login form's field) is the token.
    pub fn is(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.bearer, presented)
    }

    /// Whether the request carries `Authorization: Bearer <token>` or the login cookie.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| bearer_of(v.as_bytes()))
            .any(|presented| self.is(presented));
        bearer
            || cookies(headers, LOGIN_COOKIE)
                .any(|value| constant_time_eq(self.cookie.as_bytes(), value))
    }

    /// The `Set-Cookie` a successful login answers with.
    pub fn set_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{LOGIN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie
        ))
        .expect("hex is a valid header value")
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

/// Equal bytes, in a time that depends on the lengths only, not on where they first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer_of(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// The values of every cookie called `name` in the request's `Cookie` headers.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(value)
        })
}

/// Checks the `Host` a request was addressed by: IP literals always pass (Prometheus and the
/// kubelet address pods by IP), names only when listed. No `Host` (HTTP/1.0) passes: a browser
/// always sends one.
pub fn check_host(config: &AdminConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let Ok(host) = host.to_str() else {
        return Err(Refusal::ForeignHost);
    };
    let name = host_name(host);
    if name.parse::<IpAddr>().is_ok()
        || config
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(Refusal::ForeignHost)
    }
}

/// The host of a `Host` value: without its port, and without the brackets of an IPv6 literal.
fn host_name(host: &str) -> &str {
    if let Some(literal) = host.strip_prefix('[') {
        return literal.split(']').next().unwrap_or(literal);
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    // A trailing dot names the same host; rebinding pages use it to dodge a plain comparison.
    name.strip_suffix('.').unwrap_or(name)
}

/// For a request that changes something (`POST /-/reload`, `POST /login`): an `Origin`, when
/// sent, must be this port's own, `http://` and the `Host` the request was addressed by.
/// Clients that are not browsers send none.
pub fn check_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let own = headers
        .get(header::HOST)
        .map(|host| [b"http://", host.as_bytes()].concat());
    match own {
        Some(own) if own.eq_ignore_ascii_case(origin.as_bytes()) => Ok(()),
        _ => Err(Refusal::ForeignOrigin),
    }
}

/// Whether `peer` may `POST /-/reload`.
pub fn check_reload_peer(config: &AdminConfig, peer: IpAddr) -> Result<(), Refusal> {
    let peer = peer.to_canonical();
    if config.reload_from.iter().any(|net| net.contains(&peer)) {
        Ok(())
    } else {
        Err(Refusal::PeerNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the admin door's checks.

    use super::*;
    use crate::config::Config;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.parse::<http::HeaderName>().expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn host_names_pass_only_when_listed_and_ip_literals_always() {
        let admin = Config::default().admin;
        for ok in [
            "localhost",
            "LOCALHOST:9464",
            "localhost.",
            "127.0.0.1:9464",
            "10.1.2.3",
            "[::1]:9464",
        ] {
            assert_eq!(
                check_host(&admin, &headers(&[("host", ok)])),
                Ok(()),
                "{ok}"
            );
        }
        for foreign in [
            "attacker.example",
            "attacker.example:9464",
            "localhost.evil",
        ] {
            assert_eq!(
                check_host(&admin, &headers(&[("host", foreign)])),
                Err(Refusal::ForeignHost),
                "{foreign}"
            );
        }
    }

    #[test]
    fn an_origin_must_be_the_ports_own() {
        let own = headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464"),
        ]);
        assert_eq!(check_origin(&own), Ok(()));
        assert_eq!(
            check_origin(&headers(&[("host", "127.0.0.1:9464")])),
            Ok(())
        );
        for origin in ["http://attacker.example", "null", "https://127.0.0.1:9464"] {
            let h = headers(&[("host", "127.0.0.1:9464"), ("origin", origin)]);
            assert_eq!(check_origin(&h), Err(Refusal::ForeignOrigin), "{origin}");
        }
    }

    #[test]
    fn reload_is_for_loopback_peers_by_default() {
        let admin = Config::default().admin;
        for ok in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ok.parse().expect("ip");
            assert_eq!(check_reload_peer(&admin, ip), Ok(()), "{ok}");
        }
        for other in ["10.1.2.3", "192.168.0.9", "fd00::1"] {
            let ip: IpAddr = other.parse().expect("ip");
            assert_eq!(
                check_reload_peer(&admin, ip),
                Err(Refusal::PeerNotAllowed),
                "{other}"
            );
        }
    }

    #[test]
    fn the_token_is_taken_from_a_bearer_header_or_the_login_cookie() {
        let token = AdminToken::new(b"s3cret-s3cret-s3cret");
        assert!(token.admits(&headers(&[(
            "authorization",
            "Bearer s3cret-s3cret-s3cret"
        )])));
        assert!(token.admits(&headers(&[(
            "authorization",
            "bearer s3cret-s3cret-s3cret"
        )])));
        let cookie = format!("theme=dark; {LOGIN_COOKIE}={}", token.cookie);
        assert!(token.admits(&headers(&[("cookie", &cookie)])));
        for wrong in [
            vec![("authorization", "Bearer s3cret-s3cret-s3creT")],
            vec![("authorization", "Basic czNjcmV0")],
            vec![("cookie", "sidecar_admin=s3cret-s3cret-s3cret")],
            vec![],
        ] {
            assert!(!token.admits(&headers(&wrong)), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
