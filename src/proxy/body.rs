//! The body type every layer of the stack speaks, and a wrapper that holds a guard until the
//! body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

/// The error at the tower boundary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies inside the stack: streamed, never collected by the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body that keeps `guard` alive until its last frame (or an error) is read, or until it is
/// dropped unfinished: the moment a streamed response's outcome is known.
#[derive(Debug)]
pub struct Guarded<G> {
    body: ProxyBody,
    guard: Option<G>,
}

// === impl Guarded ===

impl<G> Guarded<G> {
    pub fn new(body: ProxyBody, guard: G) -> Guarded<G> {
        Guarded {
            body,
            guard: Some(guard),
        }
    }
}

impl<G: Unpin> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
