//! `softprobe serve`: binds the listeners, runs until SIGINT/SIGTERM, then flushes captures.

use crate::capture;
use crate::cli::ServeArgs;
use crate::proto::raw::inject_service_server::InjectServiceServer;
use crate::proto::raw::trace_service_server::TraceServiceServer;
use crate::state::{AppState, Settings};
use crate::{api, otlp, proto};
use axum::Router;
use axum::serve::ListenerExt as _;
use softprobe_pipeline::capture::CaptureLimits;
use softprobe_pipeline::store::{SessionStore, StoreLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error(
        "cannot listen on {addr}: {source} (is another process using it? pick another with --listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving HTTP failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// Serving gRPC failed.
    #[error("gRPC server error: {0}")]
    Grpc(String),
}

/// A bound, not yet running runtime.
pub struct Server {
    state: AppState,
    http: TcpListener,
    grpc: TcpListener,
    idle_timeout: Duration,
}

impl Server {
    /// Binds the listeners described by `args`.
    pub async fn bind(args: &ServeArgs) -> Result<Self, ServeError> {
        let store = SessionStore::new(StoreLimits {
            max_sessions: args.max_sessions,
            idle_timeout: args.session_idle_timeout,
            capture: CaptureLimits {
                max_spans: args.capture_max_spans,
                max_bytes: args.capture_max_bytes,
            },
        });
        let settings = Settings {
            api_token: args
                .api_token
                .clone()
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().to_owned()),
            capture_dir: args.capture_dir.clone(),
            capture_case_path: args.capture_case_path.clone(),
            max_body_bytes: args.max_body_bytes,
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        Ok(Self {
            state: AppState::new(store, settings),
            http: bind(args.listen).await?,
            grpc: bind(args.grpc_listen).await?,
            idle_timeout: args.session_idle_timeout,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then writes out open capture sessions.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let app = axum::ServiceExt::into_make_service(http_service(state.clone()));
        tracing::info!(
            http = %self.http.local_addr()?,
            grpc = %self.grpc.local_addr()?,
            auth = state.settings.api_token.is_some(),
            "Runtime listening."
        );
        // One signal stops both servers; each drains its in-flight requests.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let sweeper = tokio::spawn(sweep_idle_sessions(state.clone(), self.idle_timeout));
        // Inject answers are small and latency-bound: never let Nagle hold them back.
        let grpc_incoming = TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let grpc = grpc_server(state.clone())
            .serve_with_incoming_shutdown(grpc_incoming, wait(stopped.clone()));
        let http_listener = self.http.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let http = axum::serve(http_listener, app).with_graceful_shutdown(wait(stopped));
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (http, grpc, ()) = tokio::join!(http, grpc, signal);
        sweeper.abort();
        http?;
        grpc.map_err(|err| ServeError::Grpc(err.to_string()))?;
        let flushing = state.clone();
        let _ = tokio::task::spawn_blocking(move || capture::flush_all(&flushing)).await;
        tracing::info!("Runtime stopped.");
        Ok(())
    }
}

/// The complete HTTP service: control API plus the OTLP routes, sharing one store.
pub fn http_service(state: AppState) -> HttpService {
    HttpService {
        router: api::router(state.clone(), otlp::http_routes()),
        state,
    }
}

/// The HTTP API. `POST /v1/inject` and `POST /v1/traces` (every proxied hop, every export)
/// go straight to their handlers; the router's matching, extensions and boxed services were a
/// fifth of an inject's CPU. Everything else, and everything when a token is configured (auth
/// is a router layer), goes through the router, which serves the same two handlers.
#[derive(Clone)]
pub struct HttpService {
    router: Router,
    state: AppState,
}

impl tower::Service<axum::extract::Request> for HttpService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let open = self.state.settings.api_token.is_none();
        if open && request.method() == axum::http::Method::POST {
            let state = axum::extract::State(self.state.clone());
            match request.uri().path() {
                "/v1/inject" => {
                    return Box::pin(async { Ok(otlp::inject_http(state, request).await) });
                }
                "/v1/traces" => {
                    return Box::pin(async { Ok(otlp::traces_http(state, request).await) });
                }
                _ => {}
            }
        }
        Box::pin(tower::ServiceExt::oneshot(self.router.clone(), request))
    }
}

/// The gRPC server: OTLP `TraceService`, Softprobe's `InjectService` (both accept gzip) and
/// server reflection for both, so `grpcurl` needs no proto files.
fn grpc_server(state: AppState) -> tonic::transport::server::Router {
    let limit = state.settings.max_body_bytes;
    let services = otlp::GrpcServices::new(state);
    let traces = TraceServiceServer::new(services.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let inject = InjectServiceServer::new(services)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opentelemetry_proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| tracing::error!(%err, "gRPC reflection unavailable."))
        .ok();
    tonic::transport::Server::builder()
        .add_service(traces)
        .add_service(inject)
        .add_optional_service(reflection)
}

/// Checks for idle sessions a few times per timeout period (at most every 30 s).
async fn sweep_idle_sessions(state: AppState, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sweeping = state.clone();
        let _ = tokio::task::spawn_blocking(move || capture::expire_idle(&sweeping)).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("Shutdown requested.");
}
