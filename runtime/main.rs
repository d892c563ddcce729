//! The `softprobe` binary: parses arguments, installs logging, runs the command.

use clap::Parser as _;
use softprobe::cli::{Cli, Command, ProxyArgs, ServeArgs, log_filter};
use softprobe::proxy::{InProcessRuntime, ProxyConfig, ProxyServer};
use softprobe::serve::{Server, shutdown_signal};

// Every inject and export allocates dozens of small, short-lived objects (decoded attributes,
// the answer); mimalloc serves those from thread-local pages instead of glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads `--config` (inline JSON or `@FILE`) into a proxy configuration.
fn proxy_config(args: &ProxyArgs) -> anyhow::Result<ProxyConfig> {
    let configuration = match args.config.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("--config @{path}: {err}"))?,
        None => args.config.clone(),
    };
    Ok(ProxyConfig {
        listen: args.listen,
        filter: args.filter.clone(),
        configuration,
        upstream: args.upstream.clone(),
        clusters: args.clusters.iter().cloned().collect(),
        workers: args.workers,
        runtime: None,
    })
}

/// `softprobe proxy`; with `--serve-runtime`, the runtime too, stopped after the proxy so the
/// proxy's last trace uploads land before the runtime writes its open captures.
async fn proxy(args: &ProxyArgs) -> anyhow::Result<()> {
    let mut config = proxy_config(args)?;
    if !args.serve_runtime {
        return Ok(ProxyServer::bind(config)
            .await?
            .run(shutdown_signal())
            .await?);
    }
    let serve = ServeArgs::from_env()?;
    let runtime = Server::bind(&serve).await?;
    config.runtime = Some(InProcessRuntime::new(
        runtime.http_addr(),
        runtime.http_service(),
    ));
    let proxy = ProxyServer::bind(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::spawn(runtime.run(async {
        let _ = stopped.await;
    }));
    let proxied = proxy.run(shutdown_signal()).await;
    let _ = stop.send(());
    runtime.await??;
    Ok(proxied?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = log_filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("SOFTPROBE_LOG_LEVEL").ok().as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in CI logs or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match &cli.command {
        Command::Serve(args) => {
            let server = Server::bind(args).await?;
            server.run(shutdown_signal()).await?;
            return Ok(());
        }
        Command::Proxy(args) => return proxy(args).await,
        _ => {}
    }
    let code = softprobe::commands::run(cli).await;
    std::process::exit(code.into());
}
