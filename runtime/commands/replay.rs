//! `softprobe replay run --session ID`: the inject statistics of a replay.

use super::session::path;
use super::{CliError, Report, RuntimeClient};
use crate::cli::{ReplayArgs, ReplayCommand};
use serde_json::json;
use std::time::Duration;

pub(super) async fn run(args: ReplayArgs) -> Result<Report, CliError> {
    let client = RuntimeClient::new(&args.client, Duration::from_secs(5))?;
    let ReplayCommand::Run { session } = args.command;
    let state = client.get(&path(&session.id, "state")).await?;
    let stats = &state["stats"];
    let count = |name: &str| stats[name].as_u64().unwrap_or(0);
    let (hits, strict, misses) = (
        count("injectedSpans"),
        count("strictMisses"),
        count("injectMisses"),
    );
    let case_loaded = state["caseSummary"]["caseId"]
        .as_str()
        .is_some_and(|id| !id.is_empty());
    // Strict misses mean the app made calls the case does not cover; no hits with a case
    // loaded suggests the case no longer matches the app's traffic.
    let diagnosis = if strict > 0 {
        Some("code_regression")
    } else if case_loaded && hits == 0 {
        Some("case_staleness")
    } else {
        None
    };
    let mut report = Report::fields(json!({
        "sessionId": session.id,
        "caseLoaded": case_loaded,
        "stats": {"hits": hits, "misses": strict, "forwarded": misses, "injectedSpans": hits, "extractedSpans": count("extractedSpans"), "strictMisses": strict, "injectMisses": misses, "injectedErrors": count("injectedErrors")},
        "errorType": diagnosis,
    }))
    .line(format!("session {}", session.id))
    .line(format!("hits: {hits}"))
    .line(format!("strict misses: {strict}"))
    .line(format!("forwarded: {misses}"))
    .line(format!("extracted spans: {}", count("extractedSpans")));
    if let Some(diagnosis) = diagnosis {
        report = report.line(format!("diagnosis: {diagnosis}"));
    }
    Ok(report)
}
