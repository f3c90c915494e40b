//! The response body the inspection layer hands back: the upstream's stream as it is, or what was
//! read into memory replayed ahead of whatever the upstream has not sent yet.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::budget::Reservation;
use crate::BoxError;

pin_project! {
    /// Either the untouched upstream body, or frames held in memory followed by the rest of it.
    #[project = InspectBodyProj]
    pub enum InspectBody<B> {
        Passthrough { #[pin] inner: B },
        Replay {
            // Frames read while deciding; sent first, in order.
            held: VecDeque<Frame<Bytes>>,
            // The part of the upstream body not read yet (None once it ended).
            #[pin] rest: Option<B>,
            // An upstream failure met while reading: surfaces after `held`, so the client sees a
            // broken response rather than a shorter one that looks complete.
            failure: Option<BoxError>,
            // Whether to announce the held length as exact; false keeps a response that came
            // chunked chunked, since hyper frames an exact length with Content-Length.
            exact: bool,
            // The share of the global budget the held frames use; given back on drop.
            reservation: Option<Reservation>,
        },
    }
}

// === impl InspectBody ===

impl<B> InspectBody<B> {
    pub fn passthrough(inner: B) -> Self {
        InspectBody::Passthrough { inner }
    }

    /// `held` frames, then `rest` (if the upstream body has not ended), then `failure` (if any).
    pub fn replay(
        held: VecDeque<Frame<Bytes>>,
        rest: Option<B>,
        failure: Option<BoxError>,
    ) -> Self {
        InspectBody::Replay {
            held,
            rest,
            failure,
            exact: true,
            reservation: None,
        }
    }

    /// Keeps `held`'s share of the budget until this body is done with.
    pub fn holding(mut self, held: Reservation) -> Self {
        if let InspectBody::Replay { reservation, .. } = &mut self {
            *reservation = Some(held);
        }
        self
    }

    /// Does not announce an exact length, so the response keeps chunked framing.
    pub fn without_length(mut self) -> Self {
        if let InspectBody::Replay { exact, .. } = &mut self {
            *exact = false;
        }
        self
    }
}

impl<B> Body for InspectBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            InspectBodyProj::Passthrough { inner } => inner
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            InspectBodyProj::Replay {
                held,
                mut rest,
                failure,
                ..
            } => {
                if let Some(frame) = held.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(err) = failure.take() {
                    return Poll::Ready(Some(Err(err)));
                }
                let Some(inner) = rest.as_mut().as_pin_mut() else {
                    return Poll::Ready(None);
                };
                let polled = std::task::ready!(inner.poll_frame(cx));
                if polled.is_none() {
                    rest.set(None);
                }
                Poll::Ready(polled.map(|result| result.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InspectBody::Passthrough { inner } => inner.is_end_stream(),
            InspectBody::Replay {
                held,
                rest,
                failure,
                ..
            } => {
                held.is_empty()
                    && failure.is_none()
                    && rest.as_ref().is_none_or(|inner| inner.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InspectBody::Passthrough { inner } => inner.size_hint(),
            InspectBody::Replay {
                held,
                rest,
                failure,
                exact,
                ..
            } => {
                let held_len: u64 = held
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                match (rest, failure) {
                    (None, None) if *exact => SizeHint::with_exact(held_len),
                    (Some(inner), None) => {
                        let inner = inner.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(held_len + inner.lower());
                        if let Some(upper) = inner.upper() {
                            hint.set_upper(held_len + upper);
                        }
                        hint
                    }
                    (None, None) | (_, Some(_)) => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(held_len);
                        hint
                    }
                }
            }
        }
    }
}
