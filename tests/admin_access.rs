//! The admin door on the real binary: who may reload, the token with the probes left open, the
//! `Host` names answered, and the headers on every answer. Peers outside a CIDR list are
//! played from 127.0.0.2, so nothing leaves loopback.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{Request, StatusCode};
use serde_json::Value;
use support::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Loopback too, but outside `reload_from = ["127.0.0.1/32"]`.
const OTHER_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// `method path` on the admin port from `from`, with `headers` (a `Host` of the admin address
/// unless given).
async fn admin_call(
    admin: SocketAddr,
    from: IpAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", admin.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(empty()).expect("request");
    let response = request_from(from, admin, request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    collect(response).await.expect("whole answer")
}

fn error_of(body: &[u8]) -> String {
    let json: Value = serde_json::from_slice(body).expect("a refusal is JSON");
    json["error"].as_str().expect("an error line").to_string()
}

#[tokio::test]
async fn reload_is_accepted_from_loopback_and_refused_from_other_peers_and_other_origins() {
    let upstream = TestUpstream::standard().await;
    let config = "[admin]\nreload_from = [\"127.0.0.1/32\"]\n";
    let sidecar = Sidecar::start(&upstream.url(), config).await;
    let admin = sidecar.admin;

    let (status, headers, body) = admin_call(admin, LOOPBACK, "POST", "/-/reload", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let (status, headers, body) = admin_call(admin, OTHER_PEER, "POST", "/-/reload", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "application/json");
    assert!(error_of(&body).contains("admin.reload_from"), "{body:?}");

    // A form on another site, posted by an operator's browser on this machine.
    for origin in ["http://attacker.example", "null"] {
        let (status, _, body) = admin_call(
            admin,
            LOOPBACK,
            "POST",
            "/-/reload",
            &[
                ("origin", origin),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        assert!(error_of(&body).contains("origin"), "{body:?}");
    }
    // The port's own page may.
    let own = format!("http://{admin}");
    let (status, _, _) =
        admin_call(admin, LOOPBACK, "POST", "/-/reload", &[("origin", &own)]).await;
    assert_eq!(status, StatusCode::OK);

    let scrape = sidecar.metrics().await;
    assert_eq!(
        scrape.value("consistency_config_reloads_total", &[("result", "success")]),
        2.0,
        "only the two allowed reloads ran"
    );
}

#[tokio::test]
async fn with_a_token_every_path_but_the_probes_needs_it() {
    let upstream = TestUpstream::standard().await;
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "correct-horse-battery-staple\n").expect("write token");
    let config = format!("[admin]\ntoken_file = {:?}\n", token.path());
    let sidecar = Sidecar::start(&upstream.url(), &config).await;
    let admin = sidecar.admin;
    let bearer = [("authorization", "Bearer correct-horse-battery-staple")];

    for probe in ["/healthz", "/readyz"] {
        let (status, _, _) = admin_call(admin, LOOPBACK, "GET", probe, &[]).await;
        assert_eq!(status, StatusCode::OK, "{probe} stays open");
    }
    for path in ["/metrics", "/report", "/report.json"] {
        let (status, headers, body) = admin_call(admin, LOOPBACK, "GET", path, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer"));
        assert!(!body.is_empty());
        let wrong = [("authorization", "Bearer correct-horse-battery-stapler")];
        let (status, _, _) = admin_call(admin, LOOPBACK, "GET", path, &wrong).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let (status, _, _) = admin_call(admin, LOOPBACK, "GET", path, &bearer).await;
        assert_eq!(status, StatusCode::OK, "{path} with the token");
    }
    let (status, _, _) = admin_call(admin, LOOPBACK, "POST", "/-/reload", &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "reload needs the token too"
    );
    let (status, _, _) = admin_call(admin, LOOPBACK, "POST", "/-/reload", &bearer).await;
    assert_eq!(status, StatusCode::OK);

    // A browser is sent to the login form, and the form answers the token with a cookie.
    let (status, headers, _) = admin_call(admin, LOOPBACK, "GET", "/status", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "login");
    let login = Request::post("/login")
        .header("host", admin.to_string())
        .header("origin", format!("http://{admin}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full("token=correct-horse-battery-staple"))
        .expect("request");
    let (status, headers, _) = collect(request_from(LOOPBACK, admin, login).await.expect("login"))
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers["set-cookie"].to_str().expect("ascii");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("correct-horse"),
        "the cookie is not the token"
    );
    let pair = cookie.split(';').next().expect("name=value");
    let (status, _, _) =
        admin_call(admin, LOOPBACK, "GET", "/report.json", &[("cookie", pair)]).await;
    assert_eq!(status, StatusCode::OK, "the cookie stands for the token");
}

#[tokio::test]
async fn a_host_name_not_allowed_is_refused_and_ip_literals_pass() {
    let upstream = TestUpstream::standard().await;
    let config = "[admin]\nallowed_hosts = [\"localhost\", \"sidecar.ops.example\"]\n";
    let sidecar = Sidecar::start(&upstream.url(), config).await;
    let admin = sidecar.admin;
    let port = admin.port();

    for host in [
        format!("attacker.example:{port}"),
        "attacker.example".to_string(),
    ] {
        let (status, headers, body) =
            admin_call(admin, LOOPBACK, "GET", "/report.json", &[("host", &host)]).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(error_of(&body).contains("allowed_hosts"));
    }
    for host in [
        format!("localhost:{port}"),
        format!("sidecar.ops.example:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _, _) =
            admin_call(admin, LOOPBACK, "GET", "/report.json", &[("host", &host)]).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn the_report_command_sends_the_token_from_its_file() {
    let upstream = TestUpstream::standard().await;
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "report-token-0123456789\n").expect("write token");
    let config = format!("[admin]\ntoken_file = {:?}\n", token.path());
    let sidecar = Sidecar::start(&upstream.url(), &config).await;
    let admin = sidecar.admin_url("");
    let path = token.path().to_path_buf();
    let (without, with) = tokio::task::spawn_blocking(move || {
        let report = |extra: &[&std::ffi::OsStr]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
                .args(["report", "--admin", &admin])
                .args(extra)
                .output()
                .expect("run report")
        };
        let without = report(&[]);
        let with = report(&["--token-file".as_ref(), path.as_os_str()]);
        (without, with)
    })
    .await
    .expect("join");
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("401"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("Total checks"));
}
