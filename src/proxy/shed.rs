//! Load shedding: past `proxy.max_concurrent_requests` requests in flight, answer 503 at once.
//!
//! A request holds its permit until its response body ends, because a streaming response still
//! occupies an upstream connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::body::{BoxError, Guarded, ProxyBody};
use super::upstream::error_response;
use crate::metrics::Metrics;

/// Caps concurrent requests; carries only the cap and where to count.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

pin_project! {
    /// Admitted requests run the inner future; shed ones are answered without it.
    #[project = ShedFutureProj]
    pub enum ShedFuture<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { response: Option<Response<ProxyBody>> },
    }
}

// === impl ShedLayer ===

impl ShedLayer {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
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
            metrics: self.metrics.clone(),
        }
    }
}

// === impl Shed ===

impl<S> Service<Request<ProxyBody>> for Shed<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ShedFuture::Admitted {
                inner: self.inner.call(req),
                permit: Some(permit),
            },
            Err(_) => {
                self.metrics.load_shed.inc();
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

impl<F> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedFutureProj::Admitted { inner, permit } => {
                let response = ready!(inner.poll(cx))?;
                let permit = permit.take();
                Poll::Ready(Ok(
                    response.map(|body| Guarded::new(body, permit).boxed_unsync())
                ))
            }
            ShedFutureProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("ShedFuture polled after completion"))),
        }
    }
}
