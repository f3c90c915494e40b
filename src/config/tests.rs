//! Unit tests for the configuration: the shipped defaults, laying a file over them, and the one
//! line each mistake is reported as.

use super::*;
use crate::settings::Settings;

/// What `run --config` and `check-config` do with a file: parse, then validate and compile.
fn check(text: &str) -> Result<Settings, ConfigError> {
    parse(text).and_then(Settings::compile)
}

#[test]
fn defaults_serve_the_legacy_backend() {
    let config = Settings::compile(load(None).expect("defaults load"))
        .expect("defaults are valid")
        .config;
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

/// The documented way to start a file is to copy `config/sidecar.toml`: given back as a file,
/// it must change nothing (its rules override the defaults by name instead of doubling them).
#[test]
fn the_shipped_file_given_as_a_file_changes_nothing() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.toml");
    let shipped = load(Some(&path)).expect("config/sidecar.toml loads");
    assert_eq!(shipped.to_toml(), Config::default().to_toml());
    assert_eq!(shipped.rules.len(), 10);
}

#[test]
fn a_table_in_a_file_keeps_its_unset_keys() {
    let config = parse("[proxy]\nconnect_timeout = \"5s\"\n[fields]\nstage = \"phase\"").unwrap();
    assert_eq!(config.proxy.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        config.proxy.response_header_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(config.proxy.max_headers, 100);
    assert_eq!(config.fields.stage, "phase");
    assert_eq!(config.fields.status, "status");
    assert_eq!(config.fields.task_id, ["task_id", "execution_id"]);
}

/// Metrics, alerts and validation name a transition rule by `TransitionKind::as_str`; the
/// file's tables must be spelt the same.
#[test]
fn transition_rule_tables_are_named_like_their_kinds() {
    let text = Config::default().to_toml();
    for kind in TransitionKind::ALL {
        let table = format!("[tracker.rules.{}]", kind.as_str());
        assert!(text.contains(&table), "{table} in:\n{text}");
    }
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
            "tracker.rules.stage_regression.enabled",
        ),
        (
            "[tracker.rules.stage_regression]\nmode = true",
            "tracker.rules.stage_regression.mode",
        ),
        (
            "[inspect]\nshadow_header = \"yes\"",
            "inspect.shadow_header",
        ),
    ];
    for (text, key) in cases {
        let err = check(text).expect_err(text);
        assert_eq!(err.key, key, "{text}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

/// Every kind of mistake, and the exact line the operator reads for it.
#[test]
fn each_mistake_is_one_line_naming_its_key() {
    const NEW_RULE: &str = "[[rules]]\nname = \"r\"\nlevel = \"critical\"\n";
    let when_takes = "a `when` table takes the fields status, stage, progress, is_completed, each with the conditions present, is, is_not, one_of, not_one_of, known, number_in, not_number_in";
    let cases: Vec<(String, String)> = vec![
        // The admin door and the trusted proxies.
        (
            "[admin]\nreload_from = [\"127.0.0.1\"]".into(),
            "admin.reload_from[0]: invalid IP address syntax".into(),
        ),
        (
            "[admin]\nallowed_hosts = [\"http://ops.example\"]".into(),
            "admin.allowed_hosts[0]: \"http://ops.example\" is not a host name (no port, no scheme)".into(),
        ),
        (
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/33\"]".into(),
            "proxy.trusted_proxies[0]: invalid IP address syntax".into(),
        ),
        (
            "[admin]\ntoken_file = \"/nonexistent/token\"".into(),
            "admin.token_file: cannot read /nonexistent/token: No such file or directory (os error 2)".into(),
        ),
        // A misspelt field inside `when`, alone or in an any-of list.
        (
            format!("{NEW_RULE}when = {{ statuz = {{ is = \"a\" }} }}"),
            format!("rules[0].when.statuz: unknown field `statuz`; {when_takes}"),
        ),
        (
            format!("{NEW_RULE}when = [{{ status = {{ is = \"a\" }} }}, {{ statuz = {{ is = \"a\" }} }}]"),
            format!("rules[0].when[1].statuz: unknown field `statuz`; {when_takes}"),
        ),
        // A misspelt condition.
        (
            format!("{NEW_RULE}when = {{ status = {{ iz = \"a\" }} }}"),
            "rules[0].when.status.iz: unknown field `iz`, expected one of `present`, `is`, `is_not`, `one_of`, `not_one_of`, `known`, `number_in`, `not_number_in`".into(),
        ),
        // `when` of the wrong shape, at each level.
        (
            format!("{NEW_RULE}when = 5"),
            "rules[0].when: invalid type: integer `5`, expected a table of field conditions (all hold) or an array of such tables (any holds)".into(),
        ),
        (
            format!("{NEW_RULE}when = {{ status = \"a\" }}"),
            "rules[0].when.status: invalid type: string \"a\", expected a table".into(),
        ),
        (
            format!("{NEW_RULE}when = {{ progress = {{ number_in = [1] }} }}"),
            "rules[0].when.progress.number_in: invalid length 1, expected an array of length 2".into(),
        ),
        // A misspelt field in `fix`.
        (
            format!("{NEW_RULE}when = {{ status = {{ is = \"a\" }} }}\nfix = {{ statuz = \"b\" }}"),
            "rules[0].fix.statuz: unknown field `statuz`; `fix` takes the fields status, stage, progress, is_completed, each set to the value to write".into(),
        ),
        // Unknown keys anywhere.
        (
            "bogus = 1".into(),
            "bogus: unknown field `bogus`, expected one of `listen`, `upstream`, `admin_listen`, `mode`, `log_format`, `watch_config`, `proxy`, `admin`, `inspect`, `model`, `fields`, `tracker`, `evidence`, `redaction`, `capture`, `routes`, `rules`".into(),
        ),
        (
            "[proxy]\nmax_headerz = 3".into(),
            "proxy.max_headerz: unknown field `max_headerz`, expected one of `connect_timeout`, `response_header_timeout`, `client_header_timeout`, `client_idle_timeout`, `max_client_connections`, `max_header_bytes`, `max_headers`, `upstream_idle_timeout`, `upstream_max_idle`, `upstream_max_connections`, `workers`, `max_concurrent_requests`, `shutdown_grace`, `ready_window`, `trusted_proxies`".into(),
        ),
        (
            "[tracker.rules.stage_regresion]\nenabled = true".into(),
            "tracker.rules.stage_regresion: unknown field `stage_regresion`, expected one of `stage_regression`, `terminal_reopened`, `terminal_changed`, `progress_regression`".into(),
        ),
        (
            "[[rules]]\nname = \"r\"\nlevl = \"critical\"".into(),
            "rules[0].levl: unknown field `levl`, expected one of `name`, `enabled`, `level`, `when`, `fix`, `message`, `mode`".into(),
        ),
        (
            "[[routes]]\nname = \"a\"\npath = \"/x\"\nfields = { statuz = \"s\" }".into(),
            "routes[0].fields.statuz: unknown field `statuz`, expected one of `status`, `stage`, `progress`, `is_completed`, `task_id`".into(),
        ),
        // Missing keys.
        ("[[routes]]\npath = \"/x\"".into(), "routes[0].name: missing".into()),
        ("[[rules]]\nlevel = \"critical\"".into(), "rules[0].name: missing".into()),
        (
            "[[rules]]\nname = \"r\"\nlevel = \"critical\"".into(),
            "rules[10].when: missing: a new rule needs `level` and `when` (or `enabled = false`)".into(),
        ),
        // Wrong types.
        (
            "[proxy]\nmax_headers = \"a\"".into(),
            "proxy.max_headers: invalid type: string \"a\", expected a whole number".into(),
        ),
        (
            "[proxy]\nmax_headers = -1".into(),
            "proxy.max_headers: invalid value: integer `-1`, expected a whole number".into(),
        ),
        (
            "proxy = 5".into(),
            "proxy: invalid type: integer `5`, expected a table".into(),
        ),
        (
            "[fields]\ntask_id = \"id\"".into(),
            "fields.task_id: invalid type: string \"id\", expected an array".into(),
        ),
        (
            "[tracker.rules.stage_regression]\nenabled = 1".into(),
            "tracker.rules.stage_regression.enabled: invalid type: integer `1`, expected a boolean".into(),
        ),
        (
            "rules = 5".into(),
            "rules: invalid type: integer `5`, expected an array".into(),
        ),
        (
            "[capture]\nsample_rate = 1.5".into(),
            "capture.sample_rate: must be between 0 and 1".into(),
        ),
        (
            "[capture]\nmax_files = 0".into(),
            "capture.max_files: must be greater than 0".into(),
        ),
        (
            "[redaction]\npointers = [\"token\"]".into(),
            "redaction.pointers[0]: \"token\" is not a JSON pointer (it starts with '/')".into(),
        ),
        (
            "[redaction]\nkey_file = \"/nonexistent/redaction.key\"".into(),
            "redaction.key_file: cannot read /nonexistent/redaction.key: No such file or directory (os error 2)".into(),
        ),
        (
            "[evidence]\nbytes_per_rule = 0".into(),
            "evidence.bytes_per_rule: must be greater than 0 while evidence.entries_per_rule is".into(),
        ),
        // Bad enumeration values.
        (
            "mode = \"repair\"".into(),
            "mode: unknown variant `repair`, expected `fix` or `observe`".into(),
        ),
        (
            "[[rules]]\nname = \"r\"\nlevel = \"hi\"".into(),
            "rules[0].level: unknown variant `hi`, expected one of `consistent`, `minor_issue`, `major_issue`, `critical`".into(),
        ),
        // A rule's mode, single-record or transition; a route's mode is another enumeration.
        (
            "[[rules]]\nname = \"completed_stage\"\nmode = \"shadw\"".into(),
            "rules[0].mode: unknown variant `shadw`, expected `fix` or `shadow`".into(),
        ),
        (
            "[[rules]]\nname = \"completed_stage\"\nshadow = true".into(),
            "rules[0].shadow: unknown field `shadow`, expected one of `name`, `enabled`, `level`, `when`, `fix`, `message`, `mode`".into(),
        ),
        (
            "[tracker.rules.progress_regression]\nmode = \"observe\"".into(),
            "tracker.rules.progress_regression.mode: unknown variant `observe`, expected `fix` or `shadow`".into(),
        ),
        (
            "[[routes]]\nname = \"a\"\npath = \"/x\"\nmode = \"shadow\"".into(),
            "routes[0].mode: unknown variant `shadow`, expected `fix` or `observe`".into(),
        ),
        // Bad durations.
        (
            "[proxy]\nconnect_timeout = \"soon\"".into(),
            "proxy.connect_timeout: invalid value: string \"soon\", expected a duration such as \"500ms\", \"30s\" or \"1h\"".into(),
        ),
        (
            "[tracker]\nttl = 5".into(),
            "tracker.ttl: invalid type: integer `5`, expected a duration such as \"500ms\", \"30s\" or \"1h\"".into(),
        ),
        // Bad addresses and URLs.
        (
            "listen = \"nope\"".into(),
            "listen: not an address such as \"127.0.0.1:8080\"".into(),
        ),
        (
            "admin_listen = 9464".into(),
            "admin_listen: invalid type: integer `9464`, expected an address such as \"127.0.0.1:8080\"".into(),
        ),
        (
            "upstream = \"https://x\"".into(),
            "upstream: scheme \"https\" not supported, use http://".into(),
        ),
        (
            "upstream = \"http://x/api\"".into(),
            "upstream: must not carry a path or query; requests keep their own".into(),
        ),
        // TOML syntax: no key yet, so the position.
        (
            "listen = \"1.2.3.4:5\"\nlisten = \"1.2.3.4:6\"".into(),
            "line 2, column 1: duplicate key `listen` in document root".into(),
        ),
        (
            "[proxy\nx = 1".into(),
            "line 1, column 7: invalid table header; expected `.`, `]`".into(),
        ),
        (
            "listen =".into(),
            "line 1, column 9: the file ends where a value is expected".into(),
        ),
        // What only validation and the compilers see.
        (
            "[proxy]\nmax_headers = 0".into(),
            "proxy.max_headers: must be greater than 0".into(),
        ),
        (
            "[[routes]]\nname = \"a\"\npath = \"/x\"\nmethod = \"G T\"".into(),
            "routes[0].method: \"G T\" is not an HTTP method".into(),
        ),
        (
            "[[routes]]\nname = \"a\"\npath = \"x\"".into(),
            "routes[0].path: must start with '/'".into(),
        ),
        (
            format!("{NEW_RULE}when = {{ progress = {{ is = \"90\" }} }}"),
            "rules[10].when.progress.is: progress takes a number (or null), not \"90\"".into(),
        ),
    ];
    for (text, line) in cases {
        let err = check(&text).expect_err(&text);
        assert_eq!(format!("{err}"), format!("config error: {line}"), "{text}");
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
fn a_rule_is_put_in_shadow_by_name_keeping_its_other_keys() {
    let config = parse(
        "[[rules]]\nname = \"completed_stage\"\nmode = \"shadow\"\n\
         [tracker.rules.progress_regression]\nmode = \"shadow\"",
    )
    .unwrap();
    let rule = |name: &str| config.rules.iter().find(|r| r.name == name).unwrap();
    assert_eq!(rule("completed_stage").mode, Some(RuleMode::Shadow));
    assert!(rule("completed_stage").fix.is_some());
    assert_eq!(rule("failed_stage").mode, Some(RuleMode::Fix));
    let progress = config.tracker.rule(TransitionKind::ProgressRegression);
    assert_eq!(
        (progress.enabled, progress.fix, progress.mode),
        (true, true, RuleMode::Shadow)
    );
    // The default is fix, and check-config prints the mode back.
    let text = Settings::compile(config).unwrap().config.to_toml();
    assert_eq!(parse(&text).unwrap().to_toml(), text);
    assert_eq!(
        Config::default()
            .tracker
            .rule(TransitionKind::StageRegression)
            .mode,
        RuleMode::Fix
    );
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
fn the_shared_store_keys_are_checked_and_name_the_key() {
    let config = parse(
        "[tracker]\nstore = \"redis\"\nredis_url = \"redis://:secret@redis.internal:6380/2\"\nkey_prefix = \"team-a:consistency:\"\ntimeout = \"20ms\"",
    )
    .expect("parses");
    Settings::compile(config.clone()).expect("valid");
    assert_eq!(config.tracker.store, TrackerStore::Redis);
    assert_eq!(config.tracker.timeout, Duration::from_millis(20));
    parse("[tracker]\nredis_url = \"redis+unix:///run/redis/redis.sock\"")
        .and_then(Settings::compile)
        .expect("a socket path is valid");
    parse("[tracker]\nstore = \"redis\"\nredis_url = \"rediss://cache:6379\"")
        .and_then(Settings::compile)
        .expect("TLS is built in");

    for (text, key, problem) in [
        ("store = \"memcached\"", "tracker.store", "unknown variant"),
        (
            "redis_url = \"http://127.0.0.1:6379\"",
            "tracker.redis_url",
            "",
        ),
        ("redis_url = \"redis://\"", "tracker.redis_url", ""),
        // A CA is only for TLS.
        (
            "store = \"redis\"\nredis_ca_file = \"/etc/ca.pem\"",
            "tracker.redis_ca_file",
            "only used with a rediss:// URL",
        ),
        ("key_prefix = \"a b\"", "tracker.key_prefix", "must match"),
        ("timeout = \"0s\"", "tracker.timeout", "greater than 0s"),
        (
            "timeout = \"soon\"",
            "tracker.timeout",
            "expected a duration",
        ),
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
        let err = parse(&text).and_then(Settings::compile).expect_err(&text);
        assert_eq!(err.key, key, "{text}: {err}");
        assert!(err.problem.contains(problem), "{text}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn the_stall_keys_are_checked_and_name_the_key() {
    let config = check(
        "[tracker]\nstall_after = \"5m\"\n[tracker.stall_after_stage]\nai_fetching = \"30m\"",
    )
    .unwrap()
    .config;
    assert_eq!(config.tracker.stall_after, Duration::from_secs(300));
    assert_eq!(
        *config.tracker.stall_after_stage["ai_fetching"],
        Duration::from_secs(1800)
    );
    // Defaults: ten minutes, an hour, no per-stage override.
    let default = Config::default().tracker;
    assert_eq!(
        (default.stall_after, default.abandon_after),
        (Duration::from_secs(600), Duration::from_secs(3600))
    );
    assert!(default.stall_after_stage.is_empty());
    let cases = [
        (
            "[tracker]\nstall_after = \"0s\"",
            "tracker.stall_after: must be greater than 0s",
        ),
        (
            "[tracker]\nabandon_after = \"2d\"",
            "tracker.abandon_after: must be greater than 0s and at most tracker.ttl (1day), or a task is forgotten before it is found abandoned",
        ),
        (
            "[tracker.stall_after_stage]\nai_fetch = \"30m\"",
            "tracker.stall_after_stage.ai_fetch: \"ai_fetch\" is not in model.stages",
        ),
        (
            "[tracker.stall_after_stage]\ninit = \"0s\"",
            "tracker.stall_after_stage.init: must be greater than 0s",
        ),
        (
            "[tracker.stall_after_stage]\ninit = 30",
            "tracker.stall_after_stage.init: invalid type: integer `30`, expected a duration such as \"500ms\", \"30s\" or \"1h\"",
        ),
    ];
    for (text, line) in cases {
        let err = check(text).expect_err(text);
        assert_eq!(format!("{err}"), format!("config error: {line}"), "{text}");
    }
}

#[test]
fn the_redis_password_is_redacted_wherever_the_url_is_shown() {
    use crate::tracker::redacted_redis_url as redacted;
    assert_eq!(
        redacted("redis://user:pa:ss@host:6379/1"),
        "redis://user:***@host:6379/1"
    );
    assert_eq!(redacted("rediss://:secret@host"), "rediss://:***@host");
    assert_eq!(redacted("redis://secret@host/0"), "redis://***@host/0");
    assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    assert_eq!(
        redacted("redis+unix:///run/redis.sock"),
        "redis+unix:///run/redis.sock"
    );
    let mut config = Config::default();
    config.tracker.redis_url = "redis://u:hunter2@h:1".into();
    let shown = config.to_toml();
    assert!(
        shown.contains("redis://u:***@h:1") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn an_upstream_with_credentials_is_refused_without_echoing_them() {
    let err = check("upstream = \"http://ops:hunter2@127.0.0.1:5000\"").expect_err("refused");
    let line = err.to_string();
    assert!(
        line.starts_with("config error: upstream: must not carry credentials"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
}
