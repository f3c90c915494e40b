//! Load shedding: past `proxy.max_concurrent_requests` requests in flight, answer 503 at once.
//!
//! A request holds its permit until its response body ends, because a streaming response still
//! occupies an upstream connection. The permits are shared by every worker thread, so the cap
//! is global and exact.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::body::Guarded;
use super::error::error_response;

/// An admitted response's body holding its permit, or the 503.
pub type ShedBody<B> = Either<Guarded<B, OwnedSemaphorePermit>, Full<Bytes>>;

/// Caps concurrent requests; carries only the cap and where to count.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    /// `consistency_proxy_load_shed_total`.
    shed: IntCounter,
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
    /// `consistency_proxy_load_shed_total`.
    shed: IntCounter,
}

pin_project! {
    /// Admitted requests run the inner future; shed ones are answered without it.
    #[project = ShedFutureProj]
    pub enum ShedFuture<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { response: Option<Response<Full<Bytes>>> },
    }
}

// === impl ShedLayer ===

impl ShedLayer {
    pub fn new(limit: usize, shed: IntCounter) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            shed,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
            shed: self.shed.clone(),
        }
    }
}

// === impl Shed ===

impl<S, ReqB, ResB> Service<Request<ReqB>> for Shed<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ShedBody<ResB>>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ShedFuture::Admitted {
                inner: self.inner.call(req),
                permit: Some(permit),
            },
            Err(_) => {
                self.shed.inc();
                tracing::debug!(limit = self.limit, "load shed");
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    &format!("more than {} concurrent requests", self.limit),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                ShedFuture::Shed {
                    response: Some(response),
                }
            }
        }
    }
}

// === impl ShedFuture ===

impl<F, B, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ShedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedFutureProj::Admitted { inner, permit } => {
                let response = ready!(inner.poll(cx))?;
                let permit = permit.take().expect("ShedFuture polled after completion");
                Poll::Ready(Ok(
                    response.map(|body| Either::Left(Guarded::new(body, permit)))
                ))
            }
            ShedFutureProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("ShedFuture polled after completion")
                .map(Either::Right))),
        }
    }
}
