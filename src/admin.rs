//! The admin port: `/healthz` (alive), `/readyz` (upstream reachable), `/metrics` (Prometheus),
//! and `/report`, `/report.json` once a [`ReportSource`] is plugged in.
//!
//! A plain service matching the path; it lives on its own port because it must not be public.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;

use crate::metrics::{self, Metrics};
use crate::settings::Settings;

/// Renders the consistency report for `/report` (text) and `/report.json`.
pub trait ReportSource: Send + Sync + 'static {
    fn text(&self) -> String;
    fn json(&self) -> String;
}

/// The admin service; cheap to clone per connection.
#[derive(Clone)]
pub struct Admin {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    report: Option<Arc<dyn ReportSource>>,
}

// === impl Admin ===

impl Admin {
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Admin {
        Admin {
            settings,
            metrics,
            report: None,
        }
    }

    /// Serves `/report` and `/report.json` from `report`; without one they are 404.
    pub fn with_report(mut self, report: Arc<dyn ReportSource>) -> Admin {
        self.report = Some(report);
        self
    }

    /// Answers one admin request; only the method and path are looked at.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.ready().await,
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            "/report" => match &self.report {
                Some(report) => text(StatusCode::OK, report.text()),
                None => text(StatusCode::NOT_FOUND, "no report in this build\n"),
            },
            "/report.json" => match &self.report {
                Some(report) => {
                    let mut response = Response::new(Full::new(Bytes::from(report.json())));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                None => text(StatusCode::NOT_FOUND, "no report in this build\n"),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "try /healthz, /readyz, /metrics, /report, /report.json\n",
            ),
        }
    }

    /// Ready when the upstream answered within `proxy.ready_window`, or accepts a TCP connection now.
    async fn ready(&self) -> Response<Full<Bytes>> {
        let proxy = &self.settings.config.proxy;
        if self.metrics.upstream_seen.within(proxy.ready_window.0) {
            return text(StatusCode::OK, "ready: upstream answered recently\n");
        }
        let authority = self.settings.config.upstream.authority();
        let port = authority.port_u16().unwrap_or(80);
        match probe(authority.host(), port, proxy.connect_timeout.0).await {
            Ok(()) => text(StatusCode::OK, "ready: upstream accepts connections\n"),
            Err(problem) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: upstream {authority}: {problem}\n"),
            ),
        }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("report", &self.report.is_some())
            .finish_non_exhaustive()
    }
}

async fn probe(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    // A bracketed IPv6 literal in a URI is a bare address to the resolver.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no TCP connection within {}",
            humantime::format_duration(timeout)
        )),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
