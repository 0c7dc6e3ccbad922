//! HTTP to the admin server, and metrics read from its text.

/// A metric's value in a Prometheus text exposition (sum over the label
/// sets that contain `labels`).
pub fn metric_value(body: &str, name: &str, labels: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let series = l.split_whitespace().next().unwrap();
            series == name || (series.starts_with(&format!("{name}{{")) && series.contains(labels))
        })
        .map(|l| l.split_whitespace().last().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// GET `path` from an HTTP server on `addr`: (status, body), or `None`
/// when it does not answer.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    http(addr, "GET", path, None).await
}

/// `method` `path` with an optional bearer token: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}
