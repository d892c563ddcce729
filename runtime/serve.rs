//! `softprobe serve`: binds the listeners, builds the HTTP and gRPC stacks, runs until
//! SIGINT/SIGTERM, then writes open captures and drains within the shutdown deadline.

use crate::auth::{self, Token};
use crate::capture;
use crate::cli::ServeArgs;
use crate::connections::{self, ConnectionBudget, ConnectionLimits, Workers};
use crate::inflight::{CountedBody, InflightBytesLayer};
use crate::proto::raw::inject_service_server::InjectServiceServer;
use crate::proto::raw::trace_service_server::TraceServiceServer;
use crate::redis_store::{RedisStore, StoreUrl};
use crate::state::{AppState, Settings};
use crate::store::Store;
use crate::{api, otlp, proto, routes};
use axum::Router;
use softprobe_pipeline::capture::CaptureLimits;
use softprobe_pipeline::case_file::CasePaths;
use softprobe_pipeline::store::{SessionStore, StoreLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tower::ServiceBuilder;
use tower::util::{BoxCloneSyncService, Either};
use tower_http::trace::TraceLayer;
use tracing::level_filters::LevelFilter;

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
    /// The --store could not be reached.
    #[error("cannot reach the session store at --store: {0}")]
    Store(String),
}

/// A bound, not yet running runtime.
pub struct Server {
    state: AppState,
    http: TcpListener,
    grpc: TcpListener,
    idle_timeout: Duration,
    limits: ConnectionLimits,
    workers: NonZeroUsize,
    shutdown_timeout: Duration,
}

impl Server {
    /// Binds the listeners described by `args`.
    pub async fn bind(args: &ServeArgs) -> Result<Self, ServeError> {
        let limits = StoreLimits {
            max_sessions: args.max_sessions,
            idle_timeout: args.session_idle_timeout,
            capture: CaptureLimits {
                max_spans: args.capture_max_spans,
                max_bytes: args.capture_max_bytes,
            },
            max_capture_bytes_total: args.max_capture_bytes_total,
            max_document_bytes_total: args.max_document_bytes_total,
        };
        let store = match &args.store {
            StoreUrl::Memory => Store::memory(SessionStore::new(limits)),
            url => {
                let redis = RedisStore::connect(url, &limits, args.store_case_ttl)
                    .await
                    .map_err(ServeError::Store)?;
                Store::shared(SessionStore::new(limits), redis)
            }
        };
        let settings = Settings {
            api_token: Token::from_setting(args.api_token.as_deref()),
            case_paths: CasePaths {
                capture_dir: args.capture_dir.clone(),
                template: args.capture_case_path.clone(),
                out_anywhere: args.capture_out_anywhere,
            },
            max_body_bytes: args.max_body_bytes,
            max_inflight_bytes: args.max_inflight_bytes,
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
            limits: ConnectionLimits {
                max_connections: args.max_connections,
                header_read_timeout: args.header_read_timeout,
                idle_timeout: args.idle_connection_timeout,
            },
            workers: args.workers.unwrap_or_else(connections::default_workers),
            shutdown_timeout: args.shutdown_timeout,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The HTTP stack of this runtime as a service, for callers in the same process
    /// (`softprobe proxy --serve-runtime`): the same layers and routes as the listener.
    pub fn http_service(&self) -> HttpService {
        http_service(self.state.clone())
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then stops within the shutdown deadline: it stops
    /// accepting, writes every open capture, lets in-flight requests finish in the time left,
    /// and closes what is still open.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        tracing::info!(
            http = %self.http.local_addr()?,
            grpc = %self.grpc.local_addr()?,
            auth = state.settings.api_token.is_some(),
            workers = self.workers,
            "Runtime listening."
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let budget = ConnectionBudget::new(self.limits, state.metrics.clone());
        let workers = Arc::new(Workers::start(self.workers)?);
        let http = tokio::spawn(connections::serve(
            self.http,
            http_stack::<hyper::body::Incoming>(state.clone()),
            budget.clone(),
            workers.clone(),
            stopped.clone(),
        ));
        let grpc = tokio::spawn(connections::serve(
            self.grpc,
            grpc_service(state.clone()),
            budget,
            workers.clone(),
            stopped,
        ));
        let sweeper = tokio::spawn(sweep_idle_sessions(state.clone(), self.idle_timeout));

        shutdown.await;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let _ = stop.send(true);
        sweeper.abort();
        // Captures first: whatever happens to the requests still in flight, an orchestrator's
        // SIGKILL after the deadline finds every case written. Exports that arrive from now on
        // are refused in their answers, not lost.
        flush_captures(&state).await;
        let mut open = tokio::task::JoinSet::new();
        for listener in [http, grpc] {
            let mut connections = listener
                .await
                .map_err(|err| ServeError::Io(std::io::Error::other(err)))?;
            open.spawn(async move { while connections.join_next().await.is_some() {} });
        }
        let drained = tokio::time::timeout_at(deadline, async {
            while open.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "Shutdown deadline reached; closing connections with requests still in flight."
            );
            open.abort_all();
        }
        // Whatever is still open is dropped with its worker.
        workers.stop().await;
        // A capture session created by a request that was still in flight above.
        flush_captures(&state).await;
        // This replica's inject counts not yet in Redis.
        if let Some(redis) = state.store.redis() {
            redis.flush().await;
        }
        tracing::info!("Runtime stopped.");
        Ok(())
    }
}

async fn flush_captures(state: &AppState) {
    let flushing = state.clone();
    let _ = tokio::task::spawn_blocking(move || capture::flush_all(&flushing)).await;
}

/// The HTTP stack, as a service of axum requests (tests drive it without a socket).
pub type HttpService =
    BoxCloneSyncService<axum::extract::Request, axum::response::Response, std::convert::Infallible>;

/// The HTTP stack every request on `--listen` passes through, over axum's request bodies.
pub fn http_service(state: AppState) -> HttpService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(|response: http::Response<_>| response.map(axum::body::Body::new))
            .service(http_stack(state)),
    )
}

/// The HTTP stack every request on `--listen` passes through, outermost first (tracing wraps
/// it at debug level: [`when_debug_traced`]), over any request body: hyper's on the listener,
/// without boxing the service, its future or the body more than once; axum's in tests.
fn http_stack<B>(
    state: AppState,
) -> impl tower::Service<
    http::Request<B>,
    Response = http::Response<
        impl http_body::Body<Data = bytes::Bytes, Error = axum::Error> + Send,
    >,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static
where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Unpin + Send + 'static,
{
    let token = state.settings.api_token.clone();
    let stack = ServiceBuilder::new()
        // auth: the bearer token on every `/v1/` route, the OTLP ones included, checked before
        // routing so an unauthenticated client learns nothing about routes or sessions
        .option_layer(auth::layer::<auth::Http>(token.as_ref()))
        // memory: request body bytes held against the in-flight budget until the answer
        .layer(InflightBytesLayer::new(state.inflight.clone()))
        // the one box of the request body, as axum's body type
        .map_request(|request: http::Request<CountedBody<B>>| request.map(axum::body::Body::new))
        // routes: the two OTLP hot paths straight to their handlers, the rest through the router
        .service(Routes {
            router: api::router(state.clone(), otlp::http_routes()),
            state,
        });
    when_debug_traced(stack, |stack| {
        ServiceBuilder::new()
            .map_response(|response: http::Response<_>| response.map(axum::body::Body::new))
            .layer(TraceLayer::new_for_http())
            .service(stack)
    })
}

/// The outermost layer of both stacks: tracing, a debug-level span per request (method, URI,
/// status, latency), only when the log level lets debug through. With its output filtered
/// away the layer still cost about 5 % of an inject hit's server CPU (paired bench runs), and
/// the runtime sets its log level once, at start.
fn when_debug_traced<S, T>(stack: S, traced: impl FnOnce(S) -> T) -> Either<T, S> {
    if LevelFilter::current() >= LevelFilter::DEBUG {
        Either::Left(traced(stack))
    } else {
        Either::Right(stack)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The routes of the HTTP listener. `POST /v1/inject` and `POST /v1/traces` (every proxied
/// hop, every export) go straight to their handlers; the router's matching, extensions and
/// boxed services were a fifth of an inject's CPU. Everything else goes through the router,
/// which serves the same two handlers.
#[derive(Clone)]
struct Routes {
    router: Router,
    state: AppState,
}

impl tower::Service<axum::extract::Request> for Routes {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        if request.method() == axum::http::Method::POST {
            let state = axum::extract::State(self.state.clone());
            match request.uri().path() {
                routes::INJECT => {
                    return Box::pin(async { Ok(otlp::inject_http(state, request).await) });
                }
                routes::TRACES => {
                    return Box::pin(async { Ok(otlp::traces_http(state, request).await) });
                }
                _ => {}
            }
        }
        Box::pin(tower::ServiceExt::oneshot(self.router.clone(), request))
    }
}

/// The gRPC stack on `--grpc-listen`, outermost first: OTLP `TraceService`, Softprobe's
/// `InjectService` (both accept gzip) and server reflection for both, so `grpcurl` needs no
/// proto files.
fn grpc_service(
    state: AppState,
) -> impl tower::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    let token = state.settings.api_token.clone();
    let limit = state.settings.max_body_bytes;
    let inflight = state.inflight.clone();
    let services = otlp::GrpcServices::new(state);
    let traces = TraceServiceServer::new(services.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let inject = InjectServiceServer::new(services)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let mut routes = tonic::service::Routes::new(traces).add_service(inject);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opentelemetry_proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => routes = routes.add_service(reflection),
        Err(err) => tracing::error!(%err, "gRPC reflection unavailable."),
    }
    let stack = ServiceBuilder::new()
        // auth: the same bearer token as HTTP, as gRPC statuses; reflection stays open
        .option_layer(auth::layer::<auth::Grpc>(token.as_ref()))
        // memory: request body bytes held against the in-flight budget until the answer
        .layer(InflightBytesLayer::new(inflight))
        .service(routes.prepare());
    // tracing, at debug: a span per call, with its gRPC status
    when_debug_traced(stack, |stack| {
        ServiceBuilder::new()
            .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
            .layer(TraceLayer::new_for_grpc())
            .service(stack)
    })
}

/// Checks for idle sessions a few times per timeout period (at most every 30 s).
async fn sweep_idle_sessions(state: AppState, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        capture::expire_idle(&state).await;
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
