//! Several `softprobe serve` processes on one real `redis-server` (`--store redis://…`) behave
//! as one runtime: read-your-writes across replicas, `consume: once` exactly once, captures
//! that survive a killed replica, restarts, and a Redis outage answered with 503s.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::free_port;
use support::spans::{outbound_get, span, traces};

/// Each test runs several runtime processes: one test at a time, so a loaded CI machine does
/// not starve them into timeouts.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `redis-server` on a loopback port, with its data in a temporary directory. Append-only
/// persistence with fsync on every write, so a restart keeps what was acknowledged.
struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        // A free port can be taken again before the server binds it: then try another.
        for _ in 0..5 {
            let port = free_port();
            let child = Self::spawn(dir.path(), port);
            let mut redis = Self { child, port, dir };
            if redis.wait_ready() {
                return redis;
            }
            dir = std::mem::replace(&mut redis.dir, tempfile::tempdir().unwrap());
        }
        panic!("redis-server did not start on five ports");
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)")
    }

    /// Whether the server now listens; false when it exited (its port was taken).
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.try_wait().unwrap().is_none()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path(), self.port);
        assert!(
            self.wait_ready(),
            "redis-server did not restart on its port"
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local Redis Cluster of three masters (no replicas), each on a loopback port.
struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).unwrap();
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (apt-get install -y redis-server)")
            })
            .collect();
        let cluster = Self {
            nodes,
            ports,
            _dir: dir,
        };
        for port in &cluster.ports {
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "node did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli must be installed with redis-server");
        assert!(created.success());
        // Every slot served before a runtime connects.
        let started = Instant::now();
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &cluster.ports[0].to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cluster not ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A runtime process on the shared store.
struct Replica {
    child: Child,
    base: String,
    /// Its gRPC listener, as a URL.
    grpc: String,
    _captures: tempfile::TempDir,
}

impl Replica {
    async fn start(redis: &Redis) -> Self {
        Self::on(&redis.url()).await
    }

    async fn on(store: &str) -> Self {
        Self::with(store, &[]).await
    }

    async fn with(store: &str, extra: &[&str]) -> Self {
        let captures = tempfile::tempdir().unwrap();
        let log = captures.path().join("stderr.log");
        // A free port can be taken again before the runtime binds it: then try another.
        for _ in 0..5 {
            let (port, grpc_port) = (free_port(), free_port());
            let mut child = Command::new(env!("CARGO_BIN_EXE_softprobe"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
                .args(["--store", store])
                .arg("--capture-dir")
                .arg(captures.path())
                .args(extra)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let base = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            loop {
                if reqwest::get(format!("{base}/health")).await.is_ok() {
                    return Self {
                        child,
                        base,
                        grpc: format!("http://127.0.0.1:{grpc_port}"),
                        _captures: captures,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "replica did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "replica exited on five ports: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn post(url: String, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(replica: &Replica, mode: &str) -> String {
    let (status, body) = post(
        replica.url("/v1/sessions"),
        json!({ "mode": mode }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["sessionId"].as_str().unwrap().to_owned()
}

fn mock_rules(body: &str, once: bool) -> String {
    let consume = if once { "once" } else { "many" };
    json!({"rules": [{
        "name": "items",
        "consume": consume,
        "when": {"direction": "outbound", "path": "/items"},
        "then": {"action": "mock", "response": {"status": 200, "body": body}}
    }]})
    .to_string()
}

/// Posts an inject lookup; returns the status and the answer's bytes.
async fn inject(replica: &Replica, session: &str) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(replica.url("/v1/inject"))
        .header("content-type", "application/x-protobuf")
        .body(outbound_get(session, "/items").encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Three runtimes on one Redis.
async fn three_replicas(redis: &Redis) -> [Replica; 3] {
    [
        Replica::start(redis).await,
        Replica::start(redis).await,
        Replica::start(redis).await,
    ]
}

/// Exports one span of `session` carrying `marker` (protobuf), through `replica`.
async fn export(
    replica: &Replica,
    session: &str,
    marker: &str,
) -> reqwest::Result<reqwest::Response> {
    let batch = traces("orders", vec![span("extract", session, &[("n", marker)])]);
    reqwest::Client::new()
        .post(replica.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(batch.encode_to_vec())
        .send()
        .await
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_on_one_replica_is_seen_by_the_next_inject_on_any() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let replicas = three_replicas(&redis).await;
    let session = create(&replicas[0], "replay").await;
    let mut stale = Vec::new();
    for round in 0..300 {
        let writer = &replicas[round % 3];
        let reader = &replicas[(round + 1) % 3];
        let marker = format!("round-{round}-end");
        let (status, answer) = post(
            writer.url(&format!("/v1/sessions/{session}/rules")),
            mock_rules(&marker, false),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["sessionRevision"],
            round + 1,
            "revisions are gap-free"
        );
        let (status, hit) = inject(reader, &session).await;
        if status != 200 || !contains(&hit, &marker) {
            stale.push(round);
        }
    }
    assert!(stale.is_empty(), "stale answers in rounds {stale:?}");
    // A miss on one replica is listed by another.
    let lookup = outbound_get(&session, "/not-mocked").encode_to_vec();
    let missed = reqwest::Client::new()
        .post(replicas[1].url("/v1/inject"))
        .header("content-type", "application/x-protobuf")
        .body(lookup)
        .send()
        .await
        .unwrap();
    assert_eq!(missed.status(), 404);
    let misses: Value = reqwest::get(replicas[2].url(&format!("/v1/sessions/{session}/misses")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(misses["misses"][0]["path"], "/not-mocked", "{misses}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_once_fires_once_across_replicas_and_revisions_stay_gap_free() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let replicas = three_replicas(&redis).await;
    for _ in 0..5 {
        let session = create(&replicas[0], "replay").await;
        let (status, _) = post(
            replicas[1].url(&format!("/v1/sessions/{session}/rules")),
            mock_rules("once-only", true),
        )
        .await;
        assert_eq!(status, 200);
        let mut injects = tokio::task::JoinSet::new();
        for n in 0..30 {
            let url = replicas[n % 3].url("/v1/inject");
            let body = outbound_get(&session, "/items").encode_to_vec();
            injects.spawn(async move {
                let response = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            });
        }
        let statuses = injects.join_all().await;
        let hits = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(hits, 1, "statuses: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200 || *s == 404));
        // Parallel writes through every replica: each gets its own revision, none skipped.
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..30 {
            let url = replicas[n % 3].url(&format!("/v1/sessions/{session}/policy"));
            writes.spawn(post(url, r#"{"externalHttp":"allow"}"#.to_owned()));
        }
        let mut revisions: Vec<u64> = writes
            .join_all()
            .await
            .into_iter()
            .map(|(status, body)| {
                assert_eq!(status, 200, "{body}");
                body["sessionRevision"].as_u64().unwrap()
            })
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (2..=31).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_acknowledged_by_any_replica_is_in_the_case_though_one_was_killed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let mut replicas = three_replicas(&redis).await;
    let session = create(&replicas[0], "capture").await;
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for n in 0..90 {
        if n == 45 {
            replicas[1].kill();
        }
        let replica = &replicas[n % 3];
        let marker = format!("span-{n}-end");
        let sent = export(replica, &session, &marker).await;
        if let Ok(response) = sent
            && response.status() == 200
        {
            acknowledged.push(marker);
        }
    }
    assert!(
        acknowledged.len() >= 75,
        "{} acknowledged",
        acknowledged.len()
    );
    let (status, closed) = post(
        replicas[2].url(&format!("/v1/sessions/{session}/close")),
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert!(closed["capturePath"].is_string(), "{closed}");
    // The case is served by a replica that did not write it.
    let case = client
        .get(replicas[0].url(&format!("/v1/captures/{session}")))
        .send()
        .await
        .unwrap();
    assert_eq!(case.status(), 200);
    let case = case.text().await.unwrap();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|m| !case.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the case: {missing:?}"
    );
    // Closed everywhere: a late export is refused, not lost silently.
    let batch = traces("orders", vec![span("extract", &session, &[])]);
    let late = client
        .post(replicas[0].url("/v1/traces"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await
        .unwrap();
    let late: Value = late.json().await.unwrap();
    assert_eq!(late["partialSuccess"]["rejectedSpans"], 1, "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outlive_replicas_and_a_redis_outage_is_a_503_then_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::start();
    let mut first = Replica::start(&redis).await;
    let session = create(&first, "replay").await;
    let (status, _) = post(
        first.url(&format!("/v1/sessions/{session}/rules")),
        mock_rules("kept-across-restarts", false),
    )
    .await;
    assert_eq!(status, 200);
    first.kill();
    let replica = Replica::start(&redis).await;
    let (status, hit) = inject(&replica, &session).await;
    assert_eq!(status, 200);
    assert!(contains(&hit, "kept-across-restarts"));

    redis.stop();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(replica.url("/v1/sessions"))
        .body(r#"{"mode":"replay"}"#)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let (status, _) = inject(&replica, &session).await;
    assert_eq!(
        status, 503,
        "inject answers so the proxy's failure mode decides"
    );
    let health = reqwest::get(replica.url("/health")).await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "liveness does not depend on the store"
    );
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["store"], "redis");
    // Exporters get a retryable answer, not a silent loss.
    let refused = export(&replica, &session, "during-outage").await.unwrap();
    assert_eq!(refused.status(), 503);
    let mut grpc = TraceServiceClient::connect(replica.grpc.clone())
        .await
        .unwrap();
    let batch = traces("orders", vec![span("extract", &session, &[])]);
    let status = grpc
        .export(ExportTraceServiceRequest {
            resource_spans: batch.resource_spans,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let ready = reqwest::get(replica.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);

    redis.restart();
    let started = Instant::now();
    loop {
        let (status, hit) = inject(&replica, &session).await;
        if status == 200 {
            assert!(contains(&hit, "kept-across-restarts"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no recovery: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = reqwest::get(replica.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // A Redis that hangs (stopped, connections open) costs an inject at most a second and a
    // control call a few, then both recover when it resumes.
    let pid = redis.child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = Instant::now();
    let (status, _) = inject(&replica, &session).await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (status, body) = post(replica.url("/v1/sessions"), r#"{"mode":"replay"}"#.into()).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    signal("-CONT");
    let started = Instant::now();
    loop {
        let (status, _) = inject(&replica, &session).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no recovery: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_behave_as_one_runtime() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let replicas = [
        Replica::on(&cluster.url()).await,
        Replica::on(&cluster.url()).await,
        Replica::on(&cluster.url()).await,
    ];
    // Sessions land on different slots, hence different masters.
    let mut sessions = Vec::new();
    for n in 0..6 {
        sessions.push(create(&replicas[n % 3], "replay").await);
    }
    for round in 0..60 {
        let session = &sessions[round % sessions.len()];
        let marker = format!("cluster-{round}-end");
        let (status, answer) = post(
            replicas[round % 3].url(&format!("/v1/sessions/{session}/rules")),
            mock_rules(&marker, false),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let (status, hit) = inject(&replicas[(round + 2) % 3], session).await;
        assert_eq!(status, 200);
        assert!(contains(&hit, &marker), "stale answer in round {round}");
    }
    let listed: Value = reqwest::get(replicas[1].url("/v1/sessions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 6, "{listed}");

    let capture = create(&replicas[0], "capture").await;
    for n in 0..9 {
        let response = export(&replicas[n % 3], &capture, &format!("c-{n}-end"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let (status, closed) = post(
        replicas[1].url(&format!("/v1/sessions/{capture}/close")),
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    let case = reqwest::get(replicas[2].url(&format!("/v1/captures/{capture}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for n in 0..9 {
        assert!(case.contains(&format!("c-{n}-end")), "span {n} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_and_idle_expiry_span_every_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let flags = ["--max-sessions", "2", "--session-idle-timeout", "2s"];
    let a = Replica::with(&redis.url(), &flags).await;
    let b = Replica::with(&redis.url(), &flags).await;
    let capture = create(&a, "capture").await;
    create(&b, "replay").await;
    let (status, refused) = post(a.url("/v1/sessions"), r#"{"mode":"replay"}"#.into()).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "too_many_sessions");

    // Spans keep the capture alive past the idle timeout; then, unused, one replica writes
    // its case and either serves it.
    for n in 0..4 {
        let response = export(&b, &capture, &format!("idle-{n}-end"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let stats = reqwest::get(a.url(&format!("/v1/sessions/{capture}/stats")))
        .await
        .unwrap();
    assert_eq!(stats.status(), 200, "still open while used");
    // Listing does not count as use; wait until the capture is gone from it.
    let started = Instant::now();
    loop {
        let listed: Value = reqwest::get(b.url("/v1/sessions"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["sessionId"].as_str())
            .collect();
        if !ids.contains(&capture.as_str()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let case = reqwest::get(a.url(&format!("/v1/captures/{capture}")))
        .await
        .unwrap();
    assert_eq!(case.status(), 200);
    let case = case.text().await.unwrap();
    for n in 0..4 {
        assert!(case.contains(&format!("idle-{n}-end")), "span {n} missing");
    }
    // The expired sessions freed their places.
    let started = Instant::now();
    while post(a.url("/v1/sessions"), r#"{"mode":"replay"}"#.into())
        .await
        .0
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "places never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
