//! `/metrics` over HTTP: a small responder on a tokio listener.
//!
//! Scrapes are plain `GET` requests answered with the whole text and the
//! connection closed, so no HTTP framework is needed; an HTTP server crate
//! (hyper's `server` feature) would also rebuild the client stack that
//! object_store, and with it DataFusion, is compiled against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Metrics;
use crate::error::{Diagnostic, Result};

/// Serves `metrics` at `http://<address>/metrics` until the process ends;
/// returns the address bound (port 0 picks a free port).
pub async fn serve(metrics: Arc<Metrics>, address: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        Diagnostic::new(
            "--metrics-address",
            None,
            format!("cannot listen on {address}: {e}"),
        )
        .with_fix("pick a free port, e.g. --metrics-address 127.0.0.1:9464 (0 picks one)")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::StreamSqlError::io("metrics address", e))?;
    // A few scrapers at a time, each with a short deadline: a flood of
    // idle connections cannot take the descriptors the pipeline needs.
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                continue; // dropped: too many scrapers at once
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                // A scraper that hangs or sends garbage only loses its answer.
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), answer(stream, &metrics)).await;
                drop(slot);
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let request = String::from_utf8_lossy(&head);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
