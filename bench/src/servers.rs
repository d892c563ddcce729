//! Everything under test, started in-process on loopback: the runtime, the ceilings and the
//! proxy.

use super::*;

/// The addresses of everything under test.
pub(crate) struct Servers {
    pub(crate) runtime_http: SocketAddr,
    pub(crate) runtime_grpc: SocketAddr,
    pub(crate) ceiling: baseline::Baselines,
    /// `softprobe proxy` in front of the runtime's `GET /health`, when the proxy part runs.
    pub(crate) proxy: Option<SocketAddr>,
}

/// Starts the softprobe runtime (in-process, ephemeral ports, limits raised so no span or
/// session is refused) and the ceilings, on the server runtime. They run until the process ends.
pub(crate) async fn start_servers(
    args: &Args,
    capture_dir: &std::path::Path,
) -> anyhow::Result<Servers> {
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
        // The ingest reps keep everything they send: no budget may refuse it.
        "--max-capture-bytes-total",
        "68719476736",
        // The load generator's own pool keeps connections idle across parts and does not
        // reconnect, so the runtime must not close them in between.
        "--header-read-timeout",
        "1h",
        "--idle-connection-timeout",
        "1h",
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
pub(crate) async fn start_proxy(args: &Args, runtime: SocketAddr) -> anyhow::Result<SocketAddr> {
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
