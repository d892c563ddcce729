//! One proxy worker, as in Envoy: a thread with its own event loop, its own filter instance and
//! its own keep-alive connection pools, serving the connections handed to it. Everything a
//! stream does happens on its worker's thread, so an HTTP call's answer wakes its stream
//! without crossing threads, and the locks below are never contended.
//!
//! The worker's state is `Send` (`Arc` and `Mutex` rather than `Rc` and `RefCell`) only so
//! its tasks can run on a plain current-thread runtime: under a `LocalSet`, every socket
//! wake-up also writes the runtime's eventfd.

use super::MAX_BODY_BYTES;
use super::head::Head;
use super::host::{Effect, Message, PendingCall};
use super::in_process::InProcessRuntime;
use super::pool::{self, Pool};
use super::uploads::{self, UploadKey, Uploads};
use super::vm::Vm;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

type Body = Full<Bytes>;

/// Runs a worker on this thread until `connections` closes, its connections are done and
/// every stream's HTTP calls are answered (so every stream's context has been deleted).
pub(super) fn run(
    runtime: tokio::runtime::Runtime,
    vm: Vm,
    upstream: Option<String>,
    in_process: Option<InProcessRuntime>,
    connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
) {
    let worker = Worker::new(vm, upstream, in_process);
    runtime.block_on(serve(Arc::new(worker), connections));
}

async fn serve(worker: Arc<Worker>, mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>) {
    // Dropping `stop` asks every connection to finish its request in flight and close.
    let (stop, stopping) = watch::channel(());
    let mut open = JoinSet::new();
    let mut sweep = tokio::time::interval(pool::IDLE_TIMEOUT / 2);
    loop {
        tokio::select! {
            accepted = connections.recv() => {
                let Some(stream) = accepted else { break };
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        open.spawn(connection(worker.clone(), stream, stopping.clone()));
                    }
                    Err(err) => tracing::debug!(%err, "Proxy worker cannot take a connection."),
                }
            }
            Some(_) = open.join_next(), if !open.is_empty() => {}
            _ = sweep.tick() => worker.pool.sweep(),
        }
    }
    drop(stop);
    while open.join_next().await.is_some() {}
    worker.calls_answered().await;
}

/// Serves one client connection (HTTP/1.1, keep-alive) until it closes or the worker stops.
async fn connection(worker: Arc<Worker>, stream: TcpStream, mut stopping: watch::Receiver<()>) {
    let service = service_fn(move |request| {
        let worker = worker.clone();
        async move { Ok::<_, Infallible>(worker.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%err, "Proxy connection ended.");
            }
            return;
        }
        _ = stopping.changed() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// One worker's state; it lives on the worker's thread only.
struct Worker {
    /// Never held across an await.
    vm: Mutex<Vm>,
    /// Streams held for the filter's decision, by context.
    waiters: Mutex<FxHashMap<u32, oneshot::Sender<Effect>>>,
    /// Trace uploads waiting for their target's export in flight (`uploads.rs`).
    uploads: Mutex<Uploads>,
    /// Keep-alive connections to the upstreams and to the filter's clusters.
    pool: Pool,
    /// The runtime in this process, reached without the pool.
    in_process: Option<InProcessRuntime>,
    /// Reverse-proxy target; `None` makes a forward proxy.
    upstream: Option<String>,
    calls_in_flight: AtomicUsize,
    /// Notified when the last call in flight is answered.
    idle: Notify,
}

/// A stream's context, ended when its handler is done or dropped (the client went away).
struct StreamGuard {
    worker: Arc<Worker>,
    context: u32,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.worker.waiters().remove(&self.context);
        // The context stays until its last HTTP call (a trace upload) is answered.
        self.worker.vm().end(self.context);
    }
}

impl Worker {
    fn new(vm: Vm, upstream: Option<String>, in_process: Option<InProcessRuntime>) -> Self {
        Self {
            vm: Mutex::new(vm),
            waiters: Mutex::default(),
            uploads: Mutex::default(),
            pool: Pool::default(),
            in_process,
            upstream,
            calls_in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    fn vm(&self) -> MutexGuard<'_, Vm> {
        self.vm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn waiters(&self) -> MutexGuard<'_, FxHashMap<u32, oneshot::Sender<Effect>>> {
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn uploads(&self) -> MutexGuard<'_, Uploads> {
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let (base, authority) = match self.target(&parts) {
            Some(target) => target,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "this is a forward proxy: send absolute-form http:// requests (set HTTP_PROXY), or start it with --upstream\n".into(),
                );
            }
        };
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(err) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body: {err}\n"),
                );
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let head = Head::request(parts.method.as_str(), path, authority, parts.headers);
        let (tx, mut decided) = oneshot::channel();
        let (stream, proceed) = {
            let mut vm = self.vm();
            let context = match vm.create_stream(head, body) {
                Ok(context) => context,
                Err(err) => {
                    return text(StatusCode::BAD_GATEWAY, format!("filter failed: {err}\n"));
                }
            };
            self.waiters().insert(context, tx);
            let proceed = vm.on_request(context).unwrap_or_else(|err| {
                tracing::error!(%err, "Filter trapped on a request; forwarding it.");
                true
            });
            let stream = StreamGuard {
                worker: self.clone(),
                context,
            };
            (stream, proceed)
        };
        self.settle();
        let decision = match decided.try_recv() {
            Ok(effect) => effect,
            Err(_) if proceed => Effect::Continue,
            // Held: wait for the filter to resume the request or answer it.
            Err(_) => decided.await.unwrap_or(Effect::Continue),
        };
        match decision {
            Effect::Local {
                status,
                headers,
                body,
            } => local_reply(status, headers, body),
            Effect::Continue => self.forward(stream.context, &base).await,
        }
    }

    /// Where the request goes: the reverse-proxy upstream, or the absolute-form target; with
    /// the authority the filter sees.
    fn target(&self, parts: &Parts) -> Option<(Cow<'_, str>, String)> {
        match (
            &self.upstream,
            parts.uri.scheme_str(),
            parts.uri.authority(),
        ) {
            (Some(upstream), _, _) => {
                let host = parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                Some((Cow::Borrowed(upstream), host.to_owned()))
            }
            (None, Some("http"), Some(authority)) => Some((
                Cow::Owned(format!("http://{authority}")),
                authority.to_string(),
            )),
            (None, _, _) => None,
        }
    }

    /// Sends the request (as the filter left it) upstream, runs the response callbacks,
    /// answers.
    async fn forward(self: &Arc<Self>, context: u32, base: &str) -> Response<Body> {
        // The filter may still read the request headers while the response passes: a copy.
        let forwarded = self.vm().take_request(context, |head, body| {
            forwarded(base, head, head.to_headers(), body.into())
        });
        let (request, origin) = match forwarded {
            Some(Ok(request)) => request,
            Some(Err(err)) => {
                return text(StatusCode::BAD_GATEWAY, format!("bad request: {err}\n"));
            }
            None => return text(StatusCode::BAD_GATEWAY, "the stream vanished\n".into()),
        };
        // The URL is only spelled out for an error.
        let path = request.uri().clone();
        let (parts, body) = match self.exchange(&origin, request).await {
            Ok(answer) => answer,
            Err(err) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "upstream http://{origin}{path}: {}\n",
                        crate::commands::error_chain(&*err)
                    ),
                );
            }
        };
        let (mut head, body) = {
            let mut vm = self.vm();
            let head = Head::response(parts.status, parts.headers);
            if let Err(err) = vm.on_response(context, head, Vec::from(body)) {
                tracing::error!(%err, "Filter trapped on a response; passing it on.");
            }
            vm.take_response(context).unwrap_or_default()
        };
        self.settle();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = parts.status;
        *response.headers_mut() = head.take_headers();
        response
    }

    /// One HTTP exchange, over the pools or into the runtime in this process: the answer's
    /// head and whole body.
    async fn exchange(
        &self,
        origin: &str,
        request: Request<Body>,
    ) -> Result<(http::response::Parts, Bytes), BoxError> {
        match &self.in_process {
            Some(runtime) if runtime.serves(origin) => runtime.exchange(request).await,
            _ => self.pool.exchange(origin, request).await,
        }
    }

    /// Routes the filter's decisions to their held streams and starts the HTTP calls it
    /// dispatched; runs after every callback.
    fn settle(self: &Arc<Self>) {
        let (decisions, calls) = {
            let mut vm = self.vm();
            (vm.take_decisions(), vm.take_calls())
        };
        if !decisions.is_empty() {
            let mut waiters = self.waiters();
            for (context, effect) in decisions {
                if let Some(waiter) = waiters.remove(&context) {
                    let _ = waiter.send(effect);
                }
            }
        }
        for call in calls {
            self.calls_in_flight.fetch_add(1, Ordering::Relaxed);
            match UploadKey::of(&call) {
                Some(key) => {
                    let now = self.uploads().enqueue(key.clone(), call);
                    if let Some(call) = now {
                        tokio::spawn(self.clone().export(key, vec![call]));
                    }
                }
                None => {
                    tokio::spawn(self.clone().call(call));
                }
            }
        }
    }

    /// Runs one filter HTTP call and hands its answer back to the filter.
    async fn call(self: Arc<Self>, mut call: PendingCall) {
        let answer = self.send(&mut call).await;
        self.answer(&call, answer);
    }

    /// Sends trace uploads to one target, a batch per export, until none is queued.
    async fn export(self: Arc<Self>, key: UploadKey, mut batch: Vec<PendingCall>) {
        loop {
            if let [call] = batch.as_mut_slice() {
                let answer = self.send(call).await;
                self.answer(call, answer);
            } else {
                let answer = self.send(&mut uploads::merge(&batch)).await;
                if uploads::refused_for_content(&answer) {
                    for call in &mut batch {
                        let answer = self.send(call).await;
                        self.answer(call, answer);
                    }
                } else {
                    for call in &batch {
                        self.answer(call, answer.clone());
                    }
                }
            }
            let next = self.uploads().next_batch(&key);
            match next {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// One filter HTTP call over the pools, within its timeout; `None` when it failed. The
    /// call's head moves into the request: a call is sent once (an upload refused as part of
    /// an export goes alone, but the export was built from copies).
    async fn send(&self, call: &mut PendingCall) -> Option<Message> {
        let mut head = std::mem::take(&mut call.head);
        let headers = head.take_headers();
        let (request, origin) = match forwarded(&call.base, &head, headers, call.body.clone()) {
            Ok(request) => request,
            Err(err) => {
                tracing::debug!(%err, "Filter HTTP call is not a valid request.");
                return None;
            }
        };
        let path = request.uri().clone();
        let url = || format!("http://{origin}{path}");
        // Boxed: an exchange is a future of about 2 KB, which each call's task would otherwise
        // hold inline and move whole as it is spawned (three copies per call).
        let exchange = Box::pin(self.exchange(&origin, request));
        match tokio::time::timeout(call.timeout, exchange).await {
            Ok(Ok((parts, body))) => {
                Some((Head::response(parts.status, parts.headers), Vec::from(body)))
            }
            Ok(Err(err)) => {
                let err = crate::commands::error_chain(&*err);
                tracing::debug!(url = url(), %err, "Filter HTTP call failed.");
                None
            }
            Err(_) => {
                tracing::debug!(url = url(), timeout = ?call.timeout, "Filter HTTP call timed out.");
                None
            }
        }
    }

    /// Hands a call's answer to the filter and acts on what it decides.
    fn answer(self: &Arc<Self>, call: &PendingCall, answer: Option<Message>) {
        if let Err(err) = self.vm().on_call_response(call, answer) {
            tracing::error!(%err, "Filter trapped on an HTTP call answer.");
        }
        self.settle();
        tracing::trace!(
            context = call.context,
            token = call.token,
            "HTTP call done."
        );
        if self.calls_in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no HTTP call is in flight.
    async fn calls_answered(&self) {
        loop {
            let idle = self.idle.notified();
            if self.calls_in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            idle.await;
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body, whole; none is read for a request that has none.
async fn read_body(body: Incoming) -> Result<Vec<u8>, BoxError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Vec::new());
    }
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await?
        .to_bytes();
    Ok(Vec::from(body))
}

/// A request as the filter left it (a stream's, or an HTTP call's) to `base`: `head`'s
/// pseudo-headers with `headers` (its headers to send on), `:authority` as `host`.
fn forwarded(
    base: &str,
    head: &Head,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(Request<Body>, String), BoxError> {
    let (mut request, origin) =
        request_to(base, head.pseudo(":method"), head.pseudo(":path"), body)?;
    let host = head
        .pseudo(":authority")
        .map(HeaderValue::try_from)
        .transpose()?;
    *request.headers_mut() = headers;
    match host {
        Some(host) => request.headers_mut().insert(http::header::HOST, host),
        None => request.headers_mut().remove(http::header::HOST),
    };
    Ok((request, origin))
}

/// A request without headers to `base` + `path` (GET and `/` when not given), filled in
/// place: `http`'s builder moves the whole request head at every header.
fn request_to(
    base: &str,
    method: Option<&str>,
    path: Option<&str>,
    body: Bytes,
) -> Result<(Request<Body>, String), BoxError> {
    let method = method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let (origin, prefix) = origin(base)?;
    let path = path.unwrap_or("/");
    let mut uri = String::with_capacity(prefix.len() + path.len());
    uri.push_str(prefix);
    uri.push_str(path);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = Uri::try_from(uri)?;
    Ok((request, origin))
}

/// `http://host[:port][/prefix]` as the origin to connect to (`host:port`, port 80 when none
/// is given) and the path prefix; the proxy speaks plain HTTP only.
fn origin(base: &str) -> Result<(String, &str), String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// targets are supported"))?;
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (!host.starts_with('[') || host.ends_with(']'))
    });
    match (authority, has_port) {
        ("", _) => Err(format!("{base}: no host")),
        (authority, true) => Ok((authority.to_owned(), prefix)),
        (authority, false) => Ok((format!("{authority}:80"), prefix)),
    }
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn local_reply(status: u16, headers: HeaderMap, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn targets_are_plain_http_origins_with_an_optional_path_prefix() {
        let ok = |base| origin(base).unwrap();
        assert_eq!(ok("http://app:8081"), ("app:8081".into(), ""));
        assert_eq!(ok("http://app"), ("app:80".into(), ""));
        assert_eq!(ok("http://app:8081/base"), ("app:8081".into(), "/base"));
        assert_eq!(ok("http://[::1]:9"), ("[::1]:9".into(), ""));
        assert_eq!(ok("http://[::1]"), ("[::1]:80".into(), ""));
        assert!(
            origin("https://app:443")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(origin("http:///x").unwrap_err().contains("no host"));
    }
}
