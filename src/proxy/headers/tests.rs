//! Unit tests for request and response header rewriting.

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn all<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut map = headers(&[
        ("connection", "keep-alive, X-Secret"),
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("upgrade", "websocket"),
        ("x-secret", "1"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut map);
    let names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
}

#[test]
fn forwarded_headers_are_added() {
    let mut map = headers(&[
        ("host", "api.example"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
    ]);
    let client = ClientAddr::new("192.0.2.7:40000".parse().expect("addr"), &[]);
    rewrite_request(&mut map, Version::HTTP_11, Some(&client), None, None);
    assert_eq!(
        all(&map, "x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
    );
    assert_eq!(all(&map, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["api.example"]);
    assert_eq!(all(&map, "via"), ["1.1 consistency-sidecar"]);
    assert_eq!(all(&map, "host"), ["api.example"]);
}

#[test]
fn forwarded_for_is_the_client_alone_when_none_came() {
    let mut map = headers(&[("host", "api.example")]);
    // An IPv4 client on a dual-stack socket is written as IPv4.
    let client = ClientAddr::new("[::ffff:192.0.2.7]:40000".parse().expect("addr"), &[]);
    rewrite_request(&mut map, Version::HTTP_11, Some(&client), None, None);
    assert_eq!(all(&map, "x-forwarded-for"), ["192.0.2.7"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["api.example"]);
}

#[test]
fn existing_forwarded_proto_and_host_are_kept_and_via_appended() {
    let mut map = headers(&[
        ("host", "inner"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "outer.example"),
        ("via", "1.1 edge"),
    ]);
    rewrite_request(&mut map, Version::HTTP_2, None, None, None);
    assert_eq!(all(&map, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["outer.example"]);
    assert_eq!(all(&map, "via"), ["1.1 edge", "2 consistency-sidecar"]);
}

#[test]
fn absolute_form_authority_becomes_host() {
    let mut map = headers(&[("host", "ignored.example")]);
    let authority: Authority = "target.example:81".parse().expect("authority");
    rewrite_request(&mut map, Version::HTTP_11, None, Some(&authority), None);
    assert_eq!(all(&map, "host"), ["target.example:81"]);
}

#[test]
fn te_trailers_and_upgrade_survive_as_our_own_hop_headers() {
    let mut map = headers(&[
        ("te", "trailers, deflate"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
    ]);
    let upgrade = requested_upgrade(&map);
    rewrite_request(&mut map, Version::HTTP_11, None, None, upgrade);
    assert_eq!(all(&map, "te"), ["trailers"]);
    assert_eq!(all(&map, "connection"), ["upgrade"]);
    assert_eq!(all(&map, "upgrade"), ["websocket"]);
}

#[test]
fn response_keeps_repeated_headers_in_order() {
    let mut map = headers(&[
        ("set-cookie", "a=1"),
        ("connection", "keep-alive"),
        ("set-cookie", "b=2"),
        ("set-cookie", "c=3"),
    ]);
    rewrite_response(&mut map, Version::HTTP_11, false);
    assert_eq!(all(&map, "set-cookie"), ["a=1", "b=2", "c=3"]);
    assert!(map.get("connection").is_none());
}

#[test]
fn forwarded_proto_and_host_are_believed_only_from_a_trusted_proxy() {
    let sent = [
        ("host", "shop.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=1.2.3.4;host=evil.example;proto=https"),
    ];
    let ingress: IpNet = "10.0.0.0/8".parse().expect("net");
    let trusted = ClientAddr::new("10.1.2.3:40000".parse().expect("addr"), &[ingress]);
    let mut map = headers(&sent);
    rewrite_request(&mut map, Version::HTTP_11, Some(&trusted), None, None);
    assert_eq!(all(&map, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["evil.example"]);
    assert_eq!(all(&map, "forwarded"), [sent[3].1]);

    let stranger = ClientAddr::new("203.0.113.9:40000".parse().expect("addr"), &[ingress]);
    let mut map = headers(&sent);
    rewrite_request(&mut map, Version::HTTP_11, Some(&stranger), None, None);
    assert_eq!(all(&map, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["shop.example"]);
    assert!(map.get("forwarded").is_none());
    assert_eq!(all(&map, "x-forwarded-for"), ["203.0.113.9"]);
}
