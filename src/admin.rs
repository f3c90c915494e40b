//! The admin port: `/healthz` (alive), `/readyz` (upstream reachable), `/metrics` (Prometheus),
//! the consistency report as `/report` (text) and `/report.json`, the status page at `/` and
//! `/status`, and the records behind issues: `/evidence` and `/tasks/{id}` (`admin/evidence.rs`).
//!
//! A plain service matching the path; it lives on its own port because it must not be public.
//! The status page is one self-contained HTML file compiled into the binary: it loads nothing
//! but `/report.json`, so it works offline, and its CSP tells the browser to refuse anything else.

mod access;
mod csp;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpStream;

use crate::metrics;
use crate::reload::Reloader;
use crate::report::{StalledRow, Started, Status};
use crate::stack::Sidecar;
use crate::tracker::STALLED_LISTED;
use crate::BoxError;

pub use access::AdminToken;
use access::Refusal;

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

/// The login form of a port with a token: no script, no style.
const LOGIN_PAGE: &str = include_str!("admin/login.html");

/// Only the page's own inline script and style (by hash), and fetches back to this port.
static STATUS_PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&csp::for_inline_page(STATUS_PAGE)).expect("the CSP is ASCII")
});

/// Nothing at all but posting the form back.
const LOGIN_PAGE_CSP: &str =
    "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The most a login form's body may hold.
const LOGIN_BODY_LIMIT: usize = 4096;

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

    /// Answers one admin request from `peer`: the door's checks ([`access`]), then the path.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut response = self.admit_and_serve(req, peer).await;
        // No admin answer is ever to be read as anything but its declared type.
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }

    async fn admit_and_serve<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let settings = self.sidecar.current().settings.clone();
        let door = &settings.config.admin;
        if let Err(refusal) = access::check_host(door, req.headers()) {
            return refused(refusal);
        }
        let path = req.uri().path();
        if !matches!(path, "/healthz" | "/readyz") {
            if path == "/login" {
                return self.login(req, settings.admin_token.as_deref()).await;
            }
            if let Some(token) = &settings.admin_token {
                if !token.admits(req.headers()) {
                    return if matches!(path, "/" | "/status") {
                        see_other("login")
                    } else {
                        refused(Refusal::NoToken)
                    };
                }
            }
        }
        if path == "/-/reload" {
            if *req.method() == Method::POST {
                let allowed = access::check_reload_peer(door, peer.ip())
                    .and_then(|()| access::check_origin(req.headers()));
                if let Err(refusal) = allowed {
                    return refused(refusal);
                }
            }
            return self.reload(req.method());
        }
        self.serve(req.method(), path, req.uri().query()).await
    }

    /// The read-only paths: only the method, path and query are looked at.
    async fn serve(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
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
            "/report.json" => self.report_json(),
            "/" | "/status" => html(STATUS_PAGE, STATUS_PAGE_CSP.clone()),
            "/evidence" => evidence::evidence(&self.sidecar, query),
            path if path.starts_with("/tasks/") => {
                evidence::task(&self.sidecar, &path["/tasks/".len()..]).await
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /status, /healthz, /readyz, /metrics, /report, /report.json, /evidence, /tasks/{id}\n",
            ),
        }
    }

    fn report_json(&self) -> Response<Full<Bytes>> {
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

    /// `GET /login`: the form; `POST /login` with the right token: the cookie, and on to the
    /// status page.
    async fn login<B>(&self, req: Request<B>, token: Option<&AdminToken>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let Some(token) = token else {
            return text(
                StatusCode::NOT_FOUND,
                "no admin.token_file is set: nothing to log in to\n",
            );
        };
        if *req.method() != Method::POST {
            return html(LOGIN_PAGE, HeaderValue::from_static(LOGIN_PAGE_CSP));
        }
        // A page elsewhere must not log a browser in to a token of its choosing either.
        if let Err(refusal) = access::check_origin(req.headers()) {
            return refused(refusal);
        }
        let body = match Limited::new(req.into_body(), LOGIN_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "login form too large\n"),
        };
        let presented = form_field(&body, b"token").unwrap_or_default();
        if !token.is(&presented) {
            let mut response = html(LOGIN_PAGE, HeaderValue::from_static(LOGIN_PAGE_CSP));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
        let mut response = see_other("status");
        response
            .headers_mut()
            .insert(header::SET_COOKIE, token.set_cookie());
        response
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

/// A refusal as a short JSON answer.
fn refused(refusal: Refusal) -> Response<Full<Bytes>> {
    let (status, error) = match refusal {
        Refusal::ForeignHost => (
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not in admin.allowed_hosts",
        ),
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            "this admin port needs its token: Authorization: Bearer <admin.token_file>",
        ),
        Refusal::PeerNotAllowed => (
            StatusCode::FORBIDDEN,
            "reload is not allowed from this address (admin.reload_from)",
        ),
        Refusal::ForeignOrigin => (
            StatusCode::FORBIDDEN,
            "refused: the request comes from another origin's page",
        ),
    };
    let body = serde_json::json!({ "error": error }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if refusal == Refusal::NoToken {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"consistency-sidecar admin\""),
        );
    }
    response
}

/// A page of this port, with its policy; never cached, since it may sit behind a login.
fn html(page: &'static str, csp: HeaderValue) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 303 to a path relative to this one (`login`, `status`), so the page works under any prefix.
fn see_other(to: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

/// The value of `name` in an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let value = body.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (key == name).then(|| &value[1..])
    })?;
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [*bytes.next()?, *bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    Some(out)
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
