//! The Redis link closed: `rediss://` against a real `redis-server --tls-port` with a CA made
//! in the test, and a store that recovers by itself once an authentication failure is fixed on
//! the server, with the README's minimal ACL user.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::redis_server::RedisServer;
use support::*;

/// `consistency_tracker_store_up` of `sidecar` reaching `up`.
async fn wait_store_up(sidecar: &Sidecar, up: f64) {
    wait_for(&format!("store_up to become {up}"), || async move {
        let scrape = sidecar.metrics().await;
        (scrape.value("consistency_tracker_store_up", &[]) == up).then_some(())
    })
    .await;
}

/// A CA, and a server certificate it signed for 127.0.0.1, made with the openssl CLI in `dir`.
fn test_ca(openssl: &Path, dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=sidecar test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    run_ok(openssl, &ca, dir);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run_ok(openssl, &csr, dir);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write the extensions");
    run_ok(
        openssl,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
        dir,
    );
}

/// `redis-server` answering TLS only on `tls_port`, with the certificate of [`test_ca`].
fn tls_redis(redis_server: &Path, dir: &Path, tls_port: u16) -> Process {
    let mut cmd = Command::new(redis_server);
    cmd.current_dir(dir)
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &tls_port.to_string()])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
        .stdin(Stdio::null());
    Process::spawn("redis-server --tls-port", cmd)
}

#[tokio::test]
async fn the_shared_memory_is_reached_over_tls_with_a_ca_of_its_own() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let Some(redis_server) = tool("redis-server") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    test_ca(&openssl, dir.path());
    let tls_port = free_port().port();
    let redis = tls_redis(&redis_server, dir.path(), tls_port);
    redis
        .wait_for_line("Ready to accept connections", |line| {
            line.contains("Ready to accept connections").then_some(())
        })
        .await;

    let upstream = TestUpstream::standard().await;
    let ca = dir.path().join("ca.crt");
    let config = format!(
        "[tracker]\nstore = \"redis\"\nredis_url = \"rediss://127.0.0.1:{tls_port}\"\n\
         redis_ca_file = {ca:?}\ntimeout = \"1s\"\nretry_interval = \"200ms\"\n"
    );
    let sidecar = Sidecar::start(&upstream.url(), &config).await;
    // The probe runs the judge script over the TLS connection.
    wait_store_up(&sidecar, 1.0).await;

    // Without the test CA the server's certificate is not trusted: the store stays down.
    let untrusting = config.replace(&format!("redis_ca_file = {ca:?}\n"), "");
    let sidecar = Sidecar::start(&upstream.url(), &untrusting).await;
    store_down_with(&sidecar, "connection").await;
}

/// Waits until the store's errors of `reason` are counted, and checks the store is down.
async fn store_down_with(sidecar: &Sidecar, reason: &str) {
    wait_for(
        &format!("store errors of reason {reason} to be counted"),
        || async {
            let scrape = sidecar.metrics().await;
            (scrape.value(
                "consistency_tracker_store_errors_total",
                &[("reason", reason)],
            ) > 0.0)
                .then_some(())
        },
    )
    .await;
    let scrape = sidecar.metrics().await;
    assert_eq!(scrape.value("consistency_tracker_store_up", &[]), 0.0);
}

/// Runs one command on `server` as its `default` user.
async fn redis_admin(server: &RedisServer, password: Option<&str>, args: &[&str]) {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{}", server.port()),
        None => server.url(),
    };
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect as default");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let () = cmd.query_async(&mut connection).await.expect("command");
}

#[tokio::test]
async fn after_an_auth_failure_fixed_on_the_server_the_store_recovers_by_itself() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "sidecar-password\n").expect("write the password");
    // The sidecar's user does not exist yet: every connection is refused (WRONGPASS).
    redis_admin(
        &server,
        None,
        &["CONFIG", "SET", "requirepass", "admin-password"],
    )
    .await;

    let upstream = TestUpstream::standard().await;
    let config = format!(
        "[tracker]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_username = \"sidecar\"\n\
         redis_password_file = {password_file:?}\nretry_interval = \"200ms\"\n",
        server.url()
    );
    let sidecar = Sidecar::start(&upstream.url(), &config).await;
    store_down_with(&sidecar, "auth").await;

    // The README's minimal ACL: the key prefix and the commands the sidecar sends.
    let acl = [
        "ACL",
        "SETUSER",
        "sidecar",
        "on",
        ">sidecar-password",
        "resetkeys",
        "~consistency:*",
        "resetchannels",
        "-@all",
        "+evalsha",
        "+eval",
        "+script|load",
        "+get",
        "+set",
        "+del",
        "+pexpire",
        "+zadd",
        "+zcard",
        "+zrange",
        "+zrangebyscore",
        "+zrem",
        "+zscore",
        "+ping",
    ];
    redis_admin(&server, Some("admin-password"), &acl).await;
    // No restart: the next probe builds a new connection, which authenticates.
    wait_store_up(&sidecar, 1.0).await;
}
