//! `consistency-sidecar replay` on real traffic: a capture taken in front of the Python
//! stand-in, replayed with a rule added in the new configuration, names exactly the tasks the
//! stand-in broke that rule in; identical configurations send the same bytes; a HAR saved from
//! a real headless Chromium polling through the sidecar replays as the capture of that run.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::browser::Browser;
use support::*;

/// Tasks created, and polls of each: five finish a task, the rest poll it finished.
const TASKS: usize = 16;
const ROUNDS: usize = 7;

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
        .arg("replay")
        .args(args)
        .env_remove("CONSISTENCY_SIDECAR_CONFIG")
        .output()
        .expect("replay runs")
}

/// Polls `TASKS` tasks through the sidecar until each has finished; returns their ids.
async fn poll_through(sidecar: &Sidecar) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..TASKS {
        let brand = if n % 4 == 3 { "fail-brand" } else { "brand" };
        let (status, _, body) = post_json(
            &sidecar.url("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["{brand}-{n}"], "selectedModels": ["m"]}}"#),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let created: Value = serde_json::from_slice(&body).expect("JSON");
        ids.push(created["execution_id"].as_str().expect("id").to_owned());
    }
    for _ in 0..ROUNDS {
        for id in &ids {
            let (status, _, _) = get(&sidecar.url(&format!("/test/status/{id}"))).await;
            assert_eq!(status, 200);
        }
    }
    ids
}

/// Waits until the capture holds `lines` lines.
async fn captured(path: &Path, lines: usize) {
    wait_for("the capture to hold every poll", || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        (text.lines().count() >= lines).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rule_added_in_new_names_exactly_the_tasks_the_stand_in_broke_it_in() {
    let Some(standin) = StandIn::start(&["--inject-rate", "0.6", "--seed", "22"]).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.ndjson");
    let config = format!(
        "[capture]\nenabled = true\nwhich = \"all\"\npath = \"{}\"\n",
        capture.display()
    );
    let sidecar = Sidecar::start(&standin.url(), &config).await;
    poll_through(&sidecar).await;
    captured(&capture, TASKS * ROUNDS).await;

    let ledger = standin.ledger().await;
    let broken: BTreeSet<String> = ledger["injected_tasks"]["task_status"]["completed_stage"]
        .as_array()
        .expect("injected tasks")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert!(
        !broken.is_empty(),
        "the stand-in broke completed_stage somewhere: {ledger}"
    );

    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        "[[rules]]\nname = \"completed_stage\"\nenabled = false\n",
    )
    .expect("write");
    let new = dir.path().join("new.toml");
    std::fs::write(&new, "").expect("write");
    let capture_arg = capture.to_str().expect("utf-8 path");
    let (old, new) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));

    let out = replay(&["--config", new, "--against", old, "--json", capture_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("JSON report");
    let differing: BTreeSet<String> = report["differing_tasks"]
        .as_array()
        .expect("differing tasks")
        .iter()
        .map(|d| d["task_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(differing, broken, "{text}");
    let first = &report["differing_tasks"][0];
    let before: Value =
        serde_json::from_str(first["before"].as_str().expect("before")).expect("JSON");
    let after: Value = serde_json::from_str(first["after"].as_str().expect("after")).expect("JSON");
    assert_eq!(after["stage"], "completed", "{first}");
    assert_ne!(before["stage"], "completed", "{first}");
    let rule = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["route"] == "task_status" && r["rule"] == "completed_stage")
        .expect("the rule's counts");
    assert_eq!(rule["against"]["issues"], 0);
    assert!(
        rule["config"]["fixes"].as_u64() >= Some(broken.len() as u64),
        "{rule}"
    );

    // The text form names the same tasks.
    let out = replay(&["--config", new, "--against", old, capture_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for id in &broken {
        assert!(text.contains(&format!("task {id} ")), "{id}: {text}");
    }

    let out = replay(&["--config", new, "--against", new, capture_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = replay(&["--config", new, capture_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let garbage = dir.path().join("garbage.ndjson");
    std::fs::write(&garbage, "{\"not\": \"a capture line\"}\n").expect("write");
    let out = replay(&["--config", new, garbage.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let out = replay(&["--config", new, "/nonexistent/capture.ndjson"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The task ids `replay --json` says differ, and its exit status.
fn differing(args: &[&str]) -> (Option<i32>, BTreeSet<String>) {
    let out = replay(args);
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "JSON report ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let tasks = report["differing_tasks"]
        .as_array()
        .expect("differing tasks")
        .iter()
        .map(|d| d["task_id"].as_str().expect("id").to_owned())
        .collect();
    (out.status.code(), tasks)
}

#[tokio::test]
async fn a_har_from_chromium_polling_through_the_sidecar_replays_as_the_capture_of_that_run() {
    let Some(standin) = StandIn::start(&["--inject-rate", "0.6", "--seed", "23"]).await else {
        return;
    };
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.ndjson");
    // Observe mode: the browser gets the backend's bytes, as a HAR saved without the sidecar
    // (or before the fix) would hold them.
    let config = format!(
        "mode = \"observe\"\n[capture]\nenabled = true\nwhich = \"all\"\npath = \"{}\"\n",
        capture.display()
    );
    let sidecar = Sidecar::start(&standin.url(), &config).await;
    let tasks = 12;
    browser.open(&sidecar.url(&format!("/__poller?tasks={tasks}")));
    browser.wait_until(
        "the poller to finish",
        std::time::Duration::from_secs(60),
        |b| (b.evaluate("window.done") == true).then_some(()),
    );
    assert_eq!(browser.evaluate("window.failure"), Value::Null);
    let polls = browser
        .evaluate("window.seen.length")
        .as_u64()
        .expect("a count") as usize;
    let har = browser.har();
    let har_path = dir.path().join("polling.har");
    std::fs::write(&har_path, serde_json::to_vec_pretty(&har).expect("HAR")).expect("write");
    let statuses = har["log"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| {
            e["request"]["url"]
                .as_str()
                .is_some_and(|u| u.contains("/test/status/"))
        })
        .count();
    assert_eq!(statuses, polls, "every poll is in the HAR");
    captured(&capture, polls).await;

    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        "[[rules]]\nname = \"completed_stage\"\nenabled = false\n",
    )
    .expect("write");
    let new = dir.path().join("new.toml");
    std::fs::write(&new, "").expect("write");
    let (old, new) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));
    let from_capture = differing(&[
        "--config",
        new,
        "--against",
        old,
        "--json",
        capture.to_str().expect("utf-8"),
    ]);
    let from_har = differing(&[
        "--config",
        new,
        "--against",
        old,
        "--json",
        har_path.to_str().expect("utf-8"),
    ]);
    assert_eq!(from_har, from_capture);

    let ledger = standin.ledger().await;
    let broken: BTreeSet<String> = ledger["injected_tasks"]["task_status"]["completed_stage"]
        .as_array()
        .expect("injected tasks")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert!(!broken.is_empty(), "{ledger}");
    assert_eq!(from_har, (Some(1), broken));
}
