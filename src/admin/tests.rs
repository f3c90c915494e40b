//! Unit tests for the admin service, without a socket: the status page and `/report.json`.

use http_body_util::{BodyExt, Empty};

use super::*;
use crate::config::{self, Config};
use crate::reload::ConfigSource;
use crate::settings::Settings;

/// A peer on loopback, as a local operator's curl.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

fn empty() -> Empty<Bytes> {
    Empty::new()
}

fn sidecar() -> Arc<Sidecar> {
    let settings = Arc::new(Settings::compile(Config::default()).expect("defaults compile"));
    Arc::new(Sidecar::new(settings).expect("metrics register"))
}

fn admin() -> Admin {
    Admin::new(sidecar(), None)
}

/// An admin service that reloads from `file`.
fn reloading(file: &tempfile::NamedTempFile) -> (Admin, Arc<Sidecar>) {
    let sidecar = sidecar();
    let path = file.path().to_path_buf();
    let source = ConfigSource {
        path: Some(path.clone()),
        load: Arc::new(move || config::load(Some(&path))),
    };
    let reloader = Reloader::new(sidecar.clone(), source, &sidecar.registry).expect("register");
    (
        Admin::new(sidecar.clone(), Some(Arc::new(reloader))),
        sidecar,
    )
}

async fn post(admin: &Admin, path: &str) -> (StatusCode, String) {
    let response = admin
        .handle(
            Request::post(path).body(empty()).expect("request"),
            LOOPBACK,
        )
        .await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn post_reload_swaps_a_valid_file_in_and_refuses_an_invalid_one_naming_the_key() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "mode = \"observe\"\n").expect("write");
    let (admin, sidecar) = reloading(&file);
    assert_eq!(
        sidecar.current().settings.config.mode,
        crate::engine::Mode::Fix
    );

    assert_eq!(
        post(&admin, "/-/reload").await,
        (StatusCode::OK, "configuration reloaded\n".to_string())
    );
    assert_eq!(
        sidecar.current().settings.config.mode,
        crate::engine::Mode::Observe
    );

    std::fs::write(file.path(), "[inspect]\nmax_body_bytez = 1\n").expect("write");
    let (status, body) = post(&admin, "/-/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with("config error: inspect.max_body_bytez: unknown field"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "{body}");
    // Nothing changed.
    assert_eq!(
        sidecar.current().settings.config.mode,
        crate::engine::Mode::Observe
    );

    std::fs::write(file.path(), "listen = \"127.0.0.1:1\"\n").expect("write");
    let (status, body) = post(&admin, "/-/reload").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("until a restart: listen"), "{body}");
    assert_eq!(
        sidecar.current().settings.config.listen,
        Config::default().listen
    );

    let text = String::from_utf8(crate::metrics::encode(&sidecar.registry)).expect("utf-8");
    assert!(text.contains("consistency_config_reloads_total{result=\"success\"} 2"));
    assert!(text.contains("consistency_config_reloads_total{result=\"failure\"} 1"));
    assert!(text.contains("consistency_config_last_reload_successful 1"));
    // The last file sets no mode: back to fix, and only the running mode has a series.
    let build_info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("consistency_build_info{"))
        .collect();
    assert_eq!(build_info.len(), 1, "{build_info:?}");
    assert!(build_info[0].contains("mode=\"fix\""), "{build_info:?}");

    let (_, _, json) = fetch(&admin, "/report.json").await;
    let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(json["config"]["reloads_succeeded"], 2);
    assert_eq!(json["config"]["reloads_failed"], 1);
    assert_eq!(json["config"]["unchanged_keys"][0], "listen");
}

#[tokio::test]
async fn reload_wants_post_and_a_source() {
    let (status, _) = post(&admin(), "/-/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = fetch(&admin(), "/-/reload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn fetch(admin: &Admin, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = admin
        .handle(Request::get(path).body(empty()).expect("request"), LOOPBACK)
        .await;
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (head.status, head.headers, body)
}

#[tokio::test]
async fn the_status_page_is_served_at_root_and_status() {
    let admin = admin();
    for path in ["/", "/status"] {
        let (status, headers, body) = fetch(&admin, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], *STATUS_PAGE_CSP);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(body, STATUS_PAGE.as_bytes());
    }
}

#[test]
fn the_status_page_loads_nothing_from_elsewhere() {
    for needle in ["http://", "https://", "//cdn", "@import", "src=\"", "url("] {
        let found = STATUS_PAGE
            .lines()
            .filter(|line| line.contains(needle))
            // The SVG namespace is a name, not a request.
            .filter(|line| !line.contains("\"http://www.w3.org/2000/svg\""))
            .collect::<Vec<_>>();
        assert!(found.is_empty(), "{needle}: {found:?}");
    }
}

#[tokio::test]
async fn report_json_carries_the_report_and_a_section_per_concern() {
    let (status, headers, body) = fetch(&admin(), "/report.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    for key in [
        "generated_at",
        "total_checks",
        "consistency_ratio",
        "levels",
        "recent_issues",
        "objective",
        "sidecar",
        "routes",
        "proxy",
        "tracker",
        "history",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert_eq!(json["routes"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["history"]["every_seconds"], 5);
}

#[tokio::test]
async fn reload_from_a_peer_outside_reload_from_is_refused_before_anything_is_read() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "mode = \"observe\"\n").expect("write");
    let (admin, sidecar) = reloading(&file);
    let outside: SocketAddr = "10.1.2.3:40000".parse().expect("addr");
    let response = admin
        .handle(
            Request::post("/-/reload").body(empty()).expect("request"),
            outside,
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        sidecar.current().settings.config.mode,
        crate::engine::Mode::Fix,
        "nothing reloaded"
    );
}

#[test]
fn the_status_page_csp_names_its_inline_blocks_by_hash_and_allows_nothing_inline() {
    let csp = STATUS_PAGE_CSP.to_str().expect("ascii");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        csp.matches("'sha256-").count(),
        2,
        "one script, one style: {csp}"
    );
    assert!(
        !STATUS_PAGE.contains(" style=\""),
        "inline style attributes are refused"
    );
}

#[test]
fn a_login_form_field_is_percent_and_plus_decoded() {
    assert_eq!(
        form_field(b"a=1&token=ab%2Bc+d%3D", b"token").as_deref(),
        Some(&b"ab+c d="[..])
    );
    assert_eq!(form_field(b"token=%zz", b"token"), None);
    assert_eq!(form_field(b"other=1", b"token"), None);
}
