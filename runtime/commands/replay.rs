//! `softprobe replay run --session ID`: a replay session's hits and misses, each miss with
//! its explanation; exit 20 when the app made calls the case could not answer.

use super::client::connect;
use super::session::miss_lines;
use super::{CliError, Report, exit};
use crate::cli::{ReplayArgs, ReplayCommand};
use serde_json::{Value, json};
use std::time::Duration;

pub(super) async fn run(args: ReplayArgs) -> Result<Report, CliError> {
    let client = connect(&args.client, Duration::from_secs(5))?;
    let ReplayCommand::Run { session } = args.command;
    let handle = client.attach(&session.id);
    let state = handle.state_json().await?;
    let misses = handle.misses_json().await?;
    let stats = &state["stats"];
    let count = |name: &str| stats[name].as_u64().unwrap_or(0);
    let (hits, strict, forwarded) = (
        count("injectedSpans"),
        count("strictMisses"),
        count("injectMisses"),
    );
    let case_loaded = state["caseSummary"]["caseId"]
        .as_str()
        .is_some_and(|id| !id.is_empty());
    // A forwarded miss fails the replay only in a direction the session replays: there the
    // case was meant to answer, and the real dependency was called instead.
    let replayed = replayed_directions(&state["rules"]);
    let unanswered = misses["misses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|miss| {
            miss["decision"] == "forward"
                && miss["direction"]
                    .as_str()
                    .is_some_and(|d| replayed.contains(&d))
        })
        .count();
    let failed = strict > 0 || unanswered > 0;
    let mut report = Report::fields(json!({
        "sessionId": session.id,
        "caseLoaded": case_loaded,
        "stats": {"hits": hits, "misses": strict, "forwarded": forwarded, "injectedSpans": hits, "extractedSpans": count("extractedSpans"), "strictMisses": strict, "injectMisses": forwarded, "injectedErrors": count("injectedErrors")},
        "unansweredReplays": unanswered,
        "errorType": failed.then_some("code_regression"),
        "misses": misses["misses"],
        "droppedMisses": misses["dropped"],
    }))
    .line(format!("session {}", session.id))
    .line(format!("hits: {hits}"))
    .line(format!("strict misses: {strict}"))
    .line(format!("forwarded: {forwarded} ({unanswered} in a replayed direction)"));
    for line in miss_lines(&misses) {
        report = report.line(format!("miss: {line}"));
    }
    if failed {
        report = report.line("the app made calls the case does not answer");
        report.exit = exit::REPLAY_MISSES;
    }
    Ok(report)
}

/// The directions the session's replay rules answer (both for a rule without a direction).
fn replayed_directions(rules: &Value) -> Vec<&'static str> {
    let rules = rules
        .as_array()
        .or_else(|| rules["rules"].as_array())
        .into_iter()
        .flatten();
    let mut directions = Vec::new();
    for rule in rules.filter(|r| r["then"]["action"] == "replay") {
        match rule["when"]["direction"].as_str() {
            Some("inbound") => directions.push("inbound"),
            Some("outbound") => directions.push("outbound"),
            _ => directions.extend(["inbound", "outbound"]),
        }
    }
    directions
}
