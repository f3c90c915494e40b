//! Unit tests for the configuration schema, defaults and validation.

use super::*;

#[test]
fn defaults_serve_the_legacy_backend() {
    let config = load(None).expect("defaults are valid");
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.upstream.uri.to_string(), "http://127.0.0.1:5000/");
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9464");
    let names: Vec<_> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["task_status", "test_progress", "test_history"]);
    assert_eq!(config.rules.len(), 10);
}

#[test]
fn effective_config_round_trips() {
    let config = Config::default();
    let text = config.to_toml();
    let again = parse(&text).expect("printed config parses");
    assert_eq!(again.to_toml(), text);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("listen = \"nope\"", "listen"),
        (
            "[proxy]\nconnect_timeout = \"soon\"",
            "proxy.connect_timeout",
        ),
        ("upstream = \"https://x\"", "upstream"),
        ("mode = \"repair\"", "mode"),
        ("bogus = 1", "bogus"),
        (
            "[[routes]]\nname = \"Bad Name\"\npath = \"/x\"",
            "routes[0].name",
        ),
        ("[proxy]\nmax_headers = 0", "proxy.max_headers"),
        (
            "[[rules]]\nname = \"new_rule\"\nlevel = \"critical\"",
            "rules[10].when",
        ),
        (
            "[tracker.rules.stage_regression]\nenabled = 1",
            "tracker.rules.?.enabled",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text)
            .and_then(|c| c.validate().map(|_| c))
            .expect_err(text);
        assert_eq!(err.key, key, "{text}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn rule_override_keeps_unset_keys() {
    let config = parse("[[rules]]\nname = \"completed_stage\"\nlevel = \"major_issue\"").unwrap();
    let rule = config
        .rules
        .iter()
        .find(|r| r.name == "completed_stage")
        .unwrap();
    assert_eq!(rule.level, Some(Level::MajorIssue));
    assert!(rule.when.is_some());
    assert_eq!(config.rules.len(), 10);
}

#[test]
fn routes_in_file_replace_defaults() {
    let config =
        parse("[[routes]]\nname = \"jobs\"\npath = \"/jobs/{id}\"\nrecords = \"/data\"").unwrap();
    config.validate().unwrap();
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].method, "GET");
}

#[test]
fn tracker_rule_override_keeps_unset_keys() {
    let config = parse("[tracker.rules.progress_regression]\nlevel = \"major_issue\"").unwrap();
    let rule = config.tracker.rule(TransitionKind::ProgressRegression);
    assert_eq!(
        (rule.enabled, rule.level, rule.fix),
        (true, Level::MajorIssue, true)
    );
    let stage = config.tracker.rule(TransitionKind::StageRegression);
    assert_eq!(
        (stage.enabled, stage.level, stage.fix),
        (true, Level::MajorIssue, false)
    );
}

#[test]
fn shipped_config_file_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.toml");
    let shipped = load(Some(&path)).expect("config/sidecar.toml is valid");
    assert_eq!(shipped.to_toml(), Config::default().to_toml());
}

#[test]
fn the_shared_store_keys_are_checked_and_name_the_key() {
    let config = parse(
        "[tracker]\nstore = \"redis\"\nredis_url = \"redis://:secret@redis.internal:6380/2\"\nkey_prefix = \"team-a:consistency:\"\ntimeout = \"20ms\"",
    )
    .expect("parses");
    config.validate().expect("valid");
    assert_eq!(config.tracker.store, TrackerStore::Redis);
    assert_eq!(config.tracker.timeout.0, Duration::from_millis(20));
    parse("[tracker]\nredis_url = \"redis+unix:///run/redis/redis.sock\"")
        .expect("parses")
        .validate()
        .expect("a socket path is valid");

    for (text, key, problem) in [
        ("store = \"memcached\"", "tracker.store", "unknown variant"),
        (
            "redis_url = \"http://127.0.0.1:6379\"",
            "tracker.redis_url",
            "",
        ),
        ("redis_url = \"redis://\"", "tracker.redis_url", ""),
        // TLS is not built in: say so at start, not at the first connection.
        (
            "redis_url = \"rediss://cache:6379\"",
            "tracker.redis_url",
            "",
        ),
        ("key_prefix = \"a b\"", "tracker.key_prefix", "must match"),
        ("timeout = \"0s\"", "tracker.timeout", "greater than 0s"),
        ("timeout = \"soon\"", "tracker.timeout", "expected e.g."),
        (
            "connect_timeout = \"0s\"",
            "tracker.connect_timeout",
            "greater than 0s",
        ),
        (
            "retry_interval = \"0s\"",
            "tracker.retry_interval",
            "greater than 0s",
        ),
    ] {
        let text = format!("[tracker]\n{text}");
        let err = parse(&text)
            .and_then(|c| c.validate().map(|_| c))
            .expect_err(&text);
        assert_eq!(err.key, key, "{text}: {err}");
        assert!(err.problem.contains(problem), "{text}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}
