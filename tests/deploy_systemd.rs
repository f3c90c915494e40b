//! `deploy/systemd/consistency-sidecar.service` passes `systemd-analyze verify` without a warning,
//! keeps its hardening (offline `systemd-analyze security` exposure at most 2.0), and its
//! `ExecReload` reloads a running sidecar.

mod support;

use std::path::{Path, PathBuf};

use support::deploy::{deploy, read};
use support::{free_port, run, tool, wait_for, Sidecar};

const BINARY: &str = "/usr/local/bin/consistency-sidecar";

/// The unit as shipped, but starting the binary cargo built: `verify` checks that ExecStart
/// exists and is executable, and /usr/local/bin is empty on a build machine.
fn unit_in(dir: &Path) -> PathBuf {
    let unit = read(&deploy("systemd/consistency-sidecar.service"));
    assert!(unit.contains(BINARY));
    let path = dir.join("consistency-sidecar.service");
    std::fs::write(
        &path,
        unit.replace(BINARY, env!("CARGO_BIN_EXE_consistency-sidecar")),
    )
    .expect("write the unit");
    path
}

#[test]
fn systemd_analyze_verify_is_clean() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let unit = unit_in(tmp.path());
    let out = run(&analyze, &["verify", unit.to_str().unwrap()], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and only warns: any output is a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn unit_is_hardened() {
    let unit = read(&deploy("systemd/consistency-sidecar.service"));
    for line in [
        "ExecStart=/usr/local/bin/consistency-sidecar run --config /etc/consistency-sidecar/sidecar.toml",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "RestartPreventExitStatus=64",
        // `systemctl reload` is the sidecar's SIGHUP reload.
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "missing `{line}`");
    }
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let unit = unit_in(tmp.path());
    let out = run(
        &analyze,
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            unit.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "exposure above 2.0: {overall}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `systemctl reload` runs the unit's `ExecReload` with `$MAINPID` set: run that command line
/// against a real sidecar, and it must reload.
#[tokio::test]
async fn exec_reload_reloads_the_running_sidecar() {
    let unit = read(&deploy("systemd/consistency-sidecar.service"));
    let command = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecReload="))
        .expect("an ExecReload line");
    let words: Vec<&str> = command.split_whitespace().collect();
    let Some((program, args)) = words.split_first() else {
        panic!("an empty ExecReload");
    };
    let Some(program) = tool(program) else {
        return;
    };
    // Nothing needs to answer upstream for a reload.
    let upstream = format!("http://{}", free_port());
    let sidecar = Sidecar::start(&upstream, "").await;
    let pid = sidecar.pid().to_string();
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "$MAINPID" { pid.as_str() } else { a })
        .collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = run(&program, &args, tmp.path());
    assert!(out.status.success(), "ExecReload {command}: {out:?}");
    wait_for("the reload ExecReload asked for", || async {
        let metrics = sidecar.metrics().await;
        let reloads = metrics.value("consistency_config_reloads_total", &[("result", "success")]);
        (reloads == 1.0).then_some(())
    })
    .await;
}
