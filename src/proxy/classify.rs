//! Route classification: the one place a request's route is decided, once, into its extensions
//! as a [`MatchedRoute`] that metrics and inspection read (none for an unrouted request).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use crate::settings::Settings;

/// Carries the compiled route table.
#[derive(Debug, Clone)]
pub struct ClassifyLayer {
    settings: Arc<Settings>,
}

#[derive(Debug, Clone)]
pub struct Classify<S> {
    inner: S,
    settings: Arc<Settings>,
}

// === impl ClassifyLayer ===

impl ClassifyLayer {
    pub fn new(settings: Arc<Settings>) -> ClassifyLayer {
        ClassifyLayer { settings }
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Classify<S> {
        Classify {
            inner,
            settings: self.settings.clone(),
        }
    }
}

// === impl Classify ===

impl<S, B> Service<Request<B>> for Classify<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        // An unrouted request carries none: its readers take that as `other`, and most traffic
        // is unrouted, so it saves an extension per request.
        if let Some(route) = self
            .settings
            .routes
            .classify(req.method(), req.uri().path())
        {
            req.extensions_mut().insert(route);
        }
        self.inner.call(req)
    }
}
