//! Command-line definitions of the `softprobe` binary.

mod serve;

pub use serve::{ServeArgs, log_filter};

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// Softprobe: capture and replay HTTP traffic for integration tests.
#[derive(Debug, Parser)]
#[command(
    name = "softprobe",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Output settings, accepted anywhere on the line.
    #[command(flatten)]
    pub output: Output,
}

/// The exit codes, listed in `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 runtime unreachable, 4 unknown session, \
5 invalid input, 10 doctor check failed (20 reserved for suites).";

/// Output flags shared by every command.
#[derive(Debug, Clone, Default, Args)]
pub struct Output {
    /// Print one JSON envelope (`status`, `exitCode`, `specVersion`, fields) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print more detail.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Print nothing on success.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Where the runtime is.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the runtime's HTTP API.
    #[arg(
        long,
        env = "SOFTPROBE_RUNTIME_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub runtime_url: String,
    /// Bearer token for the runtime.
    #[arg(
        long,
        env = "SOFTPROBE_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub api_token: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the runtime: control API, OTLP receivers and session store.
    Serve(ServeArgs),
    /// Run the proxy-wasm filter in front of an app (--upstream) or as a forward proxy.
    Proxy(ProxyArgs),
    /// Check the runtime, its API versions and auth, and optionally a filter .wasm and a proxy.
    Doctor(DoctorArgs),
    /// Create and drive sessions.
    Session(SessionArgs),
    /// Summarize a case file or a live session.
    Inspect(InspectArgs),
    /// Validate a case or rules file with the runtime's own parser.
    Validate(ValidateArgs),
    /// Push case traces to an OTLP receiver (Jaeger, Tempo, a Collector).
    Export(ExportArgs),
    /// Record: open a capture session, run a driver command, write the case.
    Capture(CaptureArgs),
    /// Replay statistics of a session.
    Replay(ReplayArgs),
    /// Regression suites from captured cases: run, validate, diff.
    Suite(SuiteArgs),
    /// Redact headers, JSON body fields, emails, tokens and card numbers in case files.
    Scrub(ScrubArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

/// `softprobe proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// The filter module (`softprobe_filter.wasm`).
    #[arg(long)]
    pub filter: PathBuf,
    /// Plugin configuration: JSON, or `@FILE`.
    #[arg(long)]
    pub config: String,
    /// Reverse-proxy target (`http://127.0.0.1:8081`); without it, a forward proxy for
    /// absolute-form requests (point the app's HTTP_PROXY here).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Where a filter cluster goes: `NAME=http://host:port`; may be repeated. Istio-style
    /// `outbound|<port>||<host>` names resolve without it.
    #[arg(long = "cluster", value_parser = parse_cluster)]
    pub clusters: Vec<(String, String)>,
    /// Worker threads, each with its own filter instance; a connection's streams stay on one
    /// (default: half the CPUs, at least one).
    #[arg(long)]
    pub workers: Option<NonZeroUsize>,
    /// Also run the runtime in this process, set up from the SOFTPROBE_* environment as
    /// `softprobe serve` is (HTTP on 127.0.0.1:8080 unless SOFTPROBE_LISTEN_ADDR says
    /// otherwise). The proxy's requests to that address are answered in the process, without
    /// a socket; tests and SDKs reach it on its address as usual.
    #[arg(long)]
    pub serve_runtime: bool,
}

fn parse_cluster(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=URL, got {text:?}"))?;
    if !url.starts_with("http://") {
        return Err(format!("cluster {name}: {url:?} is not an http:// URL"));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// `softprobe doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Runtime location.
    #[command(flatten)]
    pub client: ClientArgs,
    /// A filter .wasm to check (default: the wasm-release build in ./target, if present).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// A proxy to check header propagation through (sends a tagged request).
    #[arg(long, env = "SOFTPROBE_PROXY_URL")]
    pub proxy_url: Option<String>,
}

/// `softprobe session …`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Runtime location.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The session operation.
    #[command(subcommand)]
    pub command: SessionCommand,
}

/// The session to act on.
#[derive(Debug, Clone, Args)]
pub struct SessionId {
    /// Session id (default: $SOFTPROBE_SESSION_ID).
    #[arg(long = "session", env = "SOFTPROBE_SESSION_ID")]
    pub id: String,
}

/// Session operations.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a session (optionally with a policy and a case).
    Start {
        /// capture, replay or generate.
        #[arg(long, default_value = "replay")]
        mode: String,
        /// Policy file (JSON or YAML).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Case file to load.
        #[arg(long = "case")]
        case_file: Option<PathBuf>,
        /// Answer the app's outbound calls from the case (`--replay`), or its inbound ones too
        /// (`--replay=all`: the app itself is then replaced by the recording).
        #[arg(long, requires = "case_file", num_args = 0..=1, default_missing_value = "outbound", value_parser = ["outbound", "all"])]
        replay: Option<String>,
        /// Print exactly `export SOFTPROBE_SESSION_ID=<id>`.
        #[arg(long, conflicts_with = "json")]
        shell: bool,
    },
    /// Load a case file into the session.
    LoadCase {
        /// The session.
        #[command(flatten)]
        session: SessionId,
        /// Case file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Session rules.
    Rules {
        /// The rules operation.
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Session policy.
    Policy {
        /// The policy operation.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Session fixtures.
    Fixtures {
        /// The fixtures operation.
        #[command(subcommand)]
        command: FixturesCommand,
    },
    /// Print the session's counters.
    Stats {
        /// The session.
        #[command(flatten)]
        session: SessionId,
    },
    /// The hops no rule answered, with the closest candidate and what it did not match.
    Misses {
        /// The session.
        #[command(flatten)]
        session: SessionId,
    },
    /// Close the session; a capture session's case is written (to --out, if given).
    Close {
        /// The session.
        #[command(flatten)]
        session: SessionId,
        /// Where the capture's case goes on this machine (downloaded from the runtime).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `session rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Replace the session rules with a file (JSON or YAML; a document or a bare list).
    Apply {
        /// The session.
        #[command(flatten)]
        session: SessionId,
        /// Rules file.
        #[arg(long)]
        file: PathBuf,
    },
}

/// `session policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set the policy: --strict, a file, or neither for `allow`.
    Set {
        /// The session.
        #[command(flatten)]
        session: SessionId,
        /// Block unmocked outbound calls.
        #[arg(long, conflicts_with = "file")]
        strict: bool,
        /// Policy file (JSON or YAML).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// `session fixtures …`.
#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Replace the auth fixtures with a file (JSON or YAML).
    Set {
        /// The session.
        #[command(flatten)]
        session: SessionId,
        /// Fixtures file.
        #[arg(long)]
        file: PathBuf,
    },
}

/// `softprobe inspect …`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to inspect.
    #[command(subcommand)]
    pub command: InspectCommand,
}

/// Inspect targets.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Summarize a case file: spans by direction, host, method and status; ids; size.
    Case {
        /// Case file.
        file: PathBuf,
    },
    /// Show a live session's state.
    Session {
        /// Runtime location.
        #[command(flatten)]
        client: ClientArgs,
        /// The session.
        #[command(flatten)]
        session: SessionId,
    },
}

/// `softprobe validate …`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// What kind of file.
    #[arg(value_enum)]
    pub kind: ValidateKind,
    /// The file.
    pub file: PathBuf,
}

/// Validatable documents.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ValidateKind {
    /// A case file (`*.case.json`).
    Case,
    /// A rules file (JSON or YAML; a document or a bare list).
    Rules,
}

/// `softprobe export otlp …`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Export target.
    #[command(subcommand)]
    pub command: ExportCommand,
}

/// Export targets.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Push the traces of case files to an OTLP receiver.
    Otlp {
        /// Case files: a path or a glob (`captures/*.case.json`); may be repeated.
        #[arg(long = "case", required = true)]
        cases: Vec<String>,
        /// Receiver: `http(s)://host:4317` for gRPC, `http(s)://host:4318` (or a full
        /// `…/v1/traces` URL) for HTTP.
        #[arg(long)]
        endpoint: String,
        /// Wire protocol (default: `http/protobuf` for a `…/v1/traces` URL or port 4318,
        /// else `grpc`).
        #[arg(long, value_enum)]
        protocol: Option<ExportProtocol>,
        /// Extra header `K=V` (e.g. an auth token); may be repeated.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// Per-request timeout.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// OTLP export protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[value(name = "http/json")]
    HttpJson,
}

impl ExportProtocol {
    /// The name `--protocol` takes (and OTEL_EXPORTER_OTLP_PROTOCOL uses).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected K=V, got {text:?}"))?;
    if key.trim().is_empty() {
        return Err(format!("empty header name in {text:?}"));
    }
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// `softprobe capture run …`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Runtime location.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The capture operation.
    #[command(subcommand)]
    pub command: CaptureCommand,
}

/// Capture operations.
#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Open a capture session, run the driver with SOFTPROBE_SESSION_ID and
    /// SOFTPROBE_RUNTIME_URL set, close it and write the case.
    Run {
        /// Driver command, run with `sh -c`.
        #[arg(long)]
        driver: String,
        /// Where the case goes on this machine (downloaded from the runtime); without it, the
        /// case stays where the runtime wrote it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop the driver after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// `softprobe replay run …`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Runtime location.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The replay operation.
    #[command(subcommand)]
    pub command: ReplayCommand,
}

/// Replay operations.
#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Report a replay session's hits and misses with their explanations; exits 20 when the
    /// app made calls the case could not answer.
    Run {
        /// The session.
        #[command(flatten)]
        session: SessionId,
    },
}

/// `softprobe suite …`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// Where the runtime is.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The suite operation.
    #[command(subcommand)]
    pub command: SuiteCommand,
}

/// Suite operations.
#[derive(Debug, Subcommand)]
pub enum SuiteCommand {
    /// Run every case in its own replay session against the app; exit 20 when one fails.
    Run {
        /// The suite YAML file.
        suite: PathBuf,
        /// Where the app under test answers (the recorded inbound request is sent there).
        #[arg(long, env = "APP_URL")]
        app_url: Option<String>,
        /// Cases run at once (each has its own session).
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Only cases whose path or name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// After the first failure, skip the cases not started yet.
        #[arg(long)]
        fail_fast: bool,
        /// Write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write a self-contained HTML report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// `KEY=VALUE` lines for `${VAR}` in the suite (the environment wins).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// JavaScript hook files (.js, .mjs, .cjs; .ts on Node 22.6+), run by one `node`
        /// sidecar; repeatable and comma-separated.
        #[arg(long, value_delimiter = ',')]
        hooks: Vec<PathBuf>,
    },
    /// Check a suite: structure, case files found, JSONPaths parse.
    Validate {
        /// The suite YAML file.
        suite: PathBuf,
    },
    /// Exchanges added, removed and changed between two sets of cases.
    Diff {
        /// The older cases (a glob).
        #[arg(long)]
        baseline: String,
        /// The newer cases (a glob).
        #[arg(long)]
        current: String,
    },
}

/// `softprobe scrub …`.
#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Case files (any JSON) to redact in place; a file with nothing to redact is not written.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Text rules (`{rules: [{pattern, replace}]}` or a bare list, JSON or YAML) applied to
    /// string values instead of the defaults (emails, `Bearer` tokens, card numbers).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Header name to redact (request and response); may be repeated. Default: authorization,
    /// proxy-authorization, cookie, set-cookie, x-api-key, api-key, x-auth-token, x-public-key.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// JSON path (`$.card.number`) to redact in JSON bodies; may be repeated.
    #[arg(long = "json-path")]
    pub json_paths: Vec<String>,
    /// Replace values with a deterministic hash (`sha256:<16 hex>`) instead of `[REDACTED]`,
    /// so equal values stay equal and rules still match.
    #[arg(long)]
    pub hash: bool,
}

/// `softprobe completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}
