//! Counts requests, their durations and the requests in flight, by the route the classifier
//! put into the request's extensions.
//!
//! It only records: the inner future passes straight through, and the end of the response is
//! observed in the body, cancellation included.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::body::Guarded;
use super::metrics::{method_index, ProxyMetrics};
use crate::routes::MatchedRoute;

#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    metrics: ProxyMetrics,
}

#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: ProxyMetrics,
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        done: Option<RequestDone>,
        method: usize,
    }
}

/// Records the duration and leaves the in-flight gauge when dropped: at the end of the
/// response body, or when the request is abandoned before that.
#[derive(Debug)]
pub struct RequestDone {
    metrics: ProxyMetrics,
    /// `None`: `other`.
    route: Option<usize>,
    start: Instant,
}

// === impl RequestMetricsLayer ===

impl RequestMetricsLayer {
    pub fn new(metrics: ProxyMetrics) -> RequestMetricsLayer {
        RequestMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> RequestMetrics<S> {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

// === impl RequestMetrics ===

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequestMetrics<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Display,
{
    type Response = Response<Guarded<ResB, RequestDone>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Unclassified requests (`None`) count as `other`, the last route.
        let route = req.extensions().get::<MatchedRoute>().map(|m| m.index);
        self.metrics.inflight.inc();
        let method = method_index(req.method());
        ResponseFuture {
            inner: self.inner.call(req),
            done: Some(RequestDone {
                metrics: self.metrics.clone(),
                route,
                start: Instant::now(),
            }),
            method,
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<Response<Guarded<B, RequestDone>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let done = this
            .done
            .take()
            .expect("ResponseFuture polled after completion");
        let route = done.metrics.route(done.route);
        match result {
            Ok(response) => {
                route.request(*this.method, response.status()).inc();
                Poll::Ready(Ok(response.map(|body| Guarded::new(body, done))))
            }
            Err(err) => {
                // No layer below should fail; if one does, hyper drops the connection: a 5xx.
                route
                    .request(*this.method, http::StatusCode::INTERNAL_SERVER_ERROR)
                    .inc();
                tracing::warn!(error = %err, "request failed");
                Poll::Ready(Err(err))
            }
        }
    }
}

// === impl RequestDone ===

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.metrics
            .route(self.route)
            .duration
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics.inflight.dec();
    }
}
