//! `softprobe export otlp`: pushes the traces of case files to any OTLP receiver, with
//! retries on retryable answers, a progress bar on a terminal and a summary.

use super::client::error_chain;
use super::{CliError, Report, exit, read_file};
use crate::cli::{ExportArgs, ExportCommand, ExportProtocol, Output};
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::{Value, json};
use softprobe_pipeline::otlp::{Encoding, decode_traces, span_count};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

/// Attempts per request on retryable answers (429, 502, 503, 504, gRPC UNAVAILABLE…).
const ATTEMPTS: u32 = 4;

enum Sender {
    Grpc(
        TraceServiceClient<tonic::transport::Channel>,
        Vec<(String, String)>,
    ),
    Http(reqwest::Client, String, Encoding, Vec<(String, String)>),
}

/// One request's fate: spans refused by the receiver, or a failure (retryable or not).
enum Failure {
    Retryable(String),
    Fatal(String),
}

pub(super) async fn run(args: ExportArgs, output: &Output) -> Result<Report, CliError> {
    let ExportCommand::Otlp {
        cases,
        endpoint,
        protocol,
        headers,
        timeout,
    } = args.command;
    let files = expand(&cases)?;
    let mut batches = Vec::new();
    for file in &files {
        let case: Value = serde_json::from_slice(&read_file(file)?).map_err(|err| {
            CliError::invalid(
                format!("{}: not JSON: {err}", file.display()),
                "`softprobe validate case` explains what is wrong",
            )
        })?;
        for (index, trace) in case["traces"].as_array().into_iter().flatten().enumerate() {
            let traces = decode_traces(trace.to_string().as_bytes(), Some(Encoding::Json))
                .map_err(|err| {
                    CliError::invalid(
                        format!("{}: traces[{index}]: {err}", file.display()),
                        "`softprobe validate case` explains what is wrong",
                    )
                })?;
            batches.push(traces);
        }
    }
    let total: usize = batches.iter().map(span_count).sum();
    let mut sender = connect(&endpoint, protocol, headers, timeout).await?;
    let progress = if std::io::stderr().is_terminal() && !output.quiet && !output.json {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} spans {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let (mut sent, mut failed, mut errors) = (0usize, 0usize, Vec::new());
    for traces in batches {
        let spans = span_count(&traces);
        match send_with_retries(&mut sender, traces).await {
            Ok(rejected) => {
                sent += spans - rejected.min(spans);
                failed += rejected.min(spans);
            }
            Err(message) => {
                failed += spans;
                errors.push(message);
            }
        }
        progress.inc(spans as u64);
    }
    progress.finish_and_clear();
    let mut report = Report::fields(json!({
        "endpoint": endpoint,
        "protocol": format!("{protocol:?}"),
        "files": files.len(),
        "spans": total,
        "sent": sent,
        "failed": failed,
        "errors": errors,
    }))
    .line(format!(
        "exported {sent} of {total} spans from {} files to {endpoint}; {failed} failed",
        files.len()
    ));
    if failed > 0 {
        for error in &errors {
            report = report.line(format!("  {error}"));
        }
        report.exit = exit::GENERIC;
    }
    Ok(report)
}

fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let matches: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|err| {
                CliError::new(
                    exit::USAGE,
                    "invalid_glob",
                    format!("--case {pattern:?}: {err}"),
                    "quote the pattern and check its syntax",
                )
            })?
            .filter_map(Result::ok)
            .collect();
        if matches.is_empty() {
            return Err(CliError::new(
                exit::GENERIC,
                "no_cases",
                format!("--case {pattern:?} matches no file"),
                "check the path or the glob",
            ));
        }
        files.extend(matches);
    }
    Ok(files)
}

async fn connect(
    endpoint: &str,
    protocol: ExportProtocol,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> Result<Sender, CliError> {
    let unreachable = |why: String| {
        CliError::new(
            exit::UNREACHABLE,
            "receiver_unreachable",
            format!("cannot reach {endpoint}: {why}"),
            "check --endpoint and that the receiver listens there",
        )
    };
    match protocol {
        ExportProtocol::Grpc => {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                .map_err(|err| {
                    CliError::new(
                        exit::USAGE,
                        "invalid_endpoint",
                        format!("--endpoint {endpoint:?}: {err}"),
                        "pass e.g. http://127.0.0.1:4317",
                    )
                })?
                .timeout(timeout)
                .connect()
                .await
                .map_err(|err| unreachable(error_chain(&err)))?;
            Ok(Sender::Grpc(TraceServiceClient::new(channel), headers))
        }
        ExportProtocol::HttpProtobuf | ExportProtocol::HttpJson => {
            let url = match endpoint.trim_end_matches('/') {
                base if base.ends_with("/v1/traces") => base.to_owned(),
                base => format!("{base}/v1/traces"),
            };
            let http = reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|err| unreachable(err.to_string()))?;
            let encoding = if protocol == ExportProtocol::HttpJson {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            Ok(Sender::Http(http, url, encoding, headers))
        }
    }
}

/// Sends one trace document; returns the spans the receiver refused.
async fn send_with_retries(
    sender: &mut Sender,
    traces: opentelemetry_proto::tonic::trace::v1::TracesData,
) -> Result<usize, String> {
    let request = ExportTraceServiceRequest {
        resource_spans: traces.resource_spans,
    };
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match send(sender, &request).await {
            Ok(response) => {
                return Ok(response
                    .partial_success
                    .map_or(0, |p| usize::try_from(p.rejected_spans).unwrap_or(0)));
            }
            Err(Failure::Retryable(why)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, %why, "Export failed; retrying.");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(Failure::Retryable(why) | Failure::Fatal(why)) => return Err(why),
        }
    }
    Err("retries exhausted".to_owned())
}

async fn send(
    sender: &mut Sender,
    request: &ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, Failure> {
    match sender {
        Sender::Grpc(client, headers) => {
            let mut grpc = tonic::Request::new(request.clone());
            for (key, value) in headers.iter() {
                let (Ok(key), Ok(value)) = (
                    key.to_ascii_lowercase()
                        .parse::<tonic::metadata::MetadataKey<_>>(),
                    value.parse(),
                ) else {
                    return Err(Failure::Fatal(format!(
                        "header {key} is not valid gRPC metadata"
                    )));
                };
                grpc.metadata_mut().insert(key, value);
            }
            client
                .export(grpc)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| {
                    let why = format!("gRPC {:?}: {}", status.code(), status.message());
                    match status.code() {
                        tonic::Code::Unavailable
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Aborted
                        | tonic::Code::DeadlineExceeded => Failure::Retryable(why),
                        _ => Failure::Fatal(why),
                    }
                })
        }
        Sender::Http(client, url, encoding, headers) => {
            let body = match encoding {
                Encoding::Protobuf => request.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(request).unwrap_or_default(),
            };
            let mut http = client
                .post(url.as_str())
                .header("content-type", encoding.content_type())
                .body(body);
            for (key, value) in headers.iter() {
                http = http.header(key.as_str(), value.as_str());
            }
            let response = http
                .send()
                .await
                .map_err(|err| Failure::Retryable(error_chain(&err)))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|err| Failure::Retryable(error_chain(&err)))?;
            if !status.is_success() {
                let why = format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                );
                return Err(match status.as_u16() {
                    429 | 502 | 503 | 504 => Failure::Retryable(why),
                    _ => Failure::Fatal(why),
                });
            }
            Ok(match encoding {
                Encoding::Protobuf => {
                    ExportTraceServiceResponse::decode(bytes.as_ref()).unwrap_or_default()
                }
                Encoding::Json => serde_json::from_slice(&bytes).unwrap_or_default(),
            })
        }
    }
}
