//! The tower layer and service that route responses of configured routes through the inspector.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{BoxError, ClientCodings, InspectBody, Inspector};
use crate::routes::MatchedRoute;

/// Carries the shared inspector; one per stack.
#[derive(Debug, Clone)]
pub struct InspectLayer {
    inspector: Arc<Inspector>,
}

#[derive(Debug, Clone)]
pub struct InspectService<S> {
    inner: S,
    inspector: Arc<Inspector>,
}

type Inspecting<B, E> = Pin<Box<dyn Future<Output = Result<Response<InspectBody<B>>, E>> + Send>>;

pin_project! {
    /// Unrouted requests go straight through; routed ones are inspected when they answer.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F, B, E> {
        Passthrough { #[pin] inner: F },
        Inspect { inspecting: Inspecting<B, E> },
    }
}

// === impl InspectLayer ===

impl InspectLayer {
    pub fn new(inspector: Arc<Inspector>) -> Self {
        InspectLayer { inspector }
    }
}

impl<S> Layer<S> for InspectLayer {
    type Service = InspectService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InspectService {
            inner,
            inspector: self.inspector.clone(),
        }
    }
}

// === impl InspectService ===

impl<S, ReqB, B> Service<Request<ReqB>> for InspectService<S>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<InspectBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, B, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let route = req.extensions().get::<MatchedRoute>().map(|m| m.index);
        let Some(route) = route else {
            return ResponseFuture::Passthrough {
                inner: self.inner.call(req),
            };
        };
        let method = req.method().clone();
        let uri = req.uri().clone();
        let client =
            ClientCodings::negotiate(req.headers_mut(), self.inspector.narrows_accept_encoding());
        let inspector = self.inspector.clone();
        let answer = self.inner.call(req);
        ResponseFuture::Inspect {
            inspecting: Box::pin(async move {
                let response = answer.await?;
                Ok(inspector
                    .respond(route, &method, &uri, client, response)
                    .await)
            }),
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<InspectBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Passthrough { inner } => inner
                .poll(cx)
                .map(|result| result.map(|response| response.map(InspectBody::passthrough))),
            ResponseFutureProj::Inspect { inspecting } => inspecting.as_mut().poll(cx),
        }
    }
}
