//! `softprobe export otlp`: pushes the traces of case files to any OTLP receiver (gRPC or
//! HTTP, plain or TLS), with retries on retryable answers, a progress bar on a terminal and a
//! summary that says what the receiver refused and why.

use super::client::{error_chain, log_call};
use super::{CliError, Report, exit, read_file};
use crate::cli::{ExportArgs, ExportCommand, ExportProtocol, Output};
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use softprobe_pipeline::otlp::{Encoding, decode_traces, span_count};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Attempts per request on retryable answers and on failures to reach the receiver.
const ATTEMPTS: u32 = 4;
/// The OTLP/HTTP path for traces.
const TRACES_PATH: &str = "/v1/traces";
/// The port OTLP/HTTP receivers listen on by convention.
const OTLP_HTTP_PORT: u16 = 4318;

pub(super) async fn run(args: ExportArgs, output: &Output) -> Result<Report, CliError> {
    let ExportCommand::Otlp {
        cases,
        endpoint,
        protocol,
        headers,
        timeout,
    } = args.command;
    let target = Target::parse(&endpoint, protocol)?;
    let mut sender = Sender::new(&target, &headers, timeout, output.verbose)?;
    let files = expand("--case", &cases)?;
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
    let (mut sent, mut failed, mut errors) = (0usize, 0usize, Errors::default());
    let mut unreachable = false;
    for traces in batches {
        let spans = span_count(&traces);
        if unreachable {
            // The receiver was not there a moment ago; don't wait out the retries again.
            failed += spans;
            continue;
        }
        match sender.send_with_retries(traces).await {
            Ok(Accepted { rejected, reason }) => {
                let rejected = rejected.min(spans);
                sent += spans - rejected;
                failed += rejected;
                if rejected > 0 {
                    errors.add(format!("the receiver refused {rejected} spans: {reason}"));
                }
            }
            Err(failure) => {
                failed += spans;
                unreachable = matches!(failure, Failure::Unreachable(_));
                errors.add(failure.into_message());
            }
        }
        progress.inc(spans as u64);
    }
    progress.finish_and_clear();
    let errors = errors.lines();
    let endpoint = target.url.as_str().trim_end_matches('/');
    let mut report = Report::fields(json!({
        "endpoint": endpoint,
        "protocol": target.protocol.as_str(),
        "files": files.len(),
        "spans": total,
        "sent": sent,
        "failed": failed,
        "errors": errors,
    }))
    .line(format!(
        "exported {sent} of {total} spans from {} files to {} ({}); {failed} failed",
        files.len(),
        endpoint,
        target.protocol.as_str(),
    ));
    for error in &errors {
        report = report.line(format!("  {error}"));
    }
    report.exit = if unreachable {
        exit::UNREACHABLE
    } else if failed > 0 {
        exit::GENERIC
    } else {
        exit::OK
    };
    Ok(report)
}

/// The files each glob of `flag` names; a glob matching nothing is an error, not an empty set.
pub(super) fn expand(flag: &str, patterns: &[String]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let matches: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|err| {
                CliError::new(
                    exit::USAGE,
                    "invalid_glob",
                    format!("{flag} {pattern:?}: {err}"),
                    "quote the pattern and check its syntax",
                )
            })?
            .filter_map(Result::ok)
            .collect();
        if matches.is_empty() {
            return Err(CliError::new(
                exit::GENERIC,
                "no_cases",
                format!("{flag} {pattern:?} matches no file"),
                "check the path or the glob",
            ));
        }
        files.extend(matches);
    }
    Ok(files)
}

/// The distinct failures of an export, each with the number of requests it ended.
#[derive(Debug, Default)]
struct Errors(Vec<(String, usize)>);

impl Errors {
    fn add(&mut self, message: String) {
        match self.0.iter_mut().find(|(seen, _)| *seen == message) {
            Some((_, requests)) => *requests += 1,
            None => self.0.push((message, 1)),
        }
    }

    fn lines(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(message, requests)| match requests {
                1 => message,
                n => format!("{message} ({n} requests)"),
            })
            .collect()
    }
}

/// Where the spans go: a checked URL and the protocol spoken there.
#[derive(Debug)]
struct Target {
    /// The gRPC origin, or the full OTLP/HTTP traces URL.
    url: Url,
    protocol: ExportProtocol,
}

impl Target {
    /// Checks `--endpoint` and settles the protocol: an explicit `--protocol`, else OTLP/HTTP
    /// for a `…/v1/traces` URL or port 4318, else gRPC.
    fn parse(endpoint: &str, protocol: Option<ExportProtocol>) -> Result<Self, CliError> {
        let usage = |why: String, hint: &str| {
            CliError::new(
                exit::USAGE,
                "invalid_endpoint",
                format!("--endpoint {endpoint:?}: {why}"),
                hint,
            )
        };
        const EXAMPLES: &str = "pass e.g. http://127.0.0.1:4317 (gRPC) or https://otlp.example.com/v1/traces (OTLP/HTTP)";
        let mut url =
            Url::parse(endpoint.trim()).map_err(|err| usage(err.to_string(), EXAMPLES))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(usage(
                format!("the scheme must be http or https, not {}", url.scheme()),
                EXAMPLES,
            ));
        }
        if !url.has_host() {
            return Err(usage("no host".to_owned(), EXAMPLES));
        }
        let path = url.path().trim_end_matches('/').to_owned();
        let traces_url = path.ends_with(TRACES_PATH);
        let protocol = match protocol {
            Some(protocol) => protocol,
            None if traces_url || url.port() == Some(OTLP_HTTP_PORT) => {
                ExportProtocol::HttpProtobuf
            }
            None => ExportProtocol::Grpc,
        };
        match protocol {
            ExportProtocol::Grpc if traces_url => {
                return Err(usage(
                    "a …/v1/traces URL is an OTLP/HTTP endpoint".to_owned(),
                    "drop --protocol grpc, or pass --protocol http/protobuf or http/json",
                ));
            }
            ExportProtocol::Grpc if !path.is_empty() || url.query().is_some() => {
                return Err(usage(
                    "a gRPC endpoint is an origin, without a path".to_owned(),
                    "pass e.g. https://otlp.example.com:4317",
                ));
            }
            ExportProtocol::Grpc => {}
            ExportProtocol::HttpProtobuf | ExportProtocol::HttpJson if traces_url => {
                url.set_path(&path);
            }
            ExportProtocol::HttpProtobuf | ExportProtocol::HttpJson => {
                url.set_path(&format!("{path}{TRACES_PATH}"));
            }
        }
        Ok(Self { url, protocol })
    }
}

/// A connection to one receiver in one protocol, with the `--header`s every request carries.
enum Sender {
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: MetadataMap,
        url: String,
        verbose: bool,
    },
    Http {
        client: reqwest::Client,
        url: Url,
        encoding: Encoding,
        headers: HeaderMap,
        verbose: bool,
    },
}

/// A request the receiver answered: the spans it refused (OTLP `partial_success`) and why.
struct Accepted {
    rejected: usize,
    reason: String,
}

/// Why a request failed.
enum Failure {
    /// The receiver could not be reached: connection, DNS, TLS handshake or timeout (exit 3).
    Unreachable(String),
    /// An answer worth retrying (429, 502–504, gRPC `UNAVAILABLE`…).
    Retryable(String),
    /// An answer that a retry will not change (400, 401, gRPC `INVALID_ARGUMENT`…).
    Fatal(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Self::Unreachable(why) => format!("cannot reach the receiver: {why}"),
            Self::Retryable(why) | Self::Fatal(why) => why,
        }
    }
}

impl Sender {
    /// Checks the headers and prepares the client; the receiver is first contacted by the
    /// first request, so that a receiver that is down counts like any other failed request.
    fn new(
        target: &Target,
        headers: &[(String, String)],
        timeout: Duration,
        verbose: bool,
    ) -> Result<Self, CliError> {
        let bad_header = |key: &str, why: String| {
            CliError::new(
                exit::USAGE,
                "invalid_header",
                format!("--header {key}: {why}"),
                "pass K=V with a valid header name and value",
            )
        };
        let client_error = |why: String| {
            CliError::new(
                exit::GENERIC,
                "client_error",
                why,
                "report this with the command line",
            )
        };
        match target.protocol {
            ExportProtocol::Grpc => {
                let url = target.url.as_str().trim_end_matches('/').to_owned();
                let mut endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|err| client_error(error_chain(&err)))?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                if target.url.scheme() == "https" {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_enabled_roots())
                        .map_err(|err| client_error(error_chain(&err)))?;
                }
                let mut metadata = MetadataMap::new();
                for (key, value) in headers {
                    let name =
                        MetadataKey::<Ascii>::from_bytes(key.to_ascii_lowercase().as_bytes())
                            .map_err(|err| bad_header(key, err.to_string()))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|err| bad_header(key, err.to_string()))?;
                    metadata.insert(name, value);
                }
                Ok(Self::Grpc {
                    client: TraceServiceClient::new(endpoint.connect_lazy()),
                    metadata,
                    url,
                    verbose,
                })
            }
            ExportProtocol::HttpProtobuf | ExportProtocol::HttpJson => {
                let mut map = HeaderMap::new();
                for (key, value) in headers {
                    let name = HeaderName::from_bytes(key.as_bytes())
                        .map_err(|err| bad_header(key, err.to_string()))?;
                    let value = HeaderValue::from_str(value)
                        .map_err(|err| bad_header(key, err.to_string()))?;
                    map.append(name, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|err| client_error(error_chain(&err)))?;
                let encoding = if target.protocol == ExportProtocol::HttpJson {
                    Encoding::Json
                } else {
                    Encoding::Protobuf
                };
                Ok(Self::Http {
                    client,
                    url: target.url.clone(),
                    encoding,
                    headers: map,
                    verbose,
                })
            }
        }
    }

    /// Sends one trace document, retrying what may succeed later.
    async fn send_with_retries(&mut self, traces: TracesData) -> Result<Accepted, Failure> {
        let request = ExportTraceServiceRequest {
            resource_spans: traces.resource_spans,
        };
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.send(&request).await {
                Ok(response) => {
                    let partial = response.partial_success.unwrap_or_default();
                    return Ok(Accepted {
                        rejected: usize::try_from(partial.rejected_spans).unwrap_or(0),
                        reason: match partial.error_message {
                            reason if reason.is_empty() => "no reason given".to_owned(),
                            reason => reason,
                        },
                    });
                }
                Err(Failure::Retryable(why) | Failure::Unreachable(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, %why, "Export failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    async fn send(
        &mut self,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, Failure> {
        let started = Instant::now();
        match self {
            Self::Grpc {
                client,
                metadata,
                url,
                verbose,
            } => {
                let mut grpc = tonic::Request::new(request.clone());
                *grpc.metadata_mut() = metadata.clone();
                let answer = client.export(grpc).await;
                if *verbose {
                    let outcome = match &answer {
                        Ok(_) => "OK".to_owned(),
                        Err(status) => format!("{:?}: {}", status.code(), status.message()),
                    };
                    log_call("gRPC Export", url, &outcome, started.elapsed());
                }
                answer
                    .map(tonic::Response::into_inner)
                    .map_err(grpc_failure)
            }
            Self::Http {
                client,
                url,
                encoding,
                headers,
                verbose,
            } => {
                let body = match encoding {
                    Encoding::Protobuf => request.encode_to_vec(),
                    Encoding::Json => serde_json::to_vec(request).unwrap_or_default(),
                };
                let answer = async {
                    let response = client
                        .post(url.clone())
                        .headers(headers.clone())
                        .header(CONTENT_TYPE, encoding.content_type())
                        .body(body)
                        .send()
                        .await?;
                    let status = response.status();
                    Ok::<_, reqwest::Error>((status, response.bytes().await?))
                }
                .await;
                if *verbose {
                    let outcome = match &answer {
                        Ok((status, _)) => status.to_string(),
                        Err(err) => format!("error: {}", error_chain(err)),
                    };
                    log_call("POST", url.as_str(), &outcome, started.elapsed());
                }
                let (status, bytes) =
                    answer.map_err(|err| Failure::Unreachable(error_chain(&err)))?;
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
}

/// A status tonic made up for a failure on this side (connect, TLS, timeout) carries that
/// failure as its source; one the receiver sent does not.
fn grpc_failure(status: tonic::Status) -> Failure {
    if let Some(source) = std::error::Error::source(&status) {
        let chain = error_chain(source);
        return Failure::Unreachable(if chain.contains(status.message()) {
            chain
        } else {
            format!("{}: {chain}", status.message())
        });
    }
    let why = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted
        | tonic::Code::DeadlineExceeded => Failure::Retryable(why),
        _ => Failure::Fatal(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, protocol: Option<ExportProtocol>) -> Result<(String, &str), u8> {
        Target::parse(endpoint, protocol)
            .map(|t| (t.url.to_string(), t.protocol.as_str()))
            .map_err(|err| err.exit)
    }

    #[test]
    fn the_endpoint_settles_the_protocol() {
        assert_eq!(
            target("http://h:4317", None),
            Ok(("http://h:4317/".to_owned(), "grpc"))
        );
        assert_eq!(
            target("https://h/v1/traces", None),
            Ok(("https://h/v1/traces".to_owned(), "http/protobuf"))
        );
        assert_eq!(
            target("http://h:4318", None),
            Ok(("http://h:4318/v1/traces".to_owned(), "http/protobuf"))
        );
        assert_eq!(
            target("http://h/otlp/", Some(ExportProtocol::HttpJson)),
            Ok(("http://h/otlp/v1/traces".to_owned(), "http/json"))
        );
    }

    #[test]
    fn malformed_or_contradictory_endpoints_are_usage_errors() {
        for (endpoint, protocol) in [
            ("not a url", None),
            ("localhost:4317", None),
            ("ftp://h", None),
            ("http://", None),
            ("http://h/v1/traces", Some(ExportProtocol::Grpc)),
            ("http://h:4317/otlp", None),
        ] {
            assert_eq!(target(endpoint, protocol), Err(exit::USAGE), "{endpoint}");
        }
    }
}
