//! A minimal HTTP/1.1 GET for the `report` and `demo` commands, over hyper's client.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::BoxError;

/// Fetches `url` (with `Authorization: Bearer <token>` when given) and returns its body as
/// text; non-2xx answers are errors.
pub fn get_text(url: &str, token: Option<&str>) -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(fetch_text_with(url, token))
}

/// The async form of [`get_text`] without a token, for callers already inside a runtime.
pub async fn fetch_text(url: &str) -> Result<String, BoxError> {
    fetch_text_with(url, None).await
}

async fn fetch_text_with(url: &str, token: Option<&str>) -> Result<String, BoxError> {
    let mut request = http::Request::get(url.parse::<http::Uri>()?);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<bytes::Bytes>::new())?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timed out after 10s")??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}").into());
    }
    Ok(text)
}
