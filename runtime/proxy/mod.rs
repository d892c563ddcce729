//! `softprobe proxy`: a proxy-wasm host in the binary. It runs the same `.wasm` filter Envoy
//! runs, as a reverse proxy in front of an app (`--upstream`, ingress) or as a forward proxy
//! for an app's outbound calls (absolute-form requests, like `HTTP_PROXY`; egress).
//!
//! One filter instance serves every stream, as one Envoy worker does; callbacks are
//! serialized by a mutex that is never held across an await.

mod abi;
mod codes;
mod host;
mod probe;
mod vm;

pub use vm::LoadError;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use host::{Effect, PendingCall};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vm::Vm;

/// Largest request or response body the proxy buffers, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Headers that describe one connection, not the message; never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// What `softprobe proxy` needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// The filter module.
    pub filter: PathBuf,
    /// The filter's plugin configuration (JSON).
    pub configuration: String,
    /// Reverse-proxy target; `None` makes a forward proxy.
    pub upstream: Option<String>,
    /// Cluster name → base URL, for the filter's HTTP calls.
    pub clusters: HashMap<String, String>,
}

struct Shared {
    vm: Mutex<Vm>,
    upstream: Option<String>,
    http: reqwest::Client,
    /// Streams waiting for a decision, by context id.
    waiters: Mutex<HashMap<u32, mpsc::UnboundedSender<Effect>>>,
}

type Proxy = Arc<Shared>;

impl Shared {
    fn vm(&self) -> std::sync::MutexGuard<'_, Vm> {
        self.vm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A loaded filter behind a bound listener.
pub struct ProxyServer {
    proxy: Proxy,
    listener: tokio::net::TcpListener,
}

impl ProxyServer {
    /// Loads and configures the filter, then binds.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        let vm = Vm::load(
            &config.filter,
            config.configuration.as_bytes(),
            config.clusters,
        )?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|err| ProxyError::Io(std::io::Error::other(err)))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?;
        let upstream = config.upstream.map(|u| u.trim_end_matches('/').to_owned());
        let proxy = Arc::new(Shared {
            vm: Mutex::new(vm),
            upstream,
            http,
            waiters: Mutex::default(),
        });
        Ok(Self { proxy, listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let mode = match &self.proxy.upstream {
            Some(upstream) => format!("reverse proxy to {upstream}"),
            None => "forward proxy".to_owned(),
        };
        tracing::info!(listen = %self.local_addr(), %mode, "Proxy listening.");
        let app = axum::Router::new().fallback(handle).with_state(self.proxy);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The filter could not be loaded or configured.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("proxy error: {0}")]
    Io(#[from] std::io::Error),
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    let t0 = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    // Where the request goes: the reverse-proxy upstream, or the absolute-form target.
    let (base, authority) = match (
        &proxy.upstream,
        parts.uri.scheme_str(),
        parts.uri.authority(),
    ) {
        (Some(upstream), _, _) => {
            let host = parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (upstream.clone(), host)
        }
        (None, Some("http"), Some(authority)) => {
            (format!("http://{authority}"), authority.to_string())
        }
        (None, _, _) => {
            return text(StatusCode::BAD_REQUEST, "this is a forward proxy: send absolute-form http:// requests (set HTTP_PROXY), or start it with --upstream\n".into());
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body.to_vec(),
        Err(err) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {err}\n"),
            );
        }
    };
    probe::record("a1 body read", t0);
    let t1 = std::time::Instant::now();
    let mut headers = vec![
        (":method".to_owned(), parts.method.as_str().to_owned()),
        (":path".to_owned(), path),
        (":authority".to_owned(), authority),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    for (name, value) in &parts.headers {
        if name != "host" && !HOP_BY_HOP.contains(&name.as_str()) {
            headers.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }

    let (sender, mut decisions) = mpsc::unbounded_channel();
    let (context, proceed, calls, effect) = {
        let mut vm = proxy.vm();
        let context = match vm.create_stream(headers, body) {
            Ok(context) => context,
            Err(err) => return text(StatusCode::BAD_GATEWAY, format!("filter failed: {err}\n")),
        };
        let proceed = vm.on_request(context).unwrap_or_else(|err| {
            tracing::error!(%err, "Filter trapped on a request; forwarding it.");
            true
        });
        (context, proceed, vm.take_calls(), vm.take_effect(context))
    };
    probe::record("a2 lock+on_request", t1);
    proxy
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(context, sender);
    run_calls(&proxy, calls);

    let decision = match effect {
        Some(effect) => effect,
        None if proceed => Effect::Continue,
        // Held: wait for the filter to resume the request or answer it.
        None => {
            let e = decisions.recv().await.unwrap_or(Effect::Continue);
            probe::since_mark("b6 effect->handler");
            e
        }
    };
    let t3 = std::time::Instant::now();
    let response = match decision {
        Effect::Local {
            status,
            headers,
            body,
        } => local_reply(status, &headers, body),
        Effect::Continue => forward(&proxy, context, &base).await,
    };
    proxy
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&context);
    finish_later(proxy, context);
    probe::record("c reply built", t3);
    probe::record("total", t0);
    response
}

fn local_reply(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    copy_headers(headers, response.headers_mut());
    response
}

fn copy_headers(pairs: &[(String, String)], into: &mut axum::http::HeaderMap) {
    for (name, value) in pairs {
        if name.starts_with(':') || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            into.append(name, value);
        }
    }
}

/// Sends the request (as the filter left it) upstream, runs the response callbacks, answers.
async fn forward(proxy: &Proxy, context: u32, base: &str) -> Response {
    let Some((headers, body)) = proxy.vm().request(context) else {
        return text(StatusCode::BAD_GATEWAY, "the stream vanished\n".into());
    };
    let (request, url) = outgoing(&proxy.http, base, &headers, body);
    let upstream = match request.send().await {
        Ok(upstream) => upstream,
        Err(err) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("upstream {url}: {}\n", crate::commands::error_chain(&err)),
            );
        }
    };
    let status = upstream.status();
    let response_headers = incoming_headers(&upstream);
    let body = match upstream.bytes().await {
        Ok(body) => body.to_vec(),
        Err(err) => return text(StatusCode::BAD_GATEWAY, format!("upstream {url}: {err}\n")),
    };
    let (headers, calls) = {
        let mut vm = proxy.vm();
        if let Err(err) = vm.on_response(context, response_headers, body.clone()) {
            tracing::error!(%err, "Filter trapped on a response; passing it on.");
        }
        (vm.response_headers(context), vm.take_calls())
    };
    run_calls(proxy, calls);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    copy_headers(&headers, response.headers_mut());
    response
}

/// Runs the filter's HTTP calls; each answer goes back into the filter, and any decision it
/// produces reaches the waiting stream.
fn run_calls(proxy: &Proxy, calls: Vec<PendingCall>) {
    for call in calls {
        let proxy = proxy.clone();
        let spawned = std::time::Instant::now();
        tokio::spawn(async move {
            probe::record("b1 spawn->task", spawned);
            let answer = send_call(&proxy, &call).await;
            let t5 = std::time::Instant::now();
            let (effects, more) = {
                let mut vm = proxy.vm();
                probe::record("b4a vm lock wait", t5);
                let t6 = std::time::Instant::now();
                if let Err(err) = vm.on_call_response(call.token, answer) {
                    tracing::error!(%err, "Filter trapped on an HTTP call answer.");
                }
                let effects: Vec<(u32, Effect)> = vm
                    .streams_with_effects()
                    .into_iter()
                    .filter_map(|context| vm.take_effect(context).map(|effect| (context, effect)))
                    .collect();
                probe::record("b4b on_call_resp+scan", t6);
                (effects, vm.take_calls())
            };
            let t7 = std::time::Instant::now();
            let waiters = proxy
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            probe::record("b5 waiters clone", t7);
            for (context, effect) in effects {
                if let Some(waiter) = waiters.get(&context) {
                    probe::mark();
                    let _ = waiter.send(effect);
                }
            }
            run_calls(&proxy, more);
            tracing::trace!(
                context = call.context,
                token = call.token,
                "HTTP call done."
            );
        });
    }
}

/// Performs one filter HTTP call; `None` when it failed or timed out.
async fn send_call(proxy: &Proxy, call: &PendingCall) -> Option<host::Message> {
    let base = proxy.vm().resolve(&call.upstream)?;
    let (request, url) = outgoing(&proxy.http, &base, &call.headers, call.body.clone());
    let request = request.timeout(call.timeout);
    let t = std::time::Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(%url, err = %crate::commands::error_chain(&err), "Filter HTTP call failed.");
            return None;
        }
    };
    probe::record("b2 call send->headers", t);
    let t = std::time::Instant::now();
    let headers = incoming_headers(&response);
    let body = response.bytes().await.ok()?.to_vec();
    probe::record("b3 call body", t);
    Some((headers, body))
}

/// An HTTP request from proxy-wasm pseudo-headers and headers: method, `base` + `:path`,
/// `:authority` as `host`, the rest minus hop-by-hop headers. Returns it with its URL.
fn outgoing(
    http: &reqwest::Client,
    base: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (reqwest::RequestBuilder, String) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let method = header(":method")
        .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(reqwest::Method::GET);
    let url = format!("{base}{}", header(":path").unwrap_or("/"));
    let mut request = http.request(method, &url).body(body);
    if let Some(authority) = header(":authority") {
        request = request.header("host", authority);
    }
    for (name, value) in headers {
        if !name.starts_with(':') && !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    (request, url)
}

/// A response's status and headers as proxy-wasm header pairs (`:status` first).
fn incoming_headers(response: &reqwest::Response) -> host::Headers {
    let mut headers = vec![(":status".to_owned(), response.status().as_u16().to_string())];
    for (name, value) in response.headers() {
        headers.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    headers
}

/// Deletes the stream's context once its uploads had time to finish (their answers need the
/// context in the filter's table).
fn finish_later(proxy: Proxy, context: u32) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        proxy.vm().finish(context);
    });
}
