//! The request body type of the stack, and a response body wrapper that holds a guard until the
//! body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

/// The error at the tower boundary.
use crate::BoxError;

/// Request bodies inside the stack: streamed, never collected by the proxy. Boxed once, so
/// in-test requests and hyper's `Incoming` take the same path.
pub type ProxyBody = UnsyncBoxBody<bytes::Bytes, BoxError>;

pin_project! {
    /// A body that keeps `guard` alive until its last frame (or an error) is read, or until it
    /// is dropped unfinished: the moment a streamed response's outcome is known.
    #[derive(Debug)]
    pub struct Guarded<B, G> {
        #[pin]
        body: B,
        guard: Option<G>,
    }
}

// === impl Guarded ===

impl<B, G> Guarded<B, G> {
    pub fn new(body: B, guard: G) -> Guarded<B, G> {
        Guarded {
            body,
            guard: Some(guard),
        }
    }
}

impl<B, G> Body for Guarded<B, G>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            *this.guard = None;
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
