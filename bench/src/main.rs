//! `softprobe-bench`: the runtime's inject and OTLP ingest paths under an open-model load,
//! measured against a hyper and a tonic ceiling in the same run, on loopback sockets;
//! `softprobe proxy` against the same upstream reached directly; and the Redis session store
//! against the in-memory one.
//!
//! `--smoke` checks correctness only (hits hit, misses miss, exported == received) and exits
//! non-zero on a failure; it never judges speed.

mod alloc;
mod baseline;
mod clients;
mod corpus;
mod load;
mod parts;
mod report;
mod servers;
mod smoke;

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use clients::{Clients, Protocol, ingest_once};
use hyper::{Method, StatusCode};
use load::{Call, GRPC_EXPORT, GRPC_INJECT, HttpPool, Sample};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use parts::{CaseWrite, capture_and_close, create_sessions, run};
use prost::Message as _;
use report::{Report, Row};
use servers::{Commands, Servers, StoreServers, start_servers};
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
/// Name prefix of the runtime's connection workers, counted as server CPU too.
const RUNTIME_THREAD: &str = softprobe::connections::WORKER_THREAD;
/// Name prefix of the proxy's worker threads (`softprobe::proxy`), counted as server CPU too.
const PROXY_THREAD: &str = softprobe::proxy::WORKER_THREAD;

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
    /// Worker threads of the server runtime (the ceilings' and the runtime's listeners), and
    /// connection workers of the runtime (`serve --workers`); the load generator runs on one
    /// more thread plus a pacing thread.
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
    /// Workers of the proxy under test (default: as `softprobe proxy`, half the CPUs).
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
    /// The Redis session store against the in-memory one: inject, ingest and Redis memory.
    /// Starts its own `redis-server` (which must be on `PATH`), so it is not in the default run.
    Store,
}

impl Part {
    /// The default run: every part that needs nothing outside this workspace but the filter.
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
    let server = server_runtime(args.server_threads)?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("client runtime")?;
    let capture_dir = tempfile::tempdir().context("capture directory")?;
    let (starting, dir) = (args.clone(), capture_dir.path().to_owned());
    let servers = client
        .block_on(server.spawn(async move { start_servers(&starting, &dir).await }))
        .context("server start-up")??;
    if args.smoke {
        let failures = client.block_on(smoke::smoke(&args, &servers))?;
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

/// The runtime the ceilings and the runtime's listeners run on, driven by a thread of its own.
/// With one thread it is a current-thread runtime: the same kind of event loop as each of the
/// runtime's connection workers and the proxy's, so no side of a ratio gets a cheaper one.
fn server_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Handle> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .context("server runtime")?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(SERVER_THREAD.to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .context("server thread")?;
    Ok(handle)
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
        args.proxy_workers.map_or_else(
            || format!("{} (default)", softprobe::proxy::default_workers()),
            |n| n.to_string()
        ),
        args.only
    )
}
