//! A minimal HTTP/1.1 client (GET, or another method without a body) over loopback for the tests of the HTTP listener: one request per
//! connection (`Connection: close`), bounded in time, no client library in between.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpAnswer {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `path` from `addr`, within 10 s.
pub async fn get(addr: SocketAddr, path: &str) -> Result<HttpAnswer> {
    get_with(addr, path, &[]).await
}

/// [`get`] with further request `headers` (name, value).
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer> {
    request(addr, "GET", path, headers).await
}

/// Sends `method path` (no body) with further request `headers` to `addr`, within 10 s.
/// The `Host` header is `addr` unless `headers` has one.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer> {
    tokio::time::timeout(
        Duration::from_secs(10),
        request_inner(addr, method, path, headers),
    )
    .await
    .with_context(|| format!("{method} {path} timed out"))?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer> {
    let mut s = TcpStream::connect(addr).await.context("connecting")?;
    let mut extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        extra.insert_str(0, &format!("Host: {addr}\r\n"));
    }
    // A request of another method says that it has no body.
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let req = format!("{method} {path} HTTP/1.1\r\n{extra}{length}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("answer is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no end of headers in {text:?}");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body.
fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("chunk size line")?;
        let n = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).context("chunk end")?;
    }
}

/// GETs `path` and decodes its JSON body as `T`, failing unless the status is 200.
pub async fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T> {
    let a = get(addr, path).await?;
    if a.status != 200 {
        bail!("GET {path}: status {} ({})", a.status, a.body);
    }
    serde_json::from_str(&a.body).with_context(|| format!("GET {path}: {}", a.body))
}
