//! Serving connections, the same way on every listener: a shared connection limit, a header
//! read timeout, an idle timeout, and a drain on shutdown that the caller bounds with its
//! deadline. HTTP/1.1 and HTTP/2 (h2c, which gRPC uses) are told apart per connection.

use crate::metrics::Metrics;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// Limits every listener applies to its connections; each is a documented flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections across all listeners; more are accepted and closed at once, so the
    /// process keeps file descriptors for case files and the listeners never spin on EMFILE.
    pub max_connections: usize,
    /// Time to receive a request's headers. For HTTP/1.1 this also bounds how long a
    /// keep-alive connection may wait for its next request.
    pub header_read_timeout: Duration,
    /// A connection that moves no byte for this long is asked to close (after its in-flight
    /// requests); one still silent after twice as long is dropped (a stalled half-sent body).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The connection budget shared by all listeners of one process.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
}

impl ConnectionBudget {
    /// A budget for these limits, counted in `metrics`.
    pub fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
        }
    }
}

/// Accepts connections until `stop` turns true, serving each with `service`. Returns the
/// connections still being served: they have been told to finish their in-flight requests and
/// close; the caller waits for them as long as its shutdown deadline allows.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    budget: ConnectionBudget,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()>
where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(%err, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = budget.permits.clone().try_acquire_owned() else {
            budget.metrics.connection_refused();
            tracing::debug!(
                limit = budget.limits.max_connections,
                "Connection limit reached; connection closed."
            );
            continue;
        };
        // Inject answers are small and latency-bound: never let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            service.clone(),
            budget.limits,
            stop.clone(),
            Open::new(permit, budget.metrics.clone()),
        ));
    }
    connections
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _open: Open,
) where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let io = Metered::new(stream);
    let activity = io.activity.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let check = (limits.idle_timeout / 4).max(Duration::from_millis(10));
    let mut closing = false;
    let mut idle = Duration::ZERO;
    loop {
        tokio::select! {
            // The connection first: it is the branch woken on every request.
            biased;
            _ = connection.as_mut() => return,
            _ = stop.wait_for(|stop| *stop), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(check) => {
                idle = if activity.moved_since_last_look() { Duration::ZERO } else { idle + check };
                if idle >= limits.idle_timeout * 2 {
                    return; // dropping the connection closes the socket
                }
                if idle >= limits.idle_timeout && !closing {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A connection's place in the budget, given back (and uncounted) when it closes.
struct Open {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Open {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened(1);
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.connection_opened(-1);
    }
}

/// Whether a connection moved a byte since the idle watch last looked. A flag, not a
/// timestamp: reads and writes only set it, so they never read the clock.
#[derive(Debug, Default)]
struct Activity {
    moved: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    fn moved_since_last_look(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

/// A TCP stream that marks when it reads or writes.
struct Metered {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Metered {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            activity: Arc::default(),
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
