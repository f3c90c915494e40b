//! SIGTERM and SIGINT, the signals that start a graceful shutdown; SIGHUP, the one that reloads.

use std::io;
use std::sync::Arc;

use crate::reload::Reloader;

/// SIGTERM and SIGINT, installed up front so neither kills the process once we listen.
pub(super) struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

// === impl ShutdownSignals ===

impl ShutdownSignals {
    pub(super) fn install() -> io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    pub(super) async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// SIGHUP, installed before the sidecar says it listens: from then on a SIGHUP reloads, and never
/// kills the process (its default action).
pub(super) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

// === impl Hangups ===

impl Hangups {
    pub(super) fn install() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(signal) => Hangups {
                    signal: Some(signal),
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGHUP; reload with POST /-/reload");
                    Hangups { signal: None }
                }
            }
        }
        #[cfg(not(unix))]
        Hangups {}
    }
}

/// Reloads on every SIGHUP and, with `watch`, whenever the file's content changes.
pub(super) async fn reload_on_hangup(reloader: Arc<Reloader>, hangups: Hangups, watch: bool) {
    if watch {
        tokio::spawn(reloader.clone().watch());
    }
    #[cfg(unix)]
    if let Some(mut signal) = hangups.signal {
        while signal.recv().await.is_some() {
            let _ = reloader.reload("SIGHUP");
        }
    }
    #[cfg(not(unix))]
    let _ = hangups;
    std::future::pending::<()>().await;
}
