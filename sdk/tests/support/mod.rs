//! A real runtime on loopback for the SDK's tests, and the OTLP requests a proxy would send.
#![allow(dead_code, unreachable_pub)]

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `softprobe serve` in-process on ephemeral ports, stopped when dropped.
pub struct Runtime {
    pub addr: SocketAddr,
    /// Capture directory, so no test writes into the working tree.
    _captures: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Runtime {
    /// Starts the runtime with these extra `serve` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let captures = tempfile::tempdir().expect("temporary directory");
        let capture_dir = captures.path().to_str().expect("UTF-8 path").to_owned();
        let mut argv = vec![
            "softprobe",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--capture-dir",
            &capture_dir,
        ];
        argv.extend_from_slice(extra);
        let softprobe::cli::Command::Serve(args) =
            <softprobe::cli::Cli as clap::Parser>::try_parse_from(argv)
                .expect("serve arguments")
                .command
        else {
            unreachable!("the arguments name serve")
        };
        let server = softprobe::serve::Server::bind(&args).await.expect("bind");
        let addr = server.http_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            _captures: captures,
            _stop: stop,
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the egress proxy asks about one outbound call (`POST /v1/inject`, OTLP JSON):
    /// the status and the attributes of the answer span (empty on a miss).
    pub async fn hop(&self, session: &str, method: &str, host: &str, path: &str) -> (u16, Value) {
        let attribute =
            |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
        let request = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "hop", "attributes": [
            attribute("sp.span.type", "inject"),
            attribute("sp.session.id", session),
            attribute("sp.traffic.direction", "outbound"),
            attribute("http.request.method", method),
            attribute("url.host", host),
            attribute("url.path", path),
        ]}]}]}]});
        let response = reqwest::Client::new()
            .post(format!("{}/v1/inject", self.url()))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(request.to_string())
            .send()
            .await
            .expect("POST /v1/inject");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON answer");
        let mut attributes = serde_json::Map::new();
        for kv in body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let value = &kv["value"];
            let value = value
                .get("stringValue")
                .or_else(|| value.get("intValue"))
                .cloned()
                .unwrap_or_default();
            attributes.insert(kv["key"].as_str().unwrap_or_default().to_owned(), value);
        }
        (status, Value::Object(attributes))
    }

    /// Uploads one recorded exchange for `session` (`POST /v1/traces`, OTLP JSON), as the
    /// egress proxy does after a forwarded call.
    pub async fn upload(&self, session: &str, path: &str, status: i64, body: &str) {
        let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
        let export = json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", "orders")]},
        "scopeSpans": [{"spans": [{
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
            "name": "GET", "kind": 3, "attributes": [
                string("sp.span.type", "extract"),
                string("sp.session.id", session),
                string("sp.traffic.direction", "outbound"),
                string("url.host", "api.example.com"),
                string("url.path", path),
                string("http.request.header.:method", "GET"),
                json!({"key": "http.response.status_code", "value": {"intValue": status}}),
                string("http.response.body", body),
            ]}]}]}]});
        let response = reqwest::Client::new()
            .post(format!("{}/v1/traces", self.url()))
            .header("content-type", "application/json")
            .body(export.to_string())
            .send()
            .await
            .expect("POST /v1/traces");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.expect("answer"),
            "{}",
            "nothing refused"
        );
    }
}

/// A case file of the repository's `testdata/cases/`.
pub fn testdata_case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/cases")
        .join(name)
}
