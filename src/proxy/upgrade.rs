//! `Upgrade` (WebSocket and friends): forward the handshake, then tunnel bytes both ways.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The `Upgrade` header of a request that asks for one (`Connection` lists `upgrade`).
pub(crate) fn requested_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(super::forward::tokens)
        .any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    if asks {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

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
