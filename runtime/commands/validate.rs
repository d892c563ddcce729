//! `softprobe validate case|rules FILE`: the runtime's own parsers, messages that point at
//! the place (JSON pointer and line) and say what is wrong; exit 5 when invalid.

use super::{CliError, Report, json_or_yaml, read_file};
use crate::cli::{ValidateArgs, ValidateKind};
use serde_json::json;
use softprobe_pipeline::case::Case;
use softprobe_pipeline::document::DocumentError;
use softprobe_pipeline::otlp::{Encoding, decode_traces};
use softprobe_pipeline::rules::parse_rules_document;

pub(super) fn run(args: ValidateArgs) -> Result<Report, CliError> {
    let file = args.file.display().to_string();
    let invalid = |err: DocumentError| {
        CliError::invalid(
            format!("{file}: {}: {}", json_pointer(&err.path), err.message),
            "fix the value at that place; the runtime would refuse this document with the same message",
        )
    };
    match args.kind {
        ValidateKind::Case => {
            let bytes = read_file(&args.file)?;
            let case = Case::parse(&bytes).map_err(invalid)?;
            for (index, trace) in case.traces.iter().enumerate() {
                let text = serde_json::to_vec(trace).unwrap_or_default();
                decode_traces(&text, Some(Encoding::Json)).map_err(|err| {
                    invalid(DocumentError::new(
                        format!("traces[{index}]"),
                        err.to_string(),
                    ))
                })?;
            }
            Ok(Report::fields(json!({"file": file, "kind": "case", "valid": true, "caseId": case.case_id, "traceCount": case.traces.len(), "ruleCount": case.rules.len()}))
                .line(format!("{file}: valid case {} ({} traces, {} rules)", case.case_id, case.traces.len(), case.rules.len())))
        }
        ValidateKind::Rules => {
            let bytes = json_or_yaml(&args.file)?;
            let rules = parse_rules_document(&bytes).map_err(invalid)?;
            Ok(Report::fields(
                json!({"file": file, "kind": "rules", "valid": true, "ruleCount": rules.len()}),
            )
            .line(format!("{file}: valid rules ({} rules)", rules.len())))
        }
    }
}

/// `rules[0].then.action` → `/rules/0/then/action` (RFC 6901); the document itself is `/`.
pub(crate) fn json_pointer(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut pointer = String::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let (key, indices) = rest.split_at(open);
            if !key.is_empty() {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            rest = indices;
            for index in rest.split('[').filter(|s| !s.is_empty()) {
                pointer.push('/');
                pointer.push_str(index.trim_end_matches(']'));
            }
        } else {
            pointer.push('/');
            pointer.push_str(&rest.replace('~', "~0").replace('/', "~1"));
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::json_pointer;

    #[test]
    fn paths_become_json_pointers() {
        assert_eq!(json_pointer("rules[0].then.action"), "/rules/0/then/action");
        assert_eq!(json_pointer("[2].when"), "/2/when");
        assert_eq!(json_pointer("traces[1][0]"), "/traces/1/0");
        assert_eq!(json_pointer(""), "/");
    }
}
