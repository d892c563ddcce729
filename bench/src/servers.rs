//! Everything under test, started in-process on loopback: the runtime, the ceilings, the
//! proxy, and for the store part a `redis-server` child with a second runtime on it.

use super::*;
use softprobe::proxy::InProcessRuntime;

/// The addresses of everything under test.
pub(crate) struct Servers {
    pub(crate) runtime_http: SocketAddr,
    pub(crate) runtime_grpc: SocketAddr,
    pub(crate) ceiling: baseline::Baselines,
    /// `softprobe proxy` in front of the runtime's `GET /health`, when the proxy part runs.
    pub(crate) proxy: Option<SocketAddr>,
    /// The same, with the runtime in its process (`--serve-runtime`): its filter's calls go
    /// into the runtime's stack without a socket.
    pub(crate) proxy_in_process: Option<SocketAddr>,
    /// A second runtime on a Redis store, when the store part runs.
    pub(crate) store: Option<StoreServers>,
}

/// The store part's Redis server and the runtime that keeps its sessions there.
pub(crate) struct StoreServers {
    pub(crate) redis: RedisServer,
    pub(crate) runtime_http: SocketAddr,
}

/// Starts the softprobe runtime and the ceilings, and, when the store part runs, a Redis
/// server with a second runtime on it, on the server runtime. They run until the process ends.
pub(crate) async fn start_servers(
    args: &Args,
    capture_dir: &std::path::Path,
) -> anyhow::Result<Servers> {
    let (runtime_http, runtime_grpc, runtime_service) =
        start_runtime(args, capture_dir, "memory").await?;
    let store = if !args.smoke && args.only.contains(&Part::Store) {
        let redis = RedisServer::start()?;
        let url = format!("redis://{}", redis.addr);
        let dir = capture_dir.join("redis");
        std::fs::create_dir_all(&dir).context("capture directory of the Redis runtime")?;
        let (runtime_http, _, _) = start_runtime(args, &dir, &url).await?;
        Some(StoreServers {
            redis,
            runtime_http,
        })
    } else {
        None
    };
    let (proxy, proxy_in_process) = if args.smoke || args.only.contains(&Part::Proxy) {
        let in_process = InProcessRuntime::new(runtime_http, runtime_service);
        (
            Some(start_proxy(args, runtime_http, None).await?),
            Some(start_proxy(args, runtime_http, Some(in_process)).await?),
        )
    } else {
        (None, None)
    };
    let reply = hit_reply();
    Ok(Servers {
        runtime_http,
        runtime_grpc,
        ceiling: baseline::start(reply).await?,
        proxy,
        proxy_in_process,
        store,
    })
}

/// Starts a softprobe runtime on `store` (in-process, ephemeral ports, limits raised so no
/// span or session is refused); answers its HTTP and gRPC addresses and its HTTP stack.
async fn start_runtime(
    args: &Args,
    capture_dir: &std::path::Path,
    store: &str,
) -> anyhow::Result<(SocketAddr, SocketAddr, softprobe::serve::HttpService)> {
    let capture_dir = capture_dir.to_str().context("UTF-8 capture directory")?;
    let max_sessions = (args.sessions + 1_000).to_string();
    let workers = args.server_threads.max(1).to_string();
    let argv = [
        "softprobe",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--store",
        store,
        "--capture-dir",
        capture_dir,
        "--max-sessions",
        &max_sessions,
        "--capture-max-spans",
        "100000000",
        "--capture-max-bytes",
        "68719476736",
        // The ingest reps keep everything they send: no budget may refuse it.
        "--max-capture-bytes-total",
        "68719476736",
        // The load generator's own pool keeps connections idle across parts and does not
        // reconnect, so the runtime must not close them in between.
        "--header-read-timeout",
        "1h",
        "--idle-connection-timeout",
        "1h",
        // As many connection workers as the server runtime has threads.
        "--workers",
        &workers,
    ];
    let softprobe::cli::Command::Serve(serve) =
        <softprobe::cli::Cli as Parser>::try_parse_from(argv)
            .context("serve arguments")?
            .command
    else {
        bail!("the arguments name serve");
    };
    let server = softprobe::serve::Server::bind(&serve)
        .await
        .with_context(|| format!("runtime on --store {store}"))?;
    let started = (
        server.http_addr(),
        server.grpc_addr(),
        server.http_service(),
    );
    tokio::spawn(async move {
        if let Err(err) = server.run(std::future::pending()).await {
            eprintln!("runtime stopped: {err}");
        }
    });
    Ok(started)
}

/// A `redis-server` child of the bench on a free loopback port, with neither snapshots nor an
/// append-only file, in a temporary directory; killed when dropped.
pub(crate) struct RedisServer {
    pub(crate) addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) and waits until it answers `PING`.
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("Redis directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("a free port for Redis")?
            .port();
        let log = dir.path().join("redis.log");
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "the store part starts its own Redis, but `redis-server` is not on PATH: install \
                 it (Debian: apt-get install redis-server) or leave out the store part (--only ...)"
            ),
            other => other.context("start redis-server")?,
        };
        load::count_as_store(child.id());
        let mut redis = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["ping"]).ok().as_deref() != Some("PONG") {
            if let Some(status) = redis.child.try_wait()? {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("redis-server exited ({status}) on port {port}:\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Runs `redis-cli` against this server; answers its output, trimmed.
    fn cli(&self, command: &[&str]) -> anyhow::Result<String> {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(command)
            .output()
            .context("run redis-cli (installed with redis-server)")?;
        ensure!(
            output.status.success(),
            "redis-cli {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Bytes Redis has allocated (`used_memory` of `INFO memory`).
    pub(crate) fn used_memory(&self) -> anyhow::Result<u64> {
        let info = self.cli(&["info", "memory"])?;
        info.lines()
            .find_map(|line| line.trim().strip_prefix("used_memory:"))
            .context("used_memory in INFO memory")?
            .parse()
            .context("used_memory is a number")
    }
}

/// Calls per Redis command, from `INFO commandstats` (commands run by scripts included).
#[derive(Default, Clone)]
pub(crate) struct Commands(pub(crate) std::collections::BTreeMap<String, u64>);

impl Commands {
    /// Adds what `after` counts beyond `before`.
    pub(crate) fn add_delta(&mut self, before: &Commands, after: &Commands) {
        for (name, calls) in &after.0 {
            let delta = calls - before.0.get(name).copied().unwrap_or(0);
            if delta > 0 {
                *self.0.entry(name.clone()).or_default() += delta;
            }
        }
    }
}

impl RedisServer {
    /// Calls so far per command.
    pub(crate) fn commands(&self) -> anyhow::Result<Commands> {
        let info = self.cli(&["info", "commandstats"])?;
        let mut commands = Commands::default();
        for line in info.lines() {
            // cmdstat_hmget:calls=5,usec=12,...
            let Some((name, stats)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            if name == "info" {
                continue; // the bench's own reads
            }
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .context("calls= in a commandstats line")?
                .parse()
                .context("calls is a number")?;
            commands.0.insert(name.to_owned(), calls);
        }
        Ok(commands)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `softprobe proxy` (ingress, the real filter) in front of the runtime, whose
/// `GET /health` is the upstream, and whose inject and traces endpoints the filter calls (over
/// loopback, or into `in_process`).
pub(crate) async fn start_proxy(
    args: &Args,
    runtime: SocketAddr,
    in_process: Option<InProcessRuntime>,
) -> anyhow::Result<SocketAddr> {
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
        runtime: in_process,
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
pub(crate) fn hit_reply() -> TracesData {
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
