//! A minimal HTTP/1.1 client for the load driver: one request per connection, JSON in and
//! out, bodies framed by `Content-Length` (as the shop's server sends them).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server took too long.
    #[error("timed out")]
    Timeout,
    /// The request could not be written as asked.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The answer was not HTTP as expected.
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// Sends `method path` with an optional JSON body; returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), ClientError> {
    request_with_headers(addr, method, path, body, &[], Duration::from_secs(30)).await
}

/// Sends `method path` with an optional JSON body and extra `headers` (name, value),
/// giving up after `timeout`; returns the status and the body.
pub async fn request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, serde_json::Value), ClientError> {
    if headers
        .iter()
        .any(|(name, value)| format!("{name}{value}").contains(['\r', '\n']))
    {
        return Err(ClientError::BadRequest(
            "a header holds a line break".into(),
        ));
    }
    tokio::time::timeout(timeout, exchange(addr, method, path, body, headers))
        .await
        .map_err(|_| ClientError::Timeout)?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(payload.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse("no header end".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("no status in {head:?}")))?;
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).map_err(|e| ClientError::BadResponse(e.to_string()))?
    };
    Ok((status, json))
}
