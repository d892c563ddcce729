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
use tokio::net::TcpStream;

use super::MAX_BODY_BYTES;

type Body = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per origin; more are closed when they come back.
const MAX_IDLE_PER_ORIGIN: usize = 64;

#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<String, Vec<SendRequest<Body>>>>,
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

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<SendRequest<Body>>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `origin` that is still open.
    fn checkout(&self, origin: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        let connections = idle.get_mut(origin)?;
        std::iter::from_fn(|| connections.pop()).find(|connection| !connection.is_closed())
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
            connections.push(connection);
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
