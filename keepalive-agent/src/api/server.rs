//! The HTTP API's accept loop: hyper's HTTP/1 server with the two timeouts
//! `axum::serve` does not set. A connection that sends no complete request
//! head within [`HEADER_READ_TIMEOUT`] (idle keep-alive included) is closed,
//! and one whose peer has not taken a byte for [`WRITE_STALL_TIMEOUT`] (a
//! `/events` client that stopped reading) is cut off, so neither can hold a
//! descriptor or a client slot for ever. At most `max_connections` are
//! open at once: the descriptors beyond are the agent's own (namespaces,
//! iterators, links), and a client past the cap gets a 503 and a close,
//! counted. A failing accept (out of descriptors) backs off instead of
//! spinning, counted and logged once per streak. With a web
//! configuration's certificate the connection is TLS, its handshake bound
//! by [`HANDSHAKE_TIMEOUT`] and its failures counted.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};

use super::{metrics::agent::ReasonLabels, web::WebSecurity};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS client that has not finished its handshake by then is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server counts.
#[derive(Clone)]
pub struct ServerCounters {
    /// Connections cut off because their peer stopped reading.
    pub stalled: Counter,
    pub refused: Family<ReasonLabels, Counter>,
    pub accept_errors: Counter,
    /// TLS handshakes that failed or timed out (plain HTTP to the TLS
    /// port, a missing or untrusted client certificate).
    pub handshake_errors: Counter,
}

/// The reply to a connection past the cap: complete, so a client sees a
/// status rather than a reset.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\ntoo many connections, retry\n";

/// Serves `router` on `listener` until the task is dropped, as many
/// connections at a time as `slots` has (shared by the listeners: one
/// descriptor budget).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    slots: Arc<Semaphore>,
    counters: ServerCounters,
    web: WebSecurity,
) {
    // Refusals being written out: a few at a time (each holds a descriptor
    // for up to a quarter second); past that, a refused client is closed
    // at once.
    let refusals = Arc::new(Semaphore::new(16));
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                counters.accept_errors.inc();
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters
                .refused
                .get_or_create(&ReasonLabels {
                    reason: "connections",
                })
                .inc();
            // The answer at once, after what the request sent so far (a
            // close with unread data would reset the connection); a few
            // then wait a moment for the rest before closing.
            let mut request = [0u8; 4096];
            let _ = stream.try_read(&mut request);
            let _ = stream.try_write(TOO_MANY);
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(linger(stream, permit));
            }
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let counters = counters.clone();
        let security = web.current();
        tokio::spawn(async move {
            let _slot = slot;
            let io = StallLimited::new(stream, WRITE_STALL_TIMEOUT);
            let Some(tls) = &security.tls else {
                return connection(io, service, &counters).await;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(io)) => connection(io, service, &counters).await,
                Ok(Err(e)) => {
                    counters.handshake_errors.inc();
                    log::debug!("HTTP API TLS handshake: {e}");
                }
                Err(_) => {
                    counters.handshake_errors.inc();
                    log::debug!("HTTP API TLS handshake: no handshake in {HANDSHAKE_TIMEOUT:?}");
                }
            }
        });
    }
}

/// One connection's requests, plain or TLS.
async fn connection<I>(io: I, service: TowerToHyperService<axum::Router>, counters: &ServerCounters)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        if is_stall(&e) {
            counters.stalled.inc();
        }
        log::debug!("HTTP API connection: {e}");
    }
}

/// Closes a refused connection once its request is in (or after a
/// quarter second): closing with unread data sends a reset, which the
/// client may see before the answer.
async fn linger(mut stream: TcpStream, _permit: tokio::sync::OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = stream.shutdown().await;
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(250), stream.read(&mut rest)).await;
}

/// Waits between failing accepts: 10 ms doubling to 1 s, so that a node
/// out of descriptors is not made busier by a loop retrying at once.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn failed(&mut self, e: &io::Error) -> Duration {
        if self.failures == 0 {
            log::warn!("HTTP API: accepting connections fails ({e}); backing off");
        }
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            log::info!(
                "HTTP API: accepting connections again after {} failures",
                self.failures
            );
            self.failures = 0;
        }
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
