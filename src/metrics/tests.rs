//! Unit tests for the metric families and their pre-initialised label sets.

//! The names are API (alerts and dashboards use them): these tests pin them over the registry
//! of a whole sidecar, every layer having registered its own families.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::*;
use crate::config::Config;
use crate::proxy::UpstreamErrorReason;
use crate::settings::Settings;
use crate::stack::Sidecar;

fn sidecar() -> Sidecar {
    let settings = Settings::compile(Config::default()).expect("defaults compile");
    Sidecar::new(Arc::new(settings)).expect("families register")
}

fn text(sidecar: &Sidecar) -> String {
    String::from_utf8(encode(&sidecar.registry)).expect("utf-8")
}

#[test]
fn every_family_of_the_design_is_registered() {
    let text = text(&sidecar());
    for family in [
        "consistency_proxy_requests_total",
        "consistency_proxy_request_duration_seconds",
        "consistency_proxy_upstream_errors_total",
        "consistency_proxy_load_shed_total",
        "consistency_proxy_inflight_requests",
        "consistency_build_info",
        "consistency_checks_total",
        "consistency_results_total",
        "consistency_issues_total",
        "consistency_fixes_total",
        "consistency_skipped_total",
        "consistency_ratio",
        "consistency_inspect_duration_seconds",
        "consistency_tracked_tasks",
        "consistency_tracker_evictions_total",
        "consistency_tracker_store_errors_total",
        "consistency_tracker_store_up",
        "consistency_stalled_tasks",
        "consistency_tasks_stalled_total",
        "consistency_tasks_recovered_total",
        "consistency_tasks_abandoned_total",
        "consistency_stage_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    #[cfg(target_os = "linux")]
    assert!(text.contains("process_resident_memory_bytes"));
}

#[test]
fn configured_label_combinations_exist_at_zero() {
    let text = text(&sidecar());
    for line in [
        r#"consistency_proxy_requests_total{code="2xx",method="GET",route="task_status"} 0"#,
        r#"consistency_proxy_requests_total{code="5xx",method="other",route="other"} 0"#,
        r#"consistency_proxy_upstream_errors_total{reason="timeout"} 0"#,
        r#"consistency_results_total{level="critical",route="test_history"} 0"#,
        r#"consistency_issues_total{level="minor_issue",route="task_status",rule="completed_stage"} 0"#,
        r#"consistency_issues_total{level="major_issue",route="task_status",rule="stage_regression"} 0"#,
        r#"consistency_fixes_total{mode="applied",route="task_status",rule="progress_regression"} 0"#,
        // Both modes, whatever the rule's: a panel of shadow fixes reads 0, not nothing.
        r#"consistency_fixes_total{mode="shadow",route="task_status",rule="completed_stage"} 0"#,
        r#"consistency_skipped_total{reason="too_large",route="test_progress"} 0"#,
        r#"consistency_ratio{route="task_status"} 1"#,
        r#"consistency_tracker_evictions_total{reason="ttl"} 0"#,
        r#"consistency_build_info{mode="fix",version=""#,
        r#"consistency_tracker_store_errors_total{reason="connection"} 0"#,
        r#"consistency_tracker_store_errors_total{reason="down"} 0"#,
        "consistency_tracker_store_up 1",
        r#"consistency_stalled_tasks{route="task_status",stage="ai_fetching"} 0"#,
        r#"consistency_tasks_abandoned_total{route="test_progress",stage="init"} 0"#,
        r#"consistency_stage_duration_seconds_bucket{route="task_status",stage="ai_fetching",le="1800"} 0"#,
    ] {
        assert!(text.contains(line), "missing: {line}");
    }
    // test_history is not tracked: no transition series for it, and no fix series for report-only rules.
    assert!(!text.contains(r#"route="test_history",rule="stage_regression""#));
    assert!(!text.lines().any(
        |l| l.starts_with("consistency_fixes_total{") && l.contains(r#"rule="missing_field""#)
    ));
}

#[test]
fn handles_count_into_the_families() {
    let sidecar = sidecar();
    let current = sidecar.current();
    let m = &current.proxy_metrics;
    m.route(Some(0))
        .request(crate::proxy::method_index(&Method::GET), StatusCode::OK)
        .inc();
    m.route(None)
        .request(
            crate::proxy::method_index(&Method::CONNECT),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .inc();
    m.upstream_error(UpstreamErrorReason::Body).inc();
    let text = text(&sidecar);
    assert!(text.contains(
        r#"consistency_proxy_requests_total{code="2xx",method="GET",route="task_status"} 1"#
    ));
    assert!(text.contains(
        r#"consistency_proxy_requests_total{code="4xx",method="other",route="other"} 1"#
    ));
    assert!(text.contains(r#"consistency_proxy_upstream_errors_total{reason="body"} 1"#));
}

#[test]
fn code_classes() {
    use crate::proxy::code_index;
    assert_eq!(code_index(StatusCode::CONTINUE), 0);
    assert_eq!(code_index(StatusCode::NOT_MODIFIED), 2);
    assert_eq!(code_index(StatusCode::from_u16(599).expect("valid")), 4);
    assert_eq!(code_index(StatusCode::from_u16(999).expect("valid")), 4);
}
