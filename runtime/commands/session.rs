//! `softprobe session …`: start, load-case, rules apply, policy set, fixtures set, stats, close.

use super::client::connect;
use super::{CliError, Report, json_or_yaml, read_file};
use crate::cli::{FixturesCommand, PolicyCommand, RulesCommand, SessionArgs, SessionCommand};
use serde_json::{Value, json};
use softprobe_sdk::Softprobe;
use std::path::Path;
use std::time::Duration;

pub(super) async fn run(args: SessionArgs) -> Result<Report, CliError> {
    let client = connect(&args.client, Duration::from_secs(10))?;
    match args.command {
        SessionCommand::Start {
            mode,
            policy,
            case_file,
            replay,
            shell,
        } => {
            let start = Start {
                mode: &mode,
                policy: policy.as_deref(),
                case_file: case_file.as_deref(),
                replay: replay.as_deref(),
            };
            start.run(&client, shell).await
        }
        SessionCommand::LoadCase { session, file } => {
            let bytes = read_file(&file)?;
            let summary = case_summary(&bytes);
            let revision = client.attach(&session.id).load_case_raw(bytes).await?;
            Ok(Report::fields(json!({"sessionId": session.id, "sessionRevision": revision, "caseId": summary.0, "traceCount": summary.1}))
                .line(format!("session {} loaded case {}: revision {revision}", session.id, summary.0)))
        }
        SessionCommand::Rules {
            command: RulesCommand::Apply { session, file },
        } => {
            let body = json_or_yaml(&file)?;
            let count = rule_count(&body);
            let revision = client.attach(&session.id).set_rules_raw(body).await?;
            Ok(Report::fields(
                json!({"sessionId": session.id, "sessionRevision": revision, "ruleCount": count}),
            )
            .line(format!(
                "session {} rules applied ({count} rules): revision {revision}",
                session.id
            )))
        }
        SessionCommand::Policy {
            command:
                PolicyCommand::Set {
                    session,
                    strict,
                    file,
                },
        } => {
            let (body, what) = match (strict, file) {
                (true, _) => (
                    br#"{"externalHttp":"strict","defaultOnMiss":"error"}"#.to_vec(),
                    "strict".to_owned(),
                ),
                (false, Some(file)) => (json_or_yaml(&file)?, format!("from {}", file.display())),
                (false, None) => (br#"{"externalHttp":"allow"}"#.to_vec(), "allow".to_owned()),
            };
            let revision = client.attach(&session.id).set_policy_raw(body).await?;
            Ok(
                Report::fields(json!({"sessionId": session.id, "sessionRevision": revision}))
                    .line(format!("session {} policy set {what}", session.id)),
            )
        }
        SessionCommand::Fixtures {
            command: FixturesCommand::Set { session, file },
        } => {
            let body = json_or_yaml(&file)?;
            let revision = client
                .attach(&session.id)
                .set_auth_fixtures_raw(body)
                .await?;
            Ok(
                Report::fields(json!({"sessionId": session.id, "sessionRevision": revision}))
                    .line(format!("session {} fixtures set", session.id)),
            )
        }
        SessionCommand::Stats { session } => {
            let stats = client.attach(&session.id).stats_json().await?;
            let mut report = Report::fields(stats.clone())
                .line(format!("session {} stats", session.id))
                .line(format!("revision: {}", stats["sessionRevision"]))
                .line(format!(
                    "mode: {}",
                    stats["mode"].as_str().unwrap_or_default()
                ));
            if let Some(counters) = stats["stats"].as_object() {
                for (name, value) in counters {
                    report = report.line(format!("{name}: {value}"));
                }
            }
            Ok(report)
        }
        SessionCommand::Misses { session } => {
            let answer = client.attach(&session.id).misses_json().await?;
            let mut report =
                Report::fields(answer.clone()).line(format!("session {} misses", session.id));
            for line in miss_lines(&answer) {
                report = report.line(line);
            }
            Ok(report)
        }
        SessionCommand::Close { session, out } => close(&client, &session.id, out.as_deref()).await,
    }
}

/// What `session start` sets up.
struct Start<'a> {
    mode: &'a str,
    policy: Option<&'a Path>,
    case_file: Option<&'a Path>,
    /// `outbound` or `all`: replay rules for those directions.
    replay: Option<&'a str>,
}

impl Start<'_> {
    async fn run(&self, client: &Softprobe, shell: bool) -> Result<Report, CliError> {
        // Read local files before creating anything, so a typo leaves no session behind.
        let policy = self.policy.map(json_or_yaml).transpose()?;
        let case = self.case_file.map(read_file).transpose()?;
        let rules = self.replay.map(|replay| replay_rules(replay == "all"));
        // The mode as typed: the runtime names the valid ones when it refuses it.
        let mut session = client
            .start_session_raw(json!({ "mode": self.mode }).to_string())
            .await?;
        let written = async {
            // A new session is at revision 0.
            let mut revision = 0;
            if let Some(policy) = policy {
                revision = session.set_policy_raw(policy).await?;
            }
            if let Some(case) = case {
                revision = session.load_case_raw(case).await?;
            }
            if let Some(rules) = rules {
                revision = session.set_rules_raw(rules).await?;
            }
            Ok::<_, softprobe_sdk::Error>(revision)
        }
        .await;
        let revision = match written {
            Ok(revision) => revision,
            Err(err) => {
                // The runtime refused a document: leave no half-made session behind.
                let _ = session.close().await;
                return Err(err.into());
            }
        };
        let id = session.id();
        let report = Report::fields(
            json!({"sessionId": id, "sessionRevision": revision, "mode": self.mode}),
        );
        Ok(if shell {
            report.line(format!("export SOFTPROBE_SESSION_ID={id}"))
        } else {
            report
                .line(format!("session created: {id}"))
                .line(format!("mode: {}, revision: {revision}", self.mode))
        })
    }
}

/// The rules of `session start --replay`: answer outbound hops (and inbound ones, with
/// `all`) from the loaded case.
fn replay_rules(inbound_too: bool) -> Vec<u8> {
    let rule = |direction: &str| json!({"name": format!("replay-{direction}"), "when": {"direction": direction}, "then": {"action": "replay"}});
    let mut rules = vec![rule("outbound")];
    if inbound_too {
        rules.push(rule("inbound"));
    }
    json!({"version": 1, "rules": rules})
        .to_string()
        .into_bytes()
}

/// One line per miss: when, what, the decision, and the closest candidate's first mismatch.
pub(super) fn miss_lines(answer: &Value) -> Vec<String> {
    let mut lines: Vec<String> = answer["misses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|miss| {
            let text = |key: &str| miss[key].as_str().unwrap_or_default().to_owned();
            let closest = &miss["closest"];
            let explanation = match closest["kind"].as_str() {
                None => "no rule or recorded exchange shares its host or path".to_owned(),
                Some(kind) => {
                    let who = match kind {
                        "rule" => format!("rule {:?}", text_of(&closest["name"])),
                        _ => format!("recorded exchange {}", text_of(&closest["spanId"])),
                    };
                    let first = closest["mismatches"].as_array().and_then(|m| m.first());
                    match first {
                        Some(m) => format!(
                            "closest {who}: {}: expected {}, got {}",
                            text_of(&m["field"]),
                            text_of(&m["expected"]),
                            text_of(&m["actual"])
                        ),
                        None => format!("closest {who}"),
                    }
                }
            };
            format!(
                "{} {} {} {}{} -> {}; {explanation}",
                text("at"),
                text("direction"),
                text("method"),
                text("host"),
                text("path"),
                text("decision"),
            )
        })
        .collect();
    if let Some(dropped) = answer["dropped"].as_u64().filter(|d| *d > 0) {
        lines.push(format!("({dropped} older misses not kept)"));
    }
    lines
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

async fn close(client: &Softprobe, id: &str, out: Option<&Path>) -> Result<Report, CliError> {
    let written = close_to(client, id, out).await?;
    let mut report = Report::fields(json!({"sessionId": id, "closed": true}))
        .line(format!("session {id} closed"));
    if let Some(written) = written {
        report.fields.insert("capturePath".into(), json!(written));
        report = report.line(format!("capturePath: {written}"));
    }
    Ok(report)
}

/// Closes a session and says where its capture is. With `out`, the capture is downloaded
/// from the runtime and written there, on this machine (the runtime writes cases only inside
/// its own capture directory, on its own host); without, it is where the runtime wrote it.
pub(super) async fn close_to(
    client: &Softprobe,
    id: &str,
    out: Option<&Path>,
) -> Result<Option<String>, CliError> {
    let out = out
        .map(|p| std::path::absolute(p).map_err(|err| CliError::io(p, err)))
        .transpose()?;
    let session = client.attach(id);
    if out.is_some() {
        // Before closing anything: only a capture session has a case to download.
        let stats = session.stats_json().await?;
        if let Some(mode) = stats["mode"].as_str().filter(|mode| *mode != "capture") {
            return Err(CliError::new(
                super::exit::USAGE,
                "no_capture",
                format!("session {id} is a {mode} session: it has no capture to write to --out"),
                "close it without --out, or start a capture session (session start --mode capture)",
            ));
        }
    }
    let closed = session.close().await?;
    let Some(out) = out else {
        return Ok(closed.map(|path| path.display().to_string()));
    };
    let case = session.capture().await?;
    let text = serde_json::to_string_pretty(case.document()).unwrap_or_default();
    std::fs::write(&out, text + "\n").map_err(|err| CliError::io(&out, err))?;
    Ok(Some(out.display().to_string()))
}

/// `(caseId, traceCount)` read locally, for the report.
fn case_summary(bytes: &[u8]) -> (String, usize) {
    let value: Value = serde_json::from_slice(bytes).unwrap_or_default();
    let id = value["caseId"].as_str().unwrap_or_default().to_owned();
    (id, value["traces"].as_array().map_or(0, Vec::len))
}

fn rule_count(body: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    value
        .as_array()
        .or_else(|| value["rules"].as_array())
        .map_or(0, Vec::len)
}
