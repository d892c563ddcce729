//! One worker's keep-alive HTTP/1.1 connections, per origin (`host:port`), for the upstreams
//! and the filter's clusters. hyper's own connections, without hyper-util's pooled client: that
//! client spawns a task per request to watch the connection come back, keys its pool by URI
//! parts and converts every URI to origin form, which cost the proxy about 8 % of its CPU on a
//! passthrough hop. Everything here runs on the worker's thread, so the lock is never contended.

use bytes::Bytes;
use http::Request;
use http::response::Parts;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use super::MAX_BODY_BYTES;

type Body = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per origin; more are closed when they come back.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// An idle connection is closed after this long unused.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections per origin, each with the time it came back.
type Idle = HashMap<String, Vec<(SendRequest<Body>, Instant)>>;

#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<Idle>,
}

impl Pool {
    /// Sends `request` (origin-form URI, `host` set) to `origin` and reads the whole answer
    /// (bodies up to [`MAX_BODY_BYTES`]). A request an idle connection closed before writing
    /// goes again, once, on a new connection.
    pub(super) async fn exchange(
        &self,
        origin: &str,
        request: Request<Body>,
    ) -> Result<(Parts, Bytes), BoxError> {
        let idle = match self.checkout(origin) {
            // Back in the pool as soon as its answer was read; its task may not have seen
            // the end of that answer yet.
            Some(mut connection) => connection.ready().await.is_ok().then_some(connection),
            None => None,
        };
        let (mut connection, reused) = match idle {
            Some(connection) => (connection, true),
            None => (connect(origin).await?, false),
        };
        let response = match connection.try_send_request(request).await {
            Ok(response) => response,
            Err(mut err) => match err.take_message() {
                Some(request) if reused => {
                    connection = connect(origin).await?;
                    connection.send_request(request).await?
                }
                _ => return Err(err.into_error().into()),
            },
        };
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await?
            .to_bytes();
        self.give_back(origin, connection);
        Ok((parts, body))
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`]; the worker calls it
    /// periodically.
    pub(super) fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.idle().retain(|_, connections| {
            connections.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
            !connections.is_empty()
        });
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `origin` that is still open.
    fn checkout(&self, origin: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        let connections = idle.get_mut(origin)?;
        std::iter::from_fn(|| connections.pop())
            .map(|(connection, _)| connection)
            .find(|connection| !connection.is_closed())
    }

    fn give_back(&self, origin: &str, connection: SendRequest<Body>) {
        if connection.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let connections = match idle.get_mut(origin) {
            Some(connections) => connections,
            None => idle.entry(origin.to_owned()).or_default(),
        };
        if connections.len() < MAX_IDLE_PER_ORIGIN {
            connections.push((connection, Instant::now()));
        }
    }
}

/// A new connection to `origin`, driven by its own task until either side closes it.
async fn connect(origin: &str) -> Result<SendRequest<Body>, BoxError> {
    let stream = TcpStream::connect(origin).await?;
    // Requests and answers are small and written whole: never wait for Nagle.
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "Proxy connection to an upstream ended.");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Answers every request on a connection with a fixed 200 (and with `one_each`, closes the
    /// connection after its first answer, without saying so); reports when a connection closes.
    async fn upstream(one_each: bool) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap().to_string();
        let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() || one_each {
                            break;
                        }
                    }
                    let _ = closed.send(());
                });
            }
        });
        (origin, closes)
    }

    fn get(origin: &str) -> Request<Body> {
        Request::get("/")
            .header("host", origin)
            .body(Body::default())
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_are_reused_and_closed_after_the_idle_timeout() {
        let (origin, mut closes) = upstream(false).await;
        let pool = Pool::default();
        for _ in 0..3 {
            let (parts, body) = pool.exchange(&origin, get(&origin)).await.unwrap();
            assert_eq!((parts.status.as_u16(), body.as_ref()), (200, &b"ok"[..]));
        }
        assert_eq!(
            pool.idle()[&origin].len(),
            1,
            "one connection served all three"
        );
        pool.sweep_at(Instant::now() + IDLE_TIMEOUT / 2);
        assert_eq!(pool.idle()[&origin].len(), 1, "not idle long enough");
        pool.sweep_at(Instant::now() + IDLE_TIMEOUT);
        assert!(pool.idle().is_empty());
        closes
            .recv()
            .await
            .expect("the upstream saw the connection close");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        let (origin, mut closes) = upstream(true).await;
        let pool = Pool::default();
        for round in 0..5 {
            let (parts, _) = pool.exchange(&origin, get(&origin)).await.unwrap();
            assert_eq!(parts.status.as_u16(), 200, "round {round}");
            closes.recv().await.unwrap();
        }
    }
}
