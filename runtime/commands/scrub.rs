//! `softprobe scrub`: redacts headers and JSON body fields in case files, in place. With
//! `--hash`, values become a deterministic digest so equal values stay equal.

use super::{CliError, Report, read_file};
use crate::cli::ScrubArgs;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use softprobe_pipeline::json_path::BodyJsonPredicate;
use softprobe_pipeline::otlp::keys;

pub(super) fn run(args: ScrubArgs) -> Result<Report, CliError> {
    let headers: Vec<String> = if args.headers.is_empty() {
        softprobe_otlp::SENSITIVE_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect()
    } else {
        args.headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    };
    let paths = args
        .json_paths
        .iter()
        .map(|p| {
            JsonPath::parse(p).map_err(|why| {
                CliError::invalid(format!("--json-path {p:?}: {why}"), "use $.a.b[0] form")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let replace = |value: &str| -> String {
        if args.hash {
            let digest = Sha256::digest(value.as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        } else {
            "[REDACTED]".to_owned()
        }
    };
    let mut total = 0;
    for file in &args.files {
        let mut case: Value = serde_json::from_slice(&read_file(file)?).map_err(|err| {
            CliError::invalid(
                format!("{}: not JSON: {err}", file.display()),
                "scrub takes case files",
            )
        })?;
        let mut changed = 0;
        for attribute in attributes(&mut case) {
            let key = attribute["key"].as_str().unwrap_or_default().to_owned();
            let Some(text) = attribute["value"]["stringValue"]
                .as_str()
                .map(str::to_owned)
            else {
                continue;
            };
            let header = key
                .strip_prefix(keys::REQUEST_HEADER_PREFIX)
                .or_else(|| key.strip_prefix(keys::RESPONSE_HEADER_PREFIX));
            let new = if header.is_some_and(|h| headers.iter().any(|n| n.eq_ignore_ascii_case(h))) {
                Some(replace(&text))
            } else if (key == keys::REQUEST_BODY || key == keys::RESPONSE_BODY) && !paths.is_empty()
            {
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|mut body| {
                        let hits: usize = paths.iter().map(|p| p.redact(&mut body, &replace)).sum();
                        (hits > 0).then(|| body.to_string())
                    })
            } else {
                None
            };
            if let Some(new) = new {
                attribute["value"] = json!({ "stringValue": new });
                changed += 1;
            }
        }
        let text = serde_json::to_string_pretty(&case).unwrap_or_default() + "\n";
        std::fs::write(file, text).map_err(|err| CliError::io(file, err))?;
        total += changed;
    }
    Ok(
        Report::fields(json!({"files": args.files.len(), "redacted": total, "hashed": args.hash}))
            .line(format!(
                "redacted {total} values in {} files",
                args.files.len()
            )),
    )
}

/// Every span attribute object in a case.
fn attributes(case: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    for trace in case["traces"].as_array_mut().into_iter().flatten() {
        for rs in trace["resourceSpans"].as_array_mut().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array_mut().into_iter().flatten() {
                for span in ss["spans"].as_array_mut().into_iter().flatten() {
                    out.extend(span["attributes"].as_array_mut().into_iter().flatten());
                }
            }
        }
    }
    out
}

/// A `$.a.b[0]` path whose target value gets replaced.
struct JsonPath(Vec<String>);

impl JsonPath {
    fn parse(path: &str) -> Result<Self, String> {
        // Reuse the rule syntax checker, then keep the steps for mutation.
        BodyJsonPredicate::parse(path)?;
        let steps = path
            .trim_start_matches('$')
            .split(['.', '['])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_end_matches(']')
                    .trim_matches('"')
                    .trim_matches('\'')
                    .to_owned()
            })
            .collect();
        Ok(Self(steps))
    }

    fn redact(&self, body: &mut Value, replace: &dyn Fn(&str) -> String) -> usize {
        let mut current = body;
        for step in &self.0 {
            let next = match current {
                Value::Object(map) => map.get_mut(step),
                Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            };
            match next {
                Some(next) => current = next,
                None => return 0,
            }
        }
        let text = match &*current {
            Value::String(s) => s.clone(),
            Value::Null => return 0,
            other => other.to_string(),
        };
        *current = Value::String(replace(&text));
        1
    }
}
