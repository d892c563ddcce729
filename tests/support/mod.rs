//! Helpers shared by the black-box tests: an in-process router and a runtime on a real socket.
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use softprobe::state::{AppState, Settings};
use softprobe_pipeline::store::{SessionStore, StoreLimits};
use std::net::SocketAddr;
use tower::ServiceExt as _;

/// The HTTP API as a tower service, driven without sockets.
pub struct App {
    pub state: AppState,
    router: axum::Router,
}

impl App {
    pub fn new() -> Self {
        Self::with(StoreLimits::default(), Settings::default())
    }

    pub fn with(limits: StoreLimits, settings: Settings) -> Self {
        let state = AppState::new(SessionStore::new(limits), settings);
        let router = softprobe::serve::http_router(state.clone());
        Self { state, router }
    }

    /// Sends a request; returns status, content type and body bytes.
    pub async fn raw(&self, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, content_type, body)
    }

    /// Sends `method path` with an optional body (and extra headers); returns status and JSON.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (status, content_type, bytes) = self
            .raw(request.body(Body::from(body.to_owned())).expect("request"))
            .await;
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: content type {content_type:?}"
        );
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err})"));
        (status, json)
    }

    pub async fn call(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// Creates a session and returns its id.
    pub async fn session(&self, mode: &str) -> String {
        let (status, body) = self
            .call("POST", "/v1/sessions", &format!(r#"{{"mode":"{mode}"}}"#))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["sessionId"].as_str().expect("sessionId").to_owned()
    }
}

/// Asserts an error envelope with this status and code; returns the message.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: StatusCode, code: &str) -> String {
    let (actual, body) = response;
    assert_eq!(*actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// A runtime serving on loopback, stopped (and its captures flushed) when dropped or `stop`ped.
pub struct Runtime {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Starts `softprobe serve` in-process with these extra flags, on ephemeral ports.
    pub async fn start(extra: &[&str]) -> Self {
        let mut argv = vec![
            "softprobe",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        let softprobe::cli::Command::Serve(args) =
            <softprobe::cli::Cli as clap::Parser>::try_parse_from(argv)
                .expect("arguments")
                .command;
        let server = softprobe::serve::Server::bind(&args).await.expect("bind");
        let addr = server.http_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the runtime and waits for its shutdown work (capture flush) to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("runtime task");
        }
    }
}
