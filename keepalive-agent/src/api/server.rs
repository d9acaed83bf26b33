//! The HTTP API's accept loop: hyper's HTTP/1 server with the two timeouts
//! `axum::serve` does not set. A connection that sends no complete request
//! head within [`HEADER_READ_TIMEOUT`] (idle keep-alive included) is closed,
//! and one whose peer has not taken a byte for [`WRITE_STALL_TIMEOUT`] (a
//! `/events` client that stopped reading) is cut off, so neither can hold a
//! descriptor or a client slot for ever.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until the task is dropped. `on_stall` runs
/// once for every connection cut off because its peer stopped reading.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    on_stall: Arc<dyn Fn() + Send + Sync>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                log::warn!("HTTP API: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let on_stall = on_stall.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(StallLimited::new(stream, WRITE_STALL_TIMEOUT));
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, service)
                .await;
            if let Err(e) = result {
                if is_stall(&e) {
                    on_stall();
                }
                log::debug!("HTTP API connection: {e}");
            }
        });
    }
}

fn is_stall(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
}

/// A TCP stream whose writes fail with `TimedOut` once the socket has not
/// accepted a byte for `limit`. The timer is polled with the write, so a
/// write stuck behind a full send buffer still wakes up to fail.
struct StallLimited {
    stream: TcpStream,
    limit: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl StallLimited {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        StallLimited {
            stream,
            limit,
            stalled_since: None,
        }
    }

    /// Turns a pending write into an error once the stall lasted `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let limit = self.limit;
        let deadline = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer took no data for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A peer that never reads: the writer fills both socket buffers, then
    /// fails with TimedOut after the limit instead of hanging.
    #[tokio::test]
    async fn write_to_a_peer_that_never_reads_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut w = StallLimited::new(stream, Duration::from_millis(300));
        let chunk = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never timed out"
            );
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
