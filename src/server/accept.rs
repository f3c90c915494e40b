//! One worker's share of the proxy port: its accept loop, and its drain at shutdown.
//!
//! The drain is ours rather than hyper-util's `GracefulShutdown` alone: a connection also asks
//! itself to close when idle (the same `graceful_shutdown` call, from its own select), and
//! connections still open when the grace period ends are aborted, which needs the worker to own
//! their tasks (a `JoinSet`), not only to watch them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connection::Connection;
use super::deadlines::Limits;
use super::limit::{ConnectionLimit, Place};
use super::protocol::Protocols;
use crate::stack::Sidecar;

/// What each worker needs to serve client connections; cloned into every worker thread.
#[derive(Clone)]
pub(super) struct Worker {
    /// One handle on the listening socket per worker, each taken by its worker: once every
    /// worker has stopped and dropped its own, the port refuses new connections.
    listeners: Arc<Mutex<Vec<std::net::TcpListener>>>,
    sidecar: Arc<Sidecar>,
    protocols: Arc<Protocols>,
    limits: Limits,
    /// `proxy.max_client_connections`, shared by every worker.
    cap: ConnectionLimit,
    grace: Duration,
    stop: watch::Receiver<bool>,
}

// === impl Worker ===

impl Worker {
    pub(super) fn new(
        sidecar: &Arc<Sidecar>,
        listener: std::net::TcpListener,
        workers: usize,
        cap: ConnectionLimit,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Worker> {
        let settings = sidecar.current().settings.clone();
        let proxy = &settings.config.proxy;
        let mut listeners = (1..workers.max(1))
            .map(|_| listener.try_clone())
            .collect::<std::io::Result<Vec<_>>>()?;
        listeners.push(listener);
        Ok(Worker {
            listeners: Arc::new(Mutex::new(listeners)),
            sidecar: sidecar.clone(),
            protocols: Arc::new(Protocols::new(&settings)),
            limits: Limits {
                idle: proxy.client_idle_timeout,
                head: proxy.client_header_timeout,
            },
            cap,
            grace: proxy.shutdown_grace,
            stop,
        })
    }

    /// Accepts and serves connections until told to stop, then drains this worker's own.
    pub(super) async fn run(self) {
        // Each worker registers its own handle on the one listening socket with its runtime;
        // the kernel hands each new connection to one of them.
        let taken = self
            .listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let Some(listener) = taken else {
            tracing::error!("more workers than handles on the listening socket");
            return;
        };
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "worker cannot use the listening socket");
                return;
            }
        };
        let mut connections = JoinSet::new();
        let stopping = super::stopped(self.stop.clone());
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // At the cap this waits, and accepts nothing more meanwhile.
                        let place = tokio::select! {
                            () = &mut stopping => break,
                            place = self.cap.admit() => place,
                        };
                        connections.spawn(self.connection(peer, place).serve(stream));
                    }
                    Err(err) => super::accept_failed(err).await,
                },
                Some(_) = connections.join_next() => {}
            }
        }
        drop(listener);
        tracing::info!(
            connections = connections.len(),
            grace = %humantime::format_duration(self.grace),
            "shutting down: no new connections, draining"
        );
        let drained = tokio::time::timeout(self.grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "grace period over; closing the remaining connections"
            );
            connections.abort_all();
        }
    }

    fn connection(&self, peer: SocketAddr, place: Place) -> Connection {
        Connection {
            protocols: self.protocols.clone(),
            sidecar: self.sidecar.clone(),
            counted: self.sidecar.pool.client_connection(),
            place,
            peer,
            limits: self.limits,
            stop: self.stop.clone(),
        }
    }
}
