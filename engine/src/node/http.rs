//! A minimal HTTP listener serving `GET /metrics` in Prometheus text format.
//! Requests are read up to a bound and answered once; anything else gets a
//! 404. It runs on the `barge-net` runtime, never on the Raft thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;

/// Bytes of request read before answering (headers beyond are ignored).
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are closed unanswered, so a flood of
/// idle connections costs at most this many buffers.
const CONNECTIONS_MAX: usize = 64;

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue; // Dropping the stream closes it.
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, shared)).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buffer = vec![0u8; REQUEST_BYTES_MAX];
    let mut filled = 0;
    while filled < buffer.len() {
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
        if buffer[..filled]
            .windows(4)
            .any(|window| window == b"\r\n\r\n")
        {
            break;
        }
    }
    let request = &buffer[..filled];
    let response = if request.starts_with(b"GET /metrics ") || request.starts_with(b"GET / ") {
        let body = shared
            .metrics
            .lock()
            .as_ref()
            .map(super::Metrics::to_prometheus)
            .unwrap_or_default();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
