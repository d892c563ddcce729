//! `softprobe inspect case FILE` and `inspect session`: what a case or a session holds.

use super::client::connect;
use super::{CliError, Report, read_file};
use crate::cli::{InspectArgs, InspectCommand};
use serde_json::{Value, json};
use softprobe_pipeline::otlp::{AttrRef, Encoding, SpanView, decode_traces, keys};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) async fn run(args: InspectArgs) -> Result<Report, CliError> {
    match args.command {
        InspectCommand::Case { file } => inspect_case(&file),
        InspectCommand::Session { client, session } => {
            let client = connect(&client, Duration::from_secs(5))?;
            let state = client.attach(&session.id).state_json().await?;
            let case = match state["caseSummary"]["caseId"].as_str() {
                Some(id) => format!("{id} ({} traces)", state["caseSummary"]["traceCount"]),
                None => "(none loaded)".to_owned(),
            };
            let stats = &state["stats"];
            let mut report = Report::fields(state.clone())
                .line(format!("session {}", session.id))
                .line(format!("revision: {}", state["sessionRevision"]))
                .line(format!(
                    "mode: {}",
                    state["mode"].as_str().unwrap_or_default()
                ))
                .line(format!("case: {case}"))
                .line(format!(
                    "stats: injected={} extracted={} strictMisses={} misses={}",
                    stats["injectedSpans"],
                    stats["extractedSpans"],
                    stats["strictMisses"],
                    stats["injectMisses"]
                ));
            for key in ["policy", "rules", "fixtures"] {
                if let Some(document) = state.get(key) {
                    report = report.line(format!("{key}: {document}"));
                }
            }
            Ok(report)
        }
    }
}

fn inspect_case(file: &std::path::Path) -> Result<Report, CliError> {
    let bytes = read_file(file)?;
    let case: Value = serde_json::from_slice(&bytes).map_err(|err| {
        CliError::invalid(
            format!("{}: not JSON: {err}", file.display()),
            "`softprobe validate case` explains what is wrong",
        )
    })?;
    let mut spans = Vec::new();
    let mut tally: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for (index, trace) in case["traces"].as_array().into_iter().flatten().enumerate() {
        let traces =
            decode_traces(trace.to_string().as_bytes(), Some(Encoding::Json)).map_err(|err| {
                CliError::invalid(
                    format!("{}: traces[{index}]: {err}", file.display()),
                    "`softprobe validate case` explains what is wrong",
                )
            })?;
        for rs in &traces.resource_spans {
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let view = SpanView::of(span, rs.resource.as_ref());
                let span_type = view.span_type().unwrap_or("-").to_owned();
                let hop = softprobe_pipeline::hop::Hop::from_span(view);
                let status = hop
                    .attributes
                    .get(keys::RESPONSE_STATUS)
                    .and_then(AttrRef::text)
                    .unwrap_or_default();
                let direction = hop.direction.map(|d| d.as_str()).unwrap_or("-").to_owned();
                let (host, method) = (hop.host.to_owned(), hop.method.into_owned());
                for (key, value) in [
                    ("direction", &direction),
                    ("host", &host),
                    ("method", &method),
                    ("status", &status),
                ] {
                    let value = if value.is_empty() {
                        "-".to_owned()
                    } else {
                        value.clone()
                    };
                    *tally.entry(key).or_default().entry(value).or_default() += 1;
                }
                spans.push(json!({
                    "trace": index,
                    "traceId": hex(&span.trace_id),
                    "spanId": hex(&span.span_id),
                    "type": span_type,
                    "direction": direction,
                    "method": method,
                    "host": host,
                    "path": hop.path,
                    "status": status,
                }));
            }
        }
    }
    let case_id = case["caseId"].as_str().unwrap_or_default();
    let mut report = Report::fields(json!({
        "file": file.display().to_string(),
        "caseId": case_id,
        "version": case["version"],
        "bytes": bytes.len(),
        "traceCount": case["traces"].as_array().map_or(0, Vec::len),
        "spanCount": spans.len(),
        "counts": tally,
        "spanSummary": spans,
    }))
    .line(format!("case {case_id} ({} bytes)", bytes.len()))
    .line(format!(
        "traces: {}, spans: {}",
        case["traces"].as_array().map_or(0, Vec::len),
        spans.len()
    ));
    for (key, counts) in &tally {
        let text: Vec<String> = counts
            .iter()
            .map(|(value, n)| format!("{value}={n}"))
            .collect();
        report = report.line(format!("by {key}: {}", text.join(" ")));
    }
    for span in &spans {
        report = report.line(format!(
            "  {} {} {} {}{} -> {} (trace {} span {})",
            span["type"].as_str().unwrap_or_default(),
            span["direction"].as_str().unwrap_or_default(),
            span["method"].as_str().unwrap_or_default(),
            span["host"].as_str().unwrap_or_default(),
            span["path"].as_str().unwrap_or_default(),
            span["status"].as_str().unwrap_or_default(),
            span["traceId"].as_str().unwrap_or_default(),
            span["spanId"].as_str().unwrap_or_default(),
        ));
    }
    Ok(report)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
