//! `softprobe doctor`: a check list (ok / warn / fail) over the runtime, its API versions and
//! auth, a filter `.wasm` and a proxy; exit 10 when any check fails.

use super::client::{connect, error_chain, status_text};
use super::{CliError, Report, exit};
use crate::api::{RUNTIME_VERSION, SCHEMA_VERSION, SPEC_VERSION};
use crate::cli::{DoctorArgs, Output};
use serde_json::json;
use softprobe_sdk::{Error, RuntimeInfo};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `doctor` looks for the filter when `--wasm` is not given.
const DEFAULT_WASM: &str = "target/wasm32-wasip1/wasm-release/softprobe_filter.wasm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

struct Check {
    name: &'static str,
    status: Status,
    message: String,
}

impl Check {
    fn new(name: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            name,
            status,
            message: message.into(),
        }
    }
}

pub(super) async fn run(args: DoctorArgs, _output: &Output) -> Result<Report, CliError> {
    let client = connect(&args.client, Duration::from_secs(5))?;
    let mut checks = Vec::new();
    let mut meta = RuntimeInfo::default();
    match client.health().await {
        Err(err @ Error::Unreachable { .. }) => checks.push(Check::new(
            "runtime-reachable",
            Status::Fail,
            CliError::from(err).message,
        )),
        health => {
            checks.push(match health {
                Ok(health) if health.is_ok() => Check::new(
                    "runtime-reachable",
                    Status::Ok,
                    format!("{} is healthy", client.url()),
                ),
                other => Check::new(
                    "runtime-reachable",
                    Status::Fail,
                    format!("{}/health answered {}", client.url(), answered(other.err())),
                ),
            });
            let auth = match client.meta().await {
                Ok(info) => {
                    meta = info;
                    Ok(())
                }
                // A 200 that is not the runtime's JSON still says the credentials passed.
                Err(Error::InvalidResponse { .. }) => Ok(()),
                Err(Error::Unauthorized { .. }) => Err(
                    "the runtime requires a token: set SOFTPROBE_API_TOKEN (or --api-token) to its value".to_owned(),
                ),
                Err(err @ Error::Unreachable { .. }) => Err(CliError::from(err).message),
                Err(err) => Err(format!("/v1/meta answered {}", answered(Some(err)))),
            };
            match auth {
                Ok(()) => {
                    checks.push(Check::new(
                        "auth",
                        Status::Ok,
                        "the runtime accepts this client's credentials",
                    ));
                    checks.push(version_check(&meta));
                }
                Err(why) => checks.push(Check::new("auth", Status::Fail, why)),
            }
        }
    }
    checks.push(wasm_check(args.wasm.as_deref()));
    checks.push(match &args.proxy_url {
        None => Check::new(
            "header-echo",
            Status::Skip,
            "set --proxy-url (SOFTPROBE_PROXY_URL) to check a proxy",
        ),
        Some(url) => proxy_check(url).await,
    });

    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let mut report = Report::fields(json!({
        "cliVersion": RUNTIME_VERSION,
        "runtimeUrl": client.url(),
        "runtimeVersion": meta.runtime_version,
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "status": match c.status { Status::Ok => "ok", Status::Warn => "warn", Status::Fail => "fail", Status::Skip => "skip" },
            "details": {"message": c.message},
        })).collect::<Vec<_>>(),
    }))
    .line(format!("softprobe {RUNTIME_VERSION} (spec {SPEC_VERSION}, schema {SCHEMA_VERSION})"));
    for check in &checks {
        let mark = match check.status {
            Status::Ok => "✓",
            Status::Warn => "⚠",
            Status::Fail => "✗",
            Status::Skip => "·",
        };
        report = report.line(format!("{mark} {}: {}", check.name, check.message));
    }
    if failed {
        report.exit = exit::DOCTOR;
    }
    Ok(report)
}

/// The status of an answer that arrived: an error answer's, else a success's (`200 OK`).
fn answered(err: Option<Error>) -> String {
    status_text(err.and_then(|err| err.status()).unwrap_or(200))
}

fn version_check(meta: &RuntimeInfo) -> Check {
    let spec = meta.spec_version.as_deref().unwrap_or_default();
    let schema = meta.schema_version.as_deref().unwrap_or_default();
    if spec == SPEC_VERSION && schema == SCHEMA_VERSION {
        Check::new(
            "api-version",
            Status::Ok,
            format!(
                "{spec}, schema {schema}, runtime {}",
                meta.runtime_version.as_deref().unwrap_or("?")
            ),
        )
    } else {
        Check::new(
            "api-version",
            Status::Fail,
            format!(
                "the runtime speaks {spec:?} schema {schema:?}; this CLI expects {SPEC_VERSION} schema {SCHEMA_VERSION}: upgrade the older side"
            ),
        )
    }
}

fn wasm_check(explicit: Option<&Path>) -> Check {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WASM));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if explicit.is_some() => {
            return Check::new(
                "wasm-binary",
                Status::Fail,
                format!("{}: {err}", path.display()),
            );
        }
        Err(_) => {
            return Check::new(
                "wasm-binary",
                Status::Warn,
                format!(
                    "no filter at {DEFAULT_WASM}; build it with `cargo build --profile wasm-release -p softprobe-filter --target wasm32-wasip1` or pass --wasm"
                ),
            );
        }
    };
    match proxy_wasm_exports(&bytes) {
        Ok(abi) => Check::new(
            "wasm-binary",
            Status::Ok,
            format!("{} ({} KiB, {abi})", path.display(), bytes.len() / 1024),
        ),
        Err(why) => Check::new(
            "wasm-binary",
            Status::Fail,
            format!("{}: {why}", path.display()),
        ),
    }
}

/// Validates a module and finds its proxy-wasm ABI version export.
pub(crate) fn proxy_wasm_exports(bytes: &[u8]) -> Result<String, String> {
    wasmparser::Validator::new()
        .validate_all(bytes)
        .map_err(|err| format!("not a valid WebAssembly module: {err}"))?;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::ExportSection(exports)) = payload {
            for export in exports.into_iter().flatten() {
                if export.name.starts_with("proxy_abi_version_") {
                    return Ok(export.name.to_owned());
                }
            }
        }
    }
    Err(
        "a WebAssembly module, but not a proxy-wasm filter (no proxy_abi_version_* export)"
            .to_owned(),
    )
}

/// Sends a tagged request through the proxy and reports whether it answered.
async fn proxy_check(url: &str) -> Check {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build();
    let Ok(client) = client else {
        return Check::new("header-echo", Status::Warn, "cannot build an HTTP client");
    };
    match client
        .get(url)
        .header("x-softprobe-session-id", "sess_doctor_probe")
        .send()
        .await
    {
        Ok(response) => Check::new(
            "header-echo",
            Status::Ok,
            format!("{url} answered {} to a tagged request", response.status()),
        ),
        Err(err) => Check::new(
            "header-echo",
            Status::Warn,
            format!("{url} is unreachable: {}", error_chain(&err)),
        ),
    }
}
