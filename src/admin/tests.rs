//! Unit tests for the admin service, without a socket: the status page and `/report.json`.

use http_body_util::BodyExt;

use super::*;
use crate::config::Config;

fn admin() -> Admin {
    let settings = Arc::new(Settings::compile(Config::default()).expect("defaults compile"));
    let registry = crate::metrics::registry(settings.config.mode).expect("registry");
    Admin::new(
        settings,
        registry,
        Arc::new(LastSeen::never()),
        Arc::new(ReportBook::new(10)),
    )
}

async fn fetch(admin: &Admin, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = admin
        .handle(Request::get(path).body(()).expect("request"))
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
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], STATUS_PAGE_CSP);
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
