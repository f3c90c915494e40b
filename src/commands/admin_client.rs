//! A minimal HTTP/1.1 GET for the `report` and `demo` commands, over hyper's client.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::BoxError;

/// Fetches `url` and returns its body as text; non-2xx answers are errors.
pub fn get_text(url: &str) -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(fetch_text(url))
}

/// The async form of [`get_text`], for callers already inside a runtime.
pub async fn fetch_text(url: &str) -> Result<String, BoxError> {
    let uri: http::Uri = url.parse()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
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
