//! Unit tests for route compilation and classification.

use super::*;
use crate::config::{self, Config};

fn compile(routes: &[RouteConfig]) -> Result<RouteTable, ConfigError> {
    let config = Config::default();
    RouteTable::compile(
        routes,
        &config.fields,
        config.mode,
        config.tracker.max_task_id_bytes,
    )
}

fn table() -> RouteTable {
    compile(&Config::default().routes).expect("default routes compile")
}

/// The name of the route a request matches, or `other`.
fn name(method: Method, path: &str) -> String {
    let table = table();
    match table.classify(&method, path) {
        Some(matched) => table
            .names()
            .nth(matched.index)
            .expect("an index into the table")
            .to_string(),
        None => OTHER.to_string(),
    }
}

#[test]
fn default_routes_match_their_paths() {
    assert_eq!(name(Method::GET, "/test/status/abc-123"), "task_status");
    assert_eq!(name(Method::GET, "/api/test-progress"), "test_progress");
    assert_eq!(name(Method::GET, "/api/test-history"), "test_history");
    assert_eq!(
        table()
            .classify(&Method::GET, "/api/test-history")
            .map(|m| m.index),
        Some(2)
    );
}

#[test]
fn method_must_match() {
    assert_eq!(name(Method::POST, "/test/status/abc"), OTHER);
    assert_eq!(name(Method::HEAD, "/test/status/abc"), OTHER);
}

#[test]
fn param_is_exactly_one_nonempty_segment() {
    assert_eq!(name(Method::GET, "/test/status/"), OTHER);
    assert_eq!(name(Method::GET, "/test/status"), OTHER);
    assert_eq!(name(Method::GET, "/test/status/a/b"), OTHER);
    assert_eq!(name(Method::GET, "/api/test-progress/"), OTHER);
}

#[test]
fn percent_encoding_is_matched_as_sent() {
    // A param segment takes any encoded value; a literal must be spelled as configured.
    assert_eq!(name(Method::GET, "/test/status/a%2Fb"), "task_status");
    assert_eq!(name(Method::GET, "/api/test%2Dprogress"), OTHER);
    assert_eq!(name(Method::GET, "/test//status/x"), OTHER);
}

#[test]
fn bad_patterns_name_the_key() {
    let mut routes = Config::default().routes;
    routes[1].path = "/api/{}".into();
    let err = compile(&routes).expect_err("empty param");
    assert_eq!(err.key, "routes[1].path");
    routes[1].path = "/api/x{id}".into();
    assert!(compile(&routes).is_err());
}

#[test]
fn engine_errors_name_the_route_or_the_global_key() {
    let cases = [
        ("[[routes]]\nname = \"a\"\npath = \"/a\"\n[[routes]]\nname = \"b\"\npath = \"/b\"\nrecords = \"/x~2\"", "routes[1].records"),
        ("[[routes]]\nname = \"a\"\npath = \"/a\"\nfields = { stage = \"status\" }", "routes[0].fields.stage"),
        ("[fields]\nprogress = \"\"\n[[routes]]\nname = \"a\"\npath = \"/a\"", "fields.progress"),
        ("[[routes]]\nname = \"a\"\npath = \"/a\"\nfields = { task_id = [\"id\", \"\"] }", "routes[0].fields.task_id[1]"),
    ];
    for (text, key) in cases {
        let config = config::parse(text).expect(text);
        let err = RouteTable::compile(
            &config.routes,
            &config.fields,
            config.mode,
            config.tracker.max_task_id_bytes,
        )
        .expect_err(text);
        assert_eq!(err.key, key, "{text}: {err}");
    }
}
