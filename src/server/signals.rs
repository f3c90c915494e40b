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

/// Reloads on every SIGHUP and, with `watch`, whenever the file's content changes.
pub(super) async fn reload_on_hangup(reloader: Arc<Reloader>, watch: bool) {
    if watch {
        tokio::spawn(reloader.clone().watch());
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reload with POST /-/reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let _ = reloader.reload("SIGHUP");
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}
