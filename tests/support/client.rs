//! The test client: hyper's, one fresh connection per request, every wait bounded by
//! [`PATIENCE`]. Raw TCP ([`raw`]) is kept for the tests whose subject is the bytes on the
//! wire: framing, malformed or oversized heads, a slow head, header-name case.

use std::io::Read;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BoxError, PATIENCE};

/// The body type of every request the tests build.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole response: status, headers and the collected body.
pub type Answer = (StatusCode, HeaderMap, Bytes);

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Sends `request` to the authority of its URI (origin-form, Host from the URI unless set),
/// over HTTP/1.1, or over HTTP/2 with prior knowledge (h2c) when `h2c`; returns the head.
async fn request_with(
    request: Request<TestBody>,
    h2c: bool,
) -> Result<Response<Incoming>, BoxError> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(h2c)
        .build_http();
    match tokio::time::timeout(PATIENCE, client.request(request)).await {
        Ok(response) => Ok(response?),
        Err(_) => Err(format!("no response head within {PATIENCE:?}").into()),
    }
}

/// Sends `request` to the authority of its URI and returns the response head; the body is
/// the caller's to read (trailers, upgrades, a body expected to break).
pub async fn request(request: Request<TestBody>) -> Result<Response<Incoming>, BoxError> {
    request_with(request, false).await
}

/// Like [`request`], over HTTP/2 with prior knowledge (h2c).
pub async fn request_h2c(request: Request<TestBody>) -> Result<Response<Incoming>, BoxError> {
    request_with(request, true).await
}

/// A keep-alive HTTP/1.1 connection: requests go one after another on it, each exactly as
/// built (see [`request_on`]).
pub type Connection = hyper::client::conn::http1::SendRequest<TestBody>;

/// Opens a [`Connection`] to `addr` (upgrades allowed).
pub async fn connect(addr: SocketAddr) -> Result<Connection, BoxError> {
    let opening = async {
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection.with_upgrades());
        Ok::<_, BoxError>(sender)
    };
    match tokio::time::timeout(PATIENCE, opening).await {
        Ok(connection) => connection,
        Err(_) => Err(format!("no connection within {PATIENCE:?}").into()),
    }
}

/// Sends `request` on `connection` once it is ready; returns the head.
pub async fn request_via(
    connection: &mut Connection,
    request: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    let exchange = async {
        connection.ready().await?;
        Ok::<_, BoxError>(connection.send_request(request).await?)
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(response) => response,
        Err(_) => Err(format!("no response head within {PATIENCE:?}").into()),
    }
}

/// Sends `request` exactly as built over a fresh HTTP/1.1 connection to `addr`: the request
/// target is the URI as given (absolute- or authority-form included) and no Host is added.
pub async fn request_on(
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    request_via(&mut connect(addr).await?, request).await
}

/// Like [`request_on`], from the local address `from` (such as `127.0.0.2`, still loopback):
/// how a test plays a peer outside a CIDR list without leaving the machine.
pub async fn request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    let opening = async {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(addr).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok::<_, BoxError>(sender)
    };
    let mut sender = match tokio::time::timeout(PATIENCE, opening).await {
        Ok(sender) => sender?,
        Err(_) => return Err(format!("no connection within {PATIENCE:?}").into()),
    };
    request_via(&mut sender, request).await
}

/// Reads a whole response body (trailers dropped), bounded by [`PATIENCE`].
pub async fn collect(response: Response<Incoming>) -> Result<Answer, BoxError> {
    let (head, body) = response.into_parts();
    let body = match tokio::time::timeout(PATIENCE, body.collect()).await {
        Ok(body) => body?.to_bytes(),
        Err(_) => return Err(format!("body not complete within {PATIENCE:?}").into()),
    };
    Ok((head.status, head.headers, body))
}

/// Sends a request and reads the whole answer, or says what went wrong.
pub async fn try_send(req: Request<TestBody>) -> Result<Answer, BoxError> {
    collect(request(req).await?).await
}

/// Sends a request and reads the whole answer; a transport error fails the test.
pub async fn send(req: Request<TestBody>) -> Answer {
    let target = req.uri().to_string();
    try_send(req)
        .await
        .unwrap_or_else(|e| panic!("{target}: {e}"))
}

pub async fn try_get(url: &str) -> Result<Answer, BoxError> {
    try_send(Request::get(url).body(empty())?).await
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(empty()).expect("request")).await
}

/// POSTs a JSON body.
pub async fn post_json(url: &str, body: &str) -> Answer {
    send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .expect("request"),
    )
    .await
}

/// Like [`send`], but reports whether the body ended in an error instead of failing.
pub async fn send_expect_broken_body(req: Request<TestBody>) -> Result<Bytes, String> {
    let response = request(req).await.expect("response head");
    collect(response)
        .await
        .map(|(_, _, body)| body)
        .map_err(|e| e.to_string())
}

/// The body as sent, undoing a gzip, deflate, br or zstd Content-Encoding.
pub fn decode(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let mut out = Vec::new();
    match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut out),
        Some("br") => brotli::Decompressor::new(&body[..], 4096).read_to_end(&mut out),
        Some("zstd") => zstd::Decoder::new(&body[..]).and_then(|mut d| d.read_to_end(&mut out)),
        None | Some("identity") => return body.to_vec(),
        Some(other) => panic!("a test client cannot read Content-Encoding {other:?}"),
    }
    .expect("body decodes");
    out
}

/// GETs `url` with an `Accept-Encoding` (`None`: without one).
pub async fn get_accepting(url: &str, accept_encoding: Option<&str>) -> Answer {
    let mut request = Request::get(url);
    if let Some(accept) = accept_encoding {
        request = request.header("accept-encoding", accept);
    }
    send(request.body(empty()).expect("request")).await
}

/// Writes `bytes` on a fresh connection and reads until the server closes it (bounded).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("server closes in time");
    out
}

/// Percent-encodes a query-string value (everything but RFC 3986's unreserved characters).
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
