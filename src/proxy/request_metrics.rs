//! The outermost layer: classifies the request's route once (into its extensions, for every
//! layer below), and counts requests, durations and requests in flight.
//!
//! It only records: the inner future passes straight through, and the end of the response is
//! observed in the body, cancellation included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::body::{BoxError, Guarded, ProxyBody};
use crate::metrics::{method_index, Metrics};
use crate::routes::MatchedRoute;
use crate::settings::Settings;

#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
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
    metrics: Arc<Metrics>,
    route: MatchedRoute,
    start: Instant,
}

// === impl RequestMetricsLayer ===

impl RequestMetricsLayer {
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> RequestMetricsLayer {
        RequestMetricsLayer { settings, metrics }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> RequestMetrics<S> {
        RequestMetrics {
            inner,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

// === impl RequestMetrics ===

impl<S> Service<Request<ProxyBody>> for RequestMetrics<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        let route = self
            .settings
            .routes
            .classify(req.method(), req.uri().path());
        req.extensions_mut().insert(route.clone());
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

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let done = this
            .done
            .take()
            .expect("ResponseFuture polled after completion");
        let route = done.metrics.proxy_route(done.route.index);
        match result {
            Ok(response) => {
                route.request(*this.method, response.status()).inc();
                tracing::debug!(
                    route = &*done.route.name,
                    status = response.status().as_u16(),
                    "response head"
                );
                Poll::Ready(Ok(
                    response.map(|body| Guarded::new(body, done).boxed_unsync())
                ))
            }
            Err(err) => {
                // No layer below should fail; if one does, hyper drops the connection: a 5xx.
                route
                    .request(*this.method, http::StatusCode::INTERNAL_SERVER_ERROR)
                    .inc();
                tracing::warn!(route = &*done.route.name, error = %err, "request failed");
                Poll::Ready(Err(err))
            }
        }
    }
}

// === impl RequestDone ===

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.metrics
            .proxy_route(self.route.index)
            .duration
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics.inflight.dec();
    }
}
