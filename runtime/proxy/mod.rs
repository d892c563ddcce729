//! `softprobe proxy`: a proxy-wasm host in the binary. It runs the same `.wasm` filter Envoy
//! runs, as a reverse proxy in front of an app (`--upstream`, ingress) or as a forward proxy
//! for an app's outbound calls (absolute-form requests, like `HTTP_PROXY`; egress).
//!
//! Streams are served as Envoy serves them: by workers (`worker.rs`), each a thread with its
//! own filter instance and keep-alive pools; one acceptor hands each connection to the next
//! worker in turn, and the connection's streams stay on it.

mod abi;
mod codes;
mod head;
mod host;
mod in_process;
mod pool;
mod uploads;
mod vm;
mod worker;

pub use in_process::InProcessRuntime;
pub use vm::LoadError;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use vm::{Filter, Vm};

/// Name prefix of the worker threads.
pub const WORKER_THREAD: &str = "proxy-worker";

/// Largest request or response body the proxy buffers, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Headers that describe one connection, not the message; never forwarded. Kept as names so
/// that finding them in a `HeaderMap` parses nothing.
static HOP_BY_HOP: [http::HeaderName; 8] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::CONTENT_LENGTH,
];

/// Whether a header name (any case) is hop-by-hop.
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop == name)
}

/// Workers when none are asked for: half the CPUs, at least one. The proxy shares its machine
/// with the app it fronts, the runtime and the test driving them; on two cores, a second worker
/// only competes with them (passthrough 0.32 of direct with two workers, 0.38 with one; nginx
/// showed the same). Istio starts its sidecars with two workers for the same reason.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| (cpus.get() / 2).max(1))
}

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
    /// Workers, each with its own filter instance; `None`: [`default_workers`].
    pub workers: Option<NonZeroUsize>,
    /// A runtime in this process: requests to its address are answered without a socket.
    pub runtime: Option<InProcessRuntime>,
}

/// Loaded filter instances behind a bound listener.
pub struct ProxyServer {
    vms: Vec<Vm>,
    upstream: Option<String>,
    runtime: Option<InProcessRuntime>,
    listener: tokio::net::TcpListener,
}

impl ProxyServer {
    /// Compiles the filter and configures one instance per worker, then binds.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        let filter = Filter::compile(
            &config.filter,
            config.configuration.as_bytes(),
            config.clusters,
        )?;
        let workers = config
            .workers
            .map_or_else(default_workers, NonZeroUsize::get);
        let vms = (0..workers)
            .map(|_| filter.instantiate())
            .collect::<Result<_, _>>()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?;
        let upstream = config.upstream.map(|u| u.trim_end_matches('/').to_owned());
        Ok(Self {
            vms,
            upstream,
            runtime: config.runtime,
            listener,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then lets every worker finish its requests in flight
    /// and its streams' HTTP calls (trace uploads) before returning.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let mode = match &self.upstream {
            Some(upstream) => format!("reverse proxy to {upstream}"),
            None => "forward proxy".to_owned(),
        };
        let workers = self.vms.len();
        tracing::info!(listen = %self.local_addr(), %mode, workers, "Proxy listening.");
        let mut handoffs = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for (index, vm) in self.vms.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (handoff, connections) = mpsc::unbounded_channel();
            let upstream = self.upstream.clone();
            let in_process = self.runtime.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{WORKER_THREAD}-{index}"))
                    .spawn(move || worker::run(runtime, vm, upstream, in_process, connections))?,
            );
            handoffs.push(handoff);
        }
        tokio::pin!(shutdown);
        for next in (0..workers).cycle() {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted.and_then(|(stream, _)| {
                // Answers are written whole; waiting for Nagle only adds latency.
                stream.set_nodelay(true)?;
                stream.into_std()
            }) {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(%err, "Proxy cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if handoffs[next].send(stream).is_err() {
                tracing::error!(worker = next, "Proxy worker is gone.");
            }
        }
        drop(self.listener);
        drop(handoffs);
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("A proxy worker panicked.");
                }
            }
        })
        .await
        .map_err(std::io::Error::other)?;
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
