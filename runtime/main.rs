//! The `softprobe` binary: parses arguments, installs logging, runs the command.

use clap::Parser as _;
use softprobe::cli::{Cli, Command, log_filter};
use softprobe::serve::{Server, shutdown_signal};

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
        .init();
    if let Command::Serve(args) = &cli.command {
        let server = Server::bind(args).await?;
        server.run(shutdown_signal()).await?;
        return Ok(());
    }
    let code = softprobe::commands::run(cli).await;
    std::process::exit(code.into());
}
