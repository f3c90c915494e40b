//! The admin port: `/healthz` (alive), `/readyz` (upstream reachable), `/metrics` (Prometheus),
//! the consistency report as `/report` (text) and `/report.json`, the status page at `/` and
//! `/status`, and the records behind issues: `/evidence` and `/tasks/{id}` (`admin/evidence.rs`).
//!
//! A plain service matching the path; it lives on its own port because it must not be public.
//! The status page is one self-contained HTML file compiled into the binary: it loads nothing
//! but `/report.json`, so it works offline, and its CSP tells the browser to refuse anything else.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;

use crate::metrics;
use crate::reload::Reloader;
use crate::report::{StalledRow, Started, Status};
use crate::stack::Sidecar;
use crate::tracker::STALLED_LISTED;

/// The admin service; cheap to clone per connection.
#[derive(Clone, Debug)]
pub struct Admin {
    sidecar: Arc<Sidecar>,
    /// `POST /-/reload`; none when the sidecar serves without a configuration source.
    reloader: Option<Arc<Reloader>>,
    started: Started,
}

/// The status page: inline CSS and script, no external resource of any kind.
const STATUS_PAGE: &str = include_str!("admin/status.html");

/// Only the page's own inline script and style, and fetches back to this port.
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

// === impl Admin ===

impl Admin {
    pub fn new(sidecar: Arc<Sidecar>, reloader: Option<Arc<Reloader>>) -> Admin {
        Admin {
            sidecar,
            reloader,
            started: Started {
                at: Instant::now(),
                wall: SystemTime::now(),
            },
        }
    }

    /// Answers one admin request; only the method and path are looked at.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/-/reload" {
            return self.reload(req.method());
        }
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
                let mut response = Response::new(Full::new(Bytes::from(metrics::encode(
                    &self.sidecar.registry,
                ))));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            "/report" => text(StatusCode::OK, self.sidecar.book().snapshot().to_text()),
            "/report.json" => {
                let settings = self.sidecar.current().settings.clone();
                let mut status = Status::collect(
                    &self.sidecar.book(),
                    &self.sidecar.registry,
                    &settings,
                    self.started,
                );
                status.config = self.reloader.as_ref().map(|r| r.last());
                status.stalled.tasks = stalled_rows(&self.sidecar);
                let json = serde_json::to_vec_pretty(&status)
                    .unwrap_or_else(|_| br#"{"error": "report unavailable"}"#.to_vec());
                let mut response = Response::new(Full::new(Bytes::from(json)));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            "/" | "/status" => {
                let mut response =
                    Response::new(Full::new(Bytes::from_static(STATUS_PAGE.as_bytes())));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(STATUS_PAGE_CSP),
                );
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            "/evidence" => evidence::evidence(&self.sidecar, req.uri().query()),
            path if path.starts_with("/tasks/") => {
                evidence::task(&self.sidecar, &path["/tasks/".len()..]).await
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /status, /healthz, /readyz, /metrics, /report, /report.json, /evidence, /tasks/{id}\n",
            ),
        }
    }

    /// Ready when the upstream answered within `proxy.ready_window`, or accepts a TCP connection now.
    async fn ready(&self) -> Response<Full<Bytes>> {
        let settings = self.sidecar.current().settings.clone();
        let proxy = &settings.config.proxy;
        if self.sidecar.answered.within(proxy.ready_window) {
            return text(StatusCode::OK, "ready: upstream answered recently\n");
        }
        let authority = settings.config.upstream.authority();
        let port = authority.port_u16().unwrap_or(80);
        match probe(authority.host(), port, proxy.connect_timeout).await {
            Ok(()) => text(StatusCode::OK, "ready: upstream accepts connections\n"),
            Err(problem) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: upstream {authority}: {problem}\n"),
            ),
        }
    }
}

// === impl Admin: reload ===

impl Admin {
    /// `POST /-/reload`: 200 with what happened, or 400 with the one line naming the key.
    fn reload(&self, method: &Method) -> Response<Full<Bytes>> {
        if *method != Method::POST {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let Some(reloader) = &self.reloader else {
            return text(
                StatusCode::BAD_REQUEST,
                "no configuration source to reload from\n",
            );
        };
        match reloader.reload("POST /-/reload") {
            Ok(done) if done.unchanged_keys.is_empty() => {
                text(StatusCode::OK, "configuration reloaded\n")
            }
            Ok(done) => text(
                StatusCode::OK,
                format!(
                    "configuration reloaded; kept at their running value until a restart: {}\n",
                    done.unchanged_keys.join(", ")
                ),
            ),
            Err(line) => text(StatusCode::BAD_REQUEST, format!("{line}\n")),
        }
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

/// The longest stalled tasks now, from the task memory (ids are never metric labels).
fn stalled_rows(sidecar: &Sidecar) -> Vec<StalledRow> {
    sidecar
        .memory()
        .stalled(STALLED_LISTED)
        .oldest
        .into_iter()
        .map(|task| StalledRow {
            route: task.route,
            task_id: task.task_id,
            stage: task.stage,
            progress: task.progress,
            stalled_for_seconds: task.stalled_for_ms / 1000,
            last_polled_seconds_ago: task.polled_ago_ms / 1000,
        })
        .collect()
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

mod evidence;

#[cfg(test)]
mod tests;
