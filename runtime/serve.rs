//! `softprobe serve`: binds the listeners, runs until SIGINT/SIGTERM, then flushes captures.

use crate::api;
use crate::capture;
use crate::cli::ServeArgs;
use crate::state::{AppState, Settings};
use axum::Router;
use softprobe_pipeline::capture::CaptureLimits;
use softprobe_pipeline::store::{SessionStore, StoreLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

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
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running runtime.
pub struct Server {
    state: AppState,
    http: TcpListener,
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
        let http = TcpListener::bind(args.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: args.listen,
                source,
            })?;
        Ok(Self {
            state: AppState::new(store, settings),
            http,
            idle_timeout: args.session_idle_timeout,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then writes out open capture sessions.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let app = http_router(state.clone());
        tracing::info!(
            http = %self.http.local_addr()?,
            auth = state.settings.api_token.is_some(),
            "Runtime listening."
        );
        let sweeper = tokio::spawn(sweep_idle_sessions(state.clone(), self.idle_timeout));
        axum::serve(self.http, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        sweeper.abort();
        let flushing = state.clone();
        let _ = tokio::task::spawn_blocking(move || capture::flush_all(&flushing)).await;
        tracing::info!("Runtime stopped.");
        Ok(())
    }
}

/// The complete HTTP router: control API plus the OTLP routes, sharing one store.
pub fn http_router(state: AppState) -> Router {
    api::router(state, Router::new())
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
