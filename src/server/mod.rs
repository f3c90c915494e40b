//! The listeners and what serves them: the proxy port (HTTP/1.1 and h2c on one port) on worker
//! threads, the admin port, background upkeep, and graceful shutdown.
//!
//! [`serve`] takes its listeners and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and stop it when they like; [`run_until_signal`] is what the binary runs.

mod accept;
mod admin;
mod connection;
mod deadlines;
mod limit;
mod protocol;
mod signals;
mod upkeep;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::reload::{ConfigSource, Reloader};
use crate::runtime;
use crate::settings::Settings;
use crate::stack::Sidecar;

pub use admin::{ADMIN_MAX_CONNECTIONS, ADMIN_MAX_HEAD_BYTES};
use signals::ShutdownSignals;

/// Runs the proxy and admin servers until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for up to `proxy.shutdown_grace`, and closes what is left.
///
/// The proxy port is served by `proxy.workers` threads (0: one per core), each with its own
/// single-threaded runtime; the admin port and upkeep run on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    admin_listener: TcpListener,
    settings: Arc<Settings>,
    source: Option<ConfigSource>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let sidecar = Arc::new(Sidecar::new(settings.clone()).map_err(io::Error::other)?);
    let reloader = match source {
        Some(source) => Some(Arc::new(
            Reloader::new(sidecar.clone(), source, &sidecar.registry).map_err(io::Error::other)?,
        )),
        None => None,
    };
    // Before the `listening` line: a SIGHUP sent once we say we listen must reload, not kill.
    let hangups = reloader.as_ref().map(|_| signals::Hangups::install());
    let proxy = &settings.config.proxy;
    let workers = match proxy.workers {
        0 => runtime::default_workers(),
        n => n,
    };
    tracing::info!(
        proxy = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        upstream = %settings.config.upstream.uri,
        mode = ?settings.config.mode,
        workers,
        "listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let connection_families =
        limit::ConnectionFamilies::register(&sidecar.registry).map_err(io::Error::other)?;
    let proxy_cap = connection_families.limit("proxy", proxy.max_client_connections);
    let admin_cap = connection_families.limit("admin", admin::ADMIN_MAX_CONNECTIONS);
    let worker = accept::Worker::new(
        &sidecar,
        listener.into_std()?,
        workers,
        proxy_cap,
        stop_rx.clone(),
    )?;
    runtime::spawn_workers(workers, move |_| {
        let worker = worker.clone();
        let done = done_tx.clone();
        async move {
            worker.run().await;
            drop(done);
        }
    })?;
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Admin::new(sidecar.clone(), reloader.clone()),
        admin_cap,
        stop_rx,
    ));
    let upkeep = tokio::spawn(upkeep::run(sidecar.clone()));
    let reloads = reloader.zip(hangups).map(|(reloader, hangups)| {
        tokio::spawn(signals::reload_on_hangup(
            reloader,
            hangups,
            settings.config.watch_config,
        ))
    });

    shutdown.await;
    // The receivers see this even if they never looked at the channel before.
    let _ = stop_tx.send(true);
    // Every worker holds a sender; the channel closes when the last one is done draining.
    let _ = done_rx.recv().await;
    admin.abort();
    upkeep.abort();
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// What the binary runs: binds the configured addresses, serves, reloads `source` on SIGHUP (and
/// on change with `watch_config`), and stops on SIGTERM or SIGINT.
pub fn run_until_signal(settings: Settings, source: ConfigSource) -> io::Result<()> {
    // The admin port, signals and upkeep are light: one thread is plenty; the proxy port gets
    // its own worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        // Before binding, so a signal that arrives once we are listening is never fatal.
        let signals = ShutdownSignals::install()?;
        let listener = bind(settings.config.listen, "listen").await?;
        let admin_listener = bind(settings.config.admin_listen, "admin_listen").await?;
        serve(
            listener,
            admin_listener,
            Arc::new(settings),
            Some(source),
            signals.wait(),
        )
        .await
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {key} {addr}: {e}")))
}

/// Completes once the stop flag is up (at once if it already is).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; it is dropped here, before any other await.
    let _ = stop.wait_for(|stopping| *stopping).await.map(drop);
}

/// Accept fails on transient conditions (out of file descriptors, a connection reset before
/// it was accepted); pausing keeps us from spinning while it lasts.
async fn accept_failed(err: io::Error) {
    tracing::warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
