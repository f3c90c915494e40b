//! `Upgrade` (WebSocket and friends): forward the handshake, then tunnel bytes both ways.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Once both sides have switched protocols, copies bytes between them until either closes.
pub(crate) fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded tunnel closed"),
            Err(err) => tracing::debug!(error = %err, "upgraded tunnel failed"),
        }
    });
}
