//! `softprobe-bench`: the runtime's inject and OTLP ingest paths under an open-model load,
//! measured against a hyper and a tonic ceiling in the same run, on loopback sockets; and
//! `softprobe proxy` against the same upstream reached directly.
//!
//! `--smoke` checks correctness only (hits hit, misses miss, exported == received) and exits
//! non-zero on a failure; it never judges speed.

mod alloc;
mod baseline;
mod corpus;
mod load;
mod report;

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use hyper::{Method, StatusCode};
use load::{Call, GRPC_EXPORT, GRPC_INJECT, HttpPool, Sample};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use report::{Report, Row};
use softprobe::proto::v1::inject_service_client::InjectServiceClient;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Name prefix of the server runtime's threads, whose CPU time is reported per request.
const SERVER_THREAD: &str = "bench-server";
/// Name prefix of the proxy's worker threads (`softprobe::proxy`), counted as server CPU too.
const PROXY_THREAD: &str = "proxy-worker";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// The upstream route of the proxy scenarios: the runtime's own health check.
const HEALTH: &str = "/health";
static SESSION_HEADER: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-softprobe-session-id");

/// Load generator for the inject and ingest paths and for the proxy; see BENCHMARKS.md.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// Correctness only, in a few seconds: exits non-zero when a hit misses, a miss hits or
    /// exported spans go missing. Never judges speed.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of every measurement; the report shows the median.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Warm-up before each measured window, in milliseconds (not recorded).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Measured window of each run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    measure_ms: u64,
    /// Fixed inject rates (requests/s) for the latency ladder.
    #[arg(long, value_delimiter = ',', default_values_t = [1000.0, 5000.0])]
    rates: Vec<f64>,
    /// Fixed inject rate (requests/s) for the rules and sessions scaling runs.
    #[arg(long, default_value_t = 2000.0)]
    scale_rate: f64,
    /// Requests in flight for the closed-loop maximum-throughput runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Export requests in flight for the ingest runs.
    #[arg(long, default_value_t = 8)]
    ingest_concurrency: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Rules in the large session of the rules scaling run.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Idle sessions created for the sessions scaling run.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Spans captured before the close that measures case-write throughput.
    #[arg(long, default_value_t = 20_000)]
    capture_spans: usize,
    /// Worker threads of the server runtime (the runtime and the ceilings share it); the load
    /// generator runs on one more thread plus a pacing thread.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Most HTTP/1.1 keep-alive connections per target.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Slices each compared window (fixed-rate and closed-loop) is cut into, taken in turn
    /// across the scenarios compared.
    #[arg(long, default_value_t = 8)]
    slices: usize,
    /// Connections (and requests in flight) of the proxy throughput runs; the latency runs use
    /// one.
    #[arg(long, default_value_t = 8)]
    proxy_connections: usize,
    /// Workers of the proxy under test (default: one per CPU, as `softprobe proxy`).
    #[arg(long)]
    proxy_workers: Option<NonZeroUsize>,
    /// The filter the proxy runs (default: the wasm-release build in the target directory).
    #[arg(long, env = "SOFTPROBE_FILTER_WASM")]
    filter: Option<PathBuf>,
    /// Run only these parts (comma-separated), e.g. `--only inject` while working on the
    /// inject path; the report leaves out the rows of the parts not run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Part::ALL)]
    only: Vec<Part>,
}

/// The independent parts of a full run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Inject: fixed-rate ladder and closed-loop maximum, every protocol.
    Inject,
    /// OTLP ingest into a capture session, every protocol, against the sink.
    Ingest,
    /// Rules per session, then idle sessions (including bytes per idle session).
    Scaling,
    /// Bytes per captured span and the case write on close.
    Capture,
    /// `softprobe proxy` in front of an upstream, against the upstream reached directly.
    Proxy,
}

impl Part {
    const ALL: [Part; 5] = [
        Part::Inject,
        Part::Ingest,
        Part::Scaling,
        Part::Capture,
        Part::Proxy,
    ];
}

impl Args {
    fn smoke(mut self) -> Self {
        self.reps = 1;
        self.warmup_ms = 100;
        self.measure_ms = 300;
        self.rates = vec![200.0];
        self.scale_rate = 200.0;
        self.concurrency = 4;
        self.ingest_concurrency = 2;
        self.batch = 10;
        self.rules = 1_000;
        self.sessions = 1_000;
        self.capture_spans = 200;
        self.proxy_connections = 2;
        self
    }

    fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    fn measure(&self) -> Duration {
        Duration::from_millis(self.measure_ms)
    }

    /// The filter `.wasm`, built where the end-to-end tests look for it.
    fn filter(&self) -> anyhow::Result<PathBuf> {
        const BUILT: &str = "wasm32-wasip1/wasm-release/softprobe_filter.wasm";
        let path = match (&self.filter, std::env::var_os("CARGO_TARGET_DIR")) {
            (Some(path), _) => path.clone(),
            (None, Some(target)) => PathBuf::from(target).join(BUILT),
            (None, None) => {
                let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
                bench.parent().unwrap_or(bench).join("target").join(BUILT)
            }
        };
        ensure!(
            path.exists(),
            "{} is missing: build it with `cargo build --profile wasm-release -p softprobe-filter \
             --target wasm32-wasip1`, pass --filter, or leave out the proxy part (--only ...)",
            path.display()
        );
        Ok(path)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args = args.smoke();
    }
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .context("server runtime")?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("client runtime")?;
    let capture_dir = tempfile::tempdir().context("capture directory")?;
    let servers = server.block_on(start_servers(&args, capture_dir.path()))?;
    if args.smoke {
        let failures = client.block_on(smoke(&args, &servers))?;
        if failures.is_empty() {
            println!("smoke: all correctness checks passed");
            return Ok(());
        }
        for failure in &failures {
            eprintln!("smoke FAILED: {failure}");
        }
        bail!("{} correctness check(s) failed", failures.len());
    }
    let report = client.block_on(run(&args, &servers))?;
    print!("{}", report.markdown(&args_line(&args)));
    Ok(())
}

fn args_line(args: &Args) -> String {
    format!(
        "reps={} warmup={}ms measure={}ms rates={:?} scale_rate={} concurrency={} \
         ingest_concurrency={} batch={} rules={} sessions={} capture_spans={} server_threads={} \
         proxy_connections={} proxy_workers={} only={:?}",
        args.reps,
        args.warmup_ms,
        args.measure_ms,
        args.rates,
        args.scale_rate,
        args.concurrency,
        args.ingest_concurrency,
        args.batch,
        args.rules,
        args.sessions,
        args.capture_spans,
        args.server_threads,
        args.proxy_connections,
        args.proxy_workers
            .map_or_else(|| "per CPU".to_owned(), |n| n.to_string()),
        args.only
    )
}

/// The addresses of everything under test.
struct Servers {
    runtime_http: SocketAddr,
    runtime_grpc: SocketAddr,
    ceiling: baseline::Baselines,
    /// `softprobe proxy` in front of the runtime's `GET /health`, when the proxy part runs.
    proxy: Option<SocketAddr>,
}

/// Starts the softprobe runtime (in-process, ephemeral ports, limits raised so no span or
/// session is refused) and the ceilings, on the server runtime. They run until the process ends.
async fn start_servers(args: &Args, capture_dir: &std::path::Path) -> anyhow::Result<Servers> {
    let capture_dir = capture_dir.to_str().context("UTF-8 capture directory")?;
    let max_sessions = (args.sessions + 1_000).to_string();
    let argv = [
        "softprobe",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--capture-dir",
        capture_dir,
        "--max-sessions",
        &max_sessions,
        "--capture-max-spans",
        "100000000",
        "--capture-max-bytes",
        "68719476736",
    ];
    let softprobe::cli::Command::Serve(serve) =
        <softprobe::cli::Cli as Parser>::try_parse_from(argv)
            .context("serve arguments")?
            .command
    else {
        bail!("the arguments name serve");
    };
    let server = softprobe::serve::Server::bind(&serve).await?;
    let (runtime_http, runtime_grpc) = (server.http_addr(), server.grpc_addr());
    tokio::spawn(async move {
        if let Err(err) = server.run(std::future::pending()).await {
            eprintln!("runtime stopped: {err}");
        }
    });
    let proxy = if args.smoke || args.only.contains(&Part::Proxy) {
        Some(start_proxy(args, runtime_http).await?)
    } else {
        None
    };
    let reply = hit_reply();
    Ok(Servers {
        runtime_http,
        runtime_grpc,
        ceiling: baseline::start(reply).await?,
        proxy,
    })
}

/// Starts `softprobe proxy` (ingress, the real filter) in front of the runtime, whose
/// `GET /health` is the upstream, and whose inject and traces endpoints the filter calls.
async fn start_proxy(args: &Args, runtime: SocketAddr) -> anyhow::Result<SocketAddr> {
    let configuration = serde_json::json!({
        "traffic_direction": "inbound",
        "sp_backend_url": format!("http://{runtime}"),
        "service_name": "bench",
    });
    let server = softprobe::proxy::ProxyServer::bind(softprobe::proxy::ProxyConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        filter: args.filter()?,
        configuration: configuration.to_string(),
        upstream: Some(format!("http://{runtime}")),
        clusters: Default::default(),
        workers: args.proxy_workers,
    })
    .await?;
    let addr = server.local_addr();
    tokio::spawn(async move {
        if let Err(err) = server.run(std::future::pending()).await {
            eprintln!("proxy stopped: {err}");
        }
    });
    Ok(addr)
}

/// What the gRPC ceiling answers: a hit as the runtime would encode it.
fn hit_reply() -> TracesData {
    let mut traces = corpus::inject("ceiling", "/");
    if let Some(span) = traces
        .resource_spans
        .first_mut()
        .and_then(|rs| rs.scope_spans.first_mut())
        .and_then(|ss| ss.spans.first_mut())
    {
        span.attributes.truncate(3);
    }
    traces
}

/// HTTP and gRPC clients for the runtime, the ceilings and the proxy.
struct Clients {
    runtime: Arc<HttpPool>,
    ceiling: Arc<HttpPool>,
    proxy: Option<Arc<HttpPool>>,
    runtime_grpc: tonic::transport::Channel,
    ceiling_grpc: tonic::transport::Channel,
}

impl Clients {
    async fn new(args: &Args, servers: &Servers) -> anyhow::Result<Self> {
        Ok(Self {
            runtime: Arc::new(HttpPool::new(servers.runtime_http, args.connections)),
            ceiling: Arc::new(HttpPool::new(servers.ceiling.http, args.connections)),
            proxy: servers
                .proxy
                .map(|addr| Arc::new(HttpPool::new(addr, args.connections))),
            runtime_grpc: load::grpc_channel(servers.runtime_grpc).await?,
            ceiling_grpc: load::grpc_channel(servers.ceiling.grpc).await?,
        })
    }

    async fn session(&self, mode: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .runtime
            .json(
                Method::POST,
                "/v1/sessions",
                &serde_json::json!({ "mode": mode }),
            )
            .await?;
        ensure!(status == StatusCode::OK, "create session: {status} {body}");
        Ok(body["sessionId"]
            .as_str()
            .context("sessionId in the answer")?
            .to_owned())
    }

    async fn rules(&self, session: &str, n: usize) -> anyhow::Result<()> {
        let path = format!("/v1/sessions/{session}/rules");
        let (status, body) = self
            .runtime
            .json(Method::POST, &path, &corpus::rules(n))
            .await?;
        ensure!(status == StatusCode::OK, "set {n} rules: {status} {body}");
        Ok(())
    }

    async fn extracted_spans(&self, session: &str) -> anyhow::Result<u64> {
        let path = format!("/v1/sessions/{session}/stats");
        let (status, body) = self
            .runtime
            .json(Method::GET, &path, &serde_json::Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "stats: {status} {body}");
        body["stats"]["extractedSpans"]
            .as_u64()
            .context("stats.extractedSpans")
    }

    fn http(
        pool: &Arc<HttpPool>,
        path: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        expect: StatusCode,
    ) -> Arc<Call> {
        Arc::new(Call::Http {
            pool: pool.clone(),
            path,
            content_type,
            accept: content_type,
            body: body.into(),
            expect,
        })
    }

    fn grpc(
        channel: &tonic::transport::Channel,
        path: &'static str,
        body: Vec<u8>,
        expect: tonic::Code,
    ) -> Arc<Call> {
        Arc::new(Call::Grpc {
            channel: channel.clone(),
            path,
            body: body.into(),
            expect,
        })
    }

    /// The inject scenarios against a replay session: (name, call), ceilings first.
    fn inject_calls(
        &self,
        session: &str,
        path: &str,
    ) -> anyhow::Result<Vec<(&'static str, Arc<Call>)>> {
        let hit = corpus::inject(session, path);
        let miss = corpus::inject(session, "/not/mocked");
        let hit_json = serde_json::to_vec(&hit).context("inject as OTLP JSON")?;
        Ok(vec![
            (
                report::CEILING_HTTP,
                Self::http(
                    &self.ceiling,
                    "/v1/inject",
                    PROTOBUF,
                    hit.encode_to_vec(),
                    StatusCode::OK,
                ),
            ),
            (
                report::INJECT_HIT,
                Self::http(
                    &self.runtime,
                    "/v1/inject",
                    PROTOBUF,
                    hit.encode_to_vec(),
                    StatusCode::OK,
                ),
            ),
            (
                report::INJECT_MISS,
                Self::http(
                    &self.runtime,
                    "/v1/inject",
                    PROTOBUF,
                    miss.encode_to_vec(),
                    StatusCode::NOT_FOUND,
                ),
            ),
            (
                report::INJECT_JSON,
                Self::http(&self.runtime, "/v1/inject", JSON, hit_json, StatusCode::OK),
            ),
            (
                report::CEILING_GRPC,
                Self::grpc(
                    &self.ceiling_grpc,
                    GRPC_INJECT,
                    hit.encode_to_vec(),
                    tonic::Code::Ok,
                ),
            ),
            (
                report::INJECT_GRPC,
                Self::grpc(
                    &self.runtime_grpc,
                    GRPC_INJECT,
                    hit.encode_to_vec(),
                    tonic::Code::Ok,
                ),
            ),
        ])
    }

    /// The proxy scenarios, the direct upstream (the ceiling) first; and the capture session.
    async fn proxy_calls(&self) -> anyhow::Result<(Vec<(&'static str, Arc<Call>)>, String)> {
        let proxy = self.proxy.as_ref().context("the proxy is not running")?;
        let replay = self.session("replay").await?;
        let (status, body) = self
            .runtime
            .json(
                Method::POST,
                &format!("/v1/sessions/{replay}/rules"),
                &corpus::health_mock(),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "set the mock rule: {status} {body}"
        );
        let capture = self.session("capture").await?;
        let get = |pool: &Arc<HttpPool>, session: Option<&str>, expect| -> anyhow::Result<_> {
            let header = session
                .map(|id| anyhow::Ok((SESSION_HEADER.clone(), id.parse()?)))
                .transpose()?;
            Ok(Arc::new(Call::Get {
                pool: pool.clone(),
                path: HEALTH,
                header,
                expect,
            }))
        };
        let mocked = StatusCode::from_u16(corpus::MOCK_STATUS as u16)?;
        Ok((
            vec![
                (
                    report::PROXY_DIRECT,
                    get(&self.runtime, None, StatusCode::OK)?,
                ),
                (report::PROXY_PASS, get(proxy, None, StatusCode::OK)?),
                (report::PROXY_MOCK, get(proxy, Some(&replay), mocked)?),
                (
                    report::PROXY_CAPTURE,
                    get(proxy, Some(&capture), StatusCode::OK)?,
                ),
            ],
            capture,
        ))
    }

    /// Waits (up to 10 s: uploads trail their answers) until the capture session holds
    /// `expected` spans; checks it holds exactly that many.
    async fn uploaded(&self, session: &str, expected: u64) -> anyhow::Result<Result<(), String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let extracted = self.extracted_spans(session).await?;
            if extracted == expected {
                return Ok(Ok(()));
            }
            if extracted > expected || Instant::now() > deadline {
                return Ok(Err(format!(
                    "proxy capture hops: {expected} answered, {extracted} spans uploaded"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An export of `batch` spans for `session` over `protocol`, to the runtime or the sink.
    fn export_call(
        &self,
        protocol: Protocol,
        sink: bool,
        session: &str,
        batch: usize,
    ) -> anyhow::Result<Arc<Call>> {
        let request = corpus::export(session, batch);
        let (pool, channel) = if sink {
            (&self.ceiling, &self.ceiling_grpc)
        } else {
            (&self.runtime, &self.runtime_grpc)
        };
        Ok(match protocol {
            Protocol::HttpProtobuf => Self::http(
                pool,
                "/v1/traces",
                PROTOBUF,
                request.encode_to_vec(),
                StatusCode::OK,
            ),
            Protocol::HttpJson => Self::http(
                pool,
                "/v1/traces",
                JSON,
                serde_json::to_vec(&request).context("export as OTLP JSON")?,
                StatusCode::OK,
            ),
            Protocol::Grpc => Self::grpc(
                channel,
                GRPC_EXPORT,
                request.encode_to_vec(),
                tonic::Code::Ok,
            ),
        })
    }
}

/// OTLP export transports.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::HttpProtobuf, Protocol::HttpJson, Protocol::Grpc];

    fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Runs one export run and checks that every span acknowledged was received.
async fn ingest_once(
    args: &Args,
    clients: &Clients,
    servers: &Servers,
    protocol: Protocol,
    sink: bool,
) -> anyhow::Result<(Sample, Result<(), String>)> {
    let session = if sink {
        "sink".to_owned()
    } else {
        clients.session("capture").await?
    };
    let call = clients.export_call(protocol, sink, &session, args.batch)?;
    let before = servers.ceiling.spans.get();
    let sample =
        load::closed_loop(call, args.ingest_concurrency, args.warmup(), args.measure()).await;
    let sent = sample.ok * args.batch as u64;
    let received = if sink {
        servers.ceiling.spans.get() - before
    } else {
        clients.extracted_spans(&session).await?
    };
    let who = if sink { "sink" } else { "runtime" };
    let check = if sent == received && sample.errors == 0 {
        Ok(())
    } else {
        Err(format!(
            "{who} {}: sent {sent} spans in acknowledged requests, received {received}, {} failed requests",
            protocol.name(),
            sample.errors
        ))
    };
    Ok((sample, check))
}

async fn run(args: &Args, servers: &Servers) -> anyhow::Result<Report> {
    let clients = Clients::new(args, servers).await?;
    let mut report = Report::new();
    report.batch = args.batch;
    let session = clients.session("replay").await?;
    clients.rules(&session, 1).await?;
    let calls = clients.inject_calls(&session, &corpus::rule_path(0))?;

    if args.only.contains(&Part::Inject) {
        inject_part(args, &calls, &mut report).await;
    }
    if args.only.contains(&Part::Ingest) {
        ingest_part(args, &clients, servers, &mut report).await?;
    }
    if args.only.contains(&Part::Scaling) {
        scaling_part(args, &clients, &calls, &mut report).await?;
    }
    if args.only.contains(&Part::Proxy) {
        proxy_part(args, &clients, &mut report).await?;
    }
    if args.only.contains(&Part::Capture) {
        eprintln!(
            "capture: {} spans held, then written on close",
            args.capture_spans
        );
        let (per_span, written) = capture_and_close(args, &clients).await?;
        report.bytes_per_span = Some(per_span);
        report.case_write = Some(written);
    }
    Ok(report)
}

/// Runs of several scenarios that are compared with each other (latencies at a fixed rate,
/// or maximum throughput): the measured window of each is cut into `--slices` slices taken in
/// turn, so a burst of noise on this shared machine lands on all of them alike instead of on
/// whichever scenario happened to be running. `run` measures one call for one slice, given its
/// warm-up and window.
async fn interleaved<F, Fut>(
    args: &Args,
    calls: &[(&'static str, Arc<Call>)],
    run: F,
) -> Vec<Sample>
where
    F: Fn(Arc<Call>, Duration, Duration) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let slices = args.slices.max(1);
    let mut merged: Vec<Option<Sample>> = calls.iter().map(|_| None).collect();
    for slice in 0..slices {
        for ((_, call), total) in calls.iter().zip(&mut merged) {
            let warmup = if slice == 0 {
                args.warmup()
            } else {
                Duration::ZERO
            };
            let sample = run(call.clone(), warmup, args.measure() / slices as u32).await;
            match total {
                Some(total) => total.merge(sample),
                None => *total = Some(sample),
            }
        }
    }
    merged.into_iter().flatten().collect()
}

/// [`interleaved`] at a fixed arrival rate.
async fn interleaved_at(
    args: &Args,
    calls: &[(&'static str, Arc<Call>)],
    rate: f64,
) -> Vec<Sample> {
    interleaved(args, calls, |call, warmup, window| {
        load::fixed_rate(call, rate, warmup, window)
    })
    .await
}

async fn inject_part(args: &Args, calls: &[(&'static str, Arc<Call>)], report: &mut Report) {
    eprintln!(
        "inject: fixed-rate ladder and closed-loop maximum, {} reps",
        args.reps
    );
    for rep in 0..args.reps {
        for &rate in &args.rates {
            let samples = interleaved_at(args, calls, rate).await;
            for ((name, _), sample) in calls.iter().zip(samples) {
                report.add(Row::rate(name, rate), rep, sample);
            }
        }
        let samples = interleaved(args, calls, |call, warmup, window| {
            load::closed_loop(call, args.concurrency, warmup, window)
        })
        .await;
        for ((name, _), sample) in calls.iter().zip(samples) {
            report.add(Row::max(name), rep, sample);
        }
    }
}

async fn ingest_part(
    args: &Args,
    clients: &Clients,
    servers: &Servers,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("ingest: closed loop, {} spans per request", args.batch);
    for rep in 0..args.reps {
        for protocol in Protocol::ALL {
            for sink in [true, false] {
                let (sample, check) = ingest_once(args, clients, servers, protocol, sink).await?;
                if let Err(failure) = check {
                    report.failures.push(failure);
                }
                report.add(Row::ingest(protocol.name(), sink), rep, sample);
            }
        }
    }
    Ok(())
}

async fn scaling_part(
    args: &Args,
    clients: &Clients,
    calls: &[(&'static str, Arc<Call>)],
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!(
        "scaling: {} rules, then {} sessions",
        args.rules, args.sessions
    );
    let big = clients.session("replay").await?;
    clients.rules(&big, args.rules).await?;
    let big_call = Clients::http(
        &clients.runtime,
        "/v1/inject",
        PROTOBUF,
        corpus::inject(&big, &corpus::rule_path(args.rules - 1)).encode_to_vec(),
        StatusCode::OK,
    );
    let small_call = calls
        .iter()
        .find(|(name, _)| *name == report::INJECT_HIT)
        .map(|(_, call)| call.clone())
        .context("the hit call")?;
    let pair = [
        (report::ONE_RULE_ONE_SESSION, small_call.clone()),
        (report::MANY_RULES, big_call),
    ];
    for rep in 0..args.reps {
        let samples = interleaved_at(args, &pair, args.scale_rate).await;
        for ((name, _), sample) in pair.iter().zip(samples) {
            report.add(Row::scale(name), rep, sample);
        }
    }

    let before = alloc::live_bytes();
    create_sessions(clients, args.sessions).await?;
    report.bytes_per_session = Some((alloc::live_bytes() - before) as f64 / args.sessions as f64);
    for rep in 0..args.reps {
        let sample = load::fixed_rate(
            small_call.clone(),
            args.scale_rate,
            args.warmup(),
            args.measure(),
        )
        .await;
        report.add(Row::scale(report::MANY_SESSIONS), rep, sample);
    }
    Ok(())
}

/// The proxy against the upstream it fronts, closed loop: throughput at
/// `--proxy-connections`, latency at one connection (one request at a time); then checks
/// that every capture hop uploaded its span.
async fn proxy_part(args: &Args, clients: &Clients, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "proxy: closed loop at {} connections and at 1, {} reps",
        args.proxy_connections, args.reps
    );
    report.proxy_connections = args.proxy_connections;
    let (calls, capture) = clients.proxy_calls().await?;
    let mut captured = 0;
    for rep in 0..args.reps {
        for connections in [args.proxy_connections, 1] {
            let samples = interleaved(args, &calls, |call, warmup, window| {
                load::closed_loop(call, connections, warmup, window)
            })
            .await;
            for ((name, _), sample) in calls.iter().zip(samples) {
                if *name == report::PROXY_CAPTURE {
                    captured += sample.ok + sample.errors;
                }
                report.add(Row::proxy(name, connections), rep, sample);
            }
        }
    }
    if let Err(failure) = clients.uploaded(&capture, captured).await? {
        report.failures.push(failure);
    }
    Ok(())
}

/// Creates `n` idle replay sessions, 16 requests in flight.
async fn create_sessions(clients: &Clients, n: usize) -> anyhow::Result<()> {
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let pool = clients.runtime.clone();
            tokio::spawn(async move {
                for _ in (w..n).step_by(16) {
                    let (status, body) = pool
                        .json(
                            Method::POST,
                            "/v1/sessions",
                            &serde_json::json!({"mode": "replay"}),
                        )
                        .await?;
                    ensure!(status == StatusCode::OK, "create session: {status} {body}");
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("session worker")??;
    }
    Ok(())
}

/// Case writing: bytes held per captured span, and the close that writes them.
struct CaseWrite {
    spans: usize,
    bytes: u64,
    elapsed: Duration,
}

/// Captures `capture_spans` spans (HTTP protobuf, one request at a time), measures the live
/// bytes they hold, then closes the session and times the case write.
async fn capture_and_close(args: &Args, clients: &Clients) -> anyhow::Result<(f64, CaseWrite)> {
    let session = clients.session("capture").await?;
    let batch = args.batch.min(args.capture_spans).max(1);
    let body: bytes::Bytes = corpus::export(&session, batch).encode_to_vec().into();
    let batches = args.capture_spans.div_ceil(batch);
    let before = alloc::live_bytes();
    for _ in 0..batches {
        let (status, _) = clients
            .runtime
            .send(Method::POST, "/v1/traces", PROTOBUF, PROTOBUF, body.clone())
            .await?;
        ensure!(status == StatusCode::OK, "capture export: {status}");
    }
    let spans = batches * batch;
    let per_span = (alloc::live_bytes() - before) as f64 / spans as f64;
    let extracted = clients.extracted_spans(&session).await?;
    ensure!(
        extracted == spans as u64,
        "captured {extracted} of {spans} spans"
    );
    let started = Instant::now();
    let (status, closed) = clients
        .runtime
        .json(
            Method::POST,
            &format!("/v1/sessions/{session}/close"),
            &serde_json::Value::Null,
        )
        .await?;
    let elapsed = started.elapsed();
    ensure!(status == StatusCode::OK, "close: {status} {closed}");
    let path = closed["capturePath"].as_str().context("capturePath")?;
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("case {path}"))?
        .len();
    Ok((
        per_span,
        CaseWrite {
            spans,
            bytes,
            elapsed,
        },
    ))
}

/// Correctness checks, each run once with tiny loads; returns what failed.
async fn smoke(args: &Args, servers: &Servers) -> anyhow::Result<Vec<String>> {
    let clients = Clients::new(args, servers).await?;
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let session = clients.session("replay").await?;
    clients.rules(&session, args.rules).await?;
    let last = corpus::rule_path(args.rules - 1);

    // A hit is a 200 whose body decodes to a hit with the mocked status; a miss is a 404.
    let hit = corpus::inject(&session, &last);
    let (status, body) = clients
        .runtime
        .send(
            Method::POST,
            "/v1/inject",
            PROTOBUF,
            PROTOBUF,
            hit.encode_to_vec().into(),
        )
        .await?;
    let decoded = TracesData::decode(body).ok();
    let code = decoded
        .as_ref()
        .and_then(|t| corpus::attribute(t, "http.response.status_code"));
    check(
        status == StatusCode::OK && code == Some(corpus::MOCK_STATUS.to_string()),
        format!(
            "protobuf inject of the last of {} rules: {status}, status attribute {code:?}",
            args.rules
        ),
    );
    let (status, body) = clients
        .runtime
        .send(
            Method::POST,
            "/v1/inject",
            JSON,
            JSON,
            serde_json::to_vec(&hit)?.into(),
        )
        .await?;
    let decoded = serde_json::from_slice::<TracesData>(&body).ok();
    let code = decoded
        .as_ref()
        .and_then(|t| corpus::attribute(t, "http.response.status_code"));
    check(
        status == StatusCode::OK && code == Some(corpus::MOCK_STATUS.to_string()),
        format!("JSON inject hit: {status}, status attribute {code:?}"),
    );
    let miss = corpus::inject(&session, "/not/mocked");
    let (status, _) = clients
        .runtime
        .send(
            Method::POST,
            "/v1/inject",
            PROTOBUF,
            PROTOBUF,
            miss.encode_to_vec().into(),
        )
        .await?;
    check(
        status == StatusCode::NOT_FOUND,
        format!("protobuf inject miss: {status}"),
    );
    let mut grpc = InjectServiceClient::new(clients.runtime_grpc.clone());
    let answer = grpc.inject(hit.clone()).await;
    let code = answer
        .as_ref()
        .ok()
        .and_then(|r| corpus::attribute(r.get_ref(), "http.response.status_code"));
    check(
        code == Some(corpus::MOCK_STATUS.to_string()),
        format!(
            "gRPC inject hit: status attribute {code:?} ({:?})",
            answer.err()
        ),
    );
    let answer = grpc.inject(miss).await;
    check(
        answer.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::NotFound),
        format!("gRPC inject miss: {:?}", answer.map(|_| "a hit")),
    );

    // Every load path once, briefly: every answer must be the expected one.
    for (name, call) in clients.inject_calls(&session, &last)? {
        let sample =
            load::fixed_rate(call.clone(), args.rates[0], args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name} at {} req/s: {} wrong answers of {}",
                args.rates[0],
                sample.errors,
                sample.ok + sample.errors
            ),
        );
        let sample = load::closed_loop(call, args.concurrency, args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name} closed loop: {} wrong answers of {}",
                sample.errors,
                sample.ok + sample.errors
            ),
        );
    }
    // Exported spans sent == received, per protocol, for the runtime and the sink.
    for protocol in Protocol::ALL {
        for sink in [true, false] {
            let (sample, result) = ingest_once(args, &clients, servers, protocol, sink).await?;
            check(
                sample.ok > 0,
                format!("{} export: nothing acknowledged", protocol.name()),
            );
            if let Err(failure) = result {
                check(false, failure);
            }
        }
    }
    let before = alloc::live_bytes();
    create_sessions(&clients, args.sessions).await?;
    check(alloc::live_bytes() > before, "sessions take memory".into());
    let (_, written) = capture_and_close(args, &clients).await?;
    check(written.bytes > 0, "the closed capture wrote a case".into());

    // The proxy: every scenario answers as expected (a mocked hop with the mock's status), and
    // every capture hop uploads one span.
    let (calls, capture) = clients.proxy_calls().await?;
    let mut captured = 0;
    for (name, call) in calls {
        let sample =
            load::closed_loop(call, args.proxy_connections, args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name}: {} wrong answers of {}",
                sample.errors,
                sample.ok + sample.errors
            ),
        );
        if name == report::PROXY_CAPTURE {
            captured += sample.ok + sample.errors;
        }
    }
    if let Err(failure) = clients.uploaded(&capture, captured).await? {
        check(false, failure);
    }
    Ok(failures)
}
