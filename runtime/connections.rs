//! Serving connections, the same way on every listener: a shared connection limit, a header
//! read timeout, an idle timeout, and a drain on shutdown that the caller bounds with its
//! deadline. HTTP/1.1 and HTTP/2 (h2c, which gRPC uses) are told apart per connection.

use crate::metrics::Metrics;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Accepts connections until `stop` turns true, serving each with `service` on the next of
/// `workers`. Returns the connections still being served: they have been told to finish their
/// in-flight requests and close; the caller waits for them as long as its shutdown deadline
/// allows.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    budget: ConnectionBudget,
    workers: Arc<Workers>,
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
        // The socket moves to the worker's own event loop.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%err, "Accepted connection cannot be handed to a worker.");
                continue;
            }
        };
        let (service, limits, stop) = (service.clone(), budget.limits, stop.clone());
        let open = Open::new(permit, budget.metrics.clone());
        connections.spawn_on(
            async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve_connection(stream, service, limits, stop, open).await,
                    Err(err) => tracing::debug!(%err, "A worker cannot take a connection."),
                }
            },
            workers.next(),
        );
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

/// Name prefix of the threads that serve connections.
pub const WORKER_THREAD: &str = "runtime-worker";

/// Workers when none are asked for: one per CPU.
pub fn default_workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Threads that serve connections, each with its own current-thread event loop, as Envoy's
/// workers (and the proxy's) do: a connection and everything its requests do stay on one
/// thread. On a shared multi-thread runtime, every request with a body woke a second thread
/// for nothing: hyper's body channel wakes the connection's own task as the handler reads the
/// body, and tokio answers a task woken while it runs by waking an idle worker to steal it.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
    /// Dropped to stop the workers; nothing is ever sent.
    stop: Mutex<Option<watch::Sender<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` workers; they stop when [`Workers::stop`] is called or this is dropped.
    pub fn start(count: NonZeroUsize) -> std::io::Result<Self> {
        let (stop, stopped) = watch::channel(());
        let mut handles = Vec::with_capacity(count.get());
        let mut threads = Vec::with_capacity(count.get());
        for index in 0..count.get() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let run = async move { while stopped.changed().await.is_ok() {} };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{WORKER_THREAD}-{index}"))
                    // Dropping the runtime drops whatever its tasks were still doing.
                    .spawn(move || runtime.block_on(run))?,
            );
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            stop: Mutex::new(Some(stop)),
            threads: Mutex::new(threads),
        })
    }

    /// The worker for the next connection, in turn.
    fn next(&self) -> &tokio::runtime::Handle {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[next % self.handles.len()]
    }

    /// Stops every worker and waits until it has: no request runs on them afterwards, and the
    /// connections still open are closed.
    pub async fn stop(&self) {
        drop(lock(&self.stop).take());
        let threads = std::mem::take(&mut *lock(&self.threads));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("A runtime worker panicked.");
                }
            }
        })
        .await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The body of a one-request connection's answer.
    async fn answer_on_new_connection(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        body.to_owned()
    }

    #[tokio::test]
    async fn connections_are_served_by_the_workers_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = ConnectionBudget::new(ConnectionLimits::default(), Arc::default());
        let workers = Arc::new(Workers::start(NonZeroUsize::new(2).unwrap()).unwrap());
        // Answers with the name of the thread the request's handler runs on.
        let service = tower::service_fn(|_: hyper::Request<Incoming>| async {
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(thread),
            )))
        });
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(serve(listener, service, budget, workers.clone(), stopped));
        let mut threads = Vec::new();
        for _ in 0..3 {
            threads.push(answer_on_new_connection(addr).await);
        }
        assert_eq!(
            threads,
            ["runtime-worker-0", "runtime-worker-1", "runtime-worker-0"]
        );
        stop.send(true).unwrap();
        let mut open = serving.await.unwrap();
        while open.join_next().await.is_some() {}
        workers.stop().await;
    }
}
