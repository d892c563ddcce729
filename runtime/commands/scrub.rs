//! `softprobe scrub`: redacts case files in place (sensitive headers, JSON body fields, and
//! text such as emails, bearer tokens and card numbers), rewriting only the values it
//! redacts, so key order, layout and every other byte stay as they were.

use super::{CliError, Report, raw_child, read_document, read_file};
use crate::cli::ScrubArgs;
use regex::{Captures, Regex};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use softprobe_pipeline::document::from_value;
use softprobe_pipeline::json_path::BodyJsonPredicate;
use softprobe_pipeline::otlp::keys;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// What a redacted header or body field becomes without `--hash`.
const REDACTED: &str = "[REDACTED]";

/// The text rules used without `--rules`, as in the reference CLI: (pattern, replacement,
/// whether a match must pass the Luhn checksum).
const DEFAULT_PATTERNS: &[(&str, &str, bool)] = &[
    (
        r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
        "REDACTED_EMAIL",
        false,
    ),
    (
        r"\b(?i:bearer)\s+[A-Za-z0-9._~+/-]+=*",
        "Bearer REDACTED",
        false,
    ),
    // 13–19 digits, single spaces or dashes between them, starting like the card networks'
    // numbers (2–6) and passing the checksum: millisecond and nanosecond timestamps (which
    // start with 1) and most ids are left alone.
    (r"\b[2-6]\d(?:[ -]?\d){11,17}\b", "REDACTED_CARD", true),
];

pub(super) fn run(args: ScrubArgs) -> Result<Report, CliError> {
    let scrubber = Scrubber::new(&args)?;
    // Every file is read and planned before any is written: a file that is not JSON stops the
    // command with nothing changed.
    let mut plans = Vec::new();
    for file in &args.files {
        let text = String::from_utf8(read_file(file)?).map_err(|_| {
            CliError::invalid(
                format!("{}: not UTF-8 text", file.display()),
                "scrub takes case files (JSON)",
            )
        })?;
        let plan = scrubber.plan(&text).map_err(|err| {
            CliError::invalid(
                format!("{}: not JSON: {err}", file.display()),
                "scrub takes case files (JSON)",
            )
        })?;
        plans.push((file, text, plan));
    }
    let (mut total, mut files, mut lines) = (0, Vec::new(), Vec::new());
    for (file, text, plan) in plans {
        let written = plan.count > 0;
        if written {
            std::fs::write(file, splice(&text, plan.edits))
                .map_err(|err| CliError::io(file, err))?;
            lines.push(format!("{}: {} replacements", file.display(), plan.count));
        } else {
            lines.push(format!(
                "{}: nothing to redact, left as it was",
                file.display()
            ));
        }
        total += plan.count;
        files.push(json!({"path": file, "replaced": plan.count, "written": written}));
    }
    let mut report =
        Report::fields(json!({"files": files, "redacted": total, "hashed": args.hash}));
    report.lines = lines;
    Ok(report)
}

/// One value to rewrite: where it sits in the file and its new JSON text.
#[derive(Debug)]
struct Edit {
    range: Range<usize>,
    text: String,
}

/// The edits one file needs, and how many values and matches they redact.
#[derive(Debug, Default)]
struct Plan {
    edits: Vec<Edit>,
    count: usize,
}

/// Applies non-overlapping edits to `text` (an edit inside an earlier one is dropped).
fn splice(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|edit| edit.range.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for edit in edits {
        if edit.range.start < at {
            continue;
        }
        out.push_str(&text[at..edit.range.start]);
        out.push_str(&edit.text);
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Where `inner` (a value's raw text, borrowed from `outer`) starts in `outer`.
fn range_in(outer: &str, inner: &RawValue) -> Range<usize> {
    let start = inner.get().as_ptr().addr() - outer.as_ptr().addr();
    start..start + inner.get().len()
}

/// The members of a JSON object, each with its raw text.
fn members(raw: &RawValue) -> serde_json::Result<BTreeMap<String, &RawValue>> {
    serde_json::from_str(raw.get())
}

/// A text rule: every match of `regex` becomes `replace` (`$1` expands a group).
struct Pattern {
    regex: Regex,
    replace: String,
    luhn: bool,
}

/// A text rule as a `--rules` file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRule {
    /// A regular expression (RE2 syntax).
    pattern: String,
    /// What each match becomes; `$1` or `${name}` expand capture groups.
    replace: String,
}

/// A `--rules` file: a document with `rules`, or the bare list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRules {
    /// The rules, applied in order.
    rules: Vec<TextRule>,
}

/// What to redact, and how.
struct Scrubber {
    headers: Vec<String>,
    paths: Vec<JsonPath>,
    patterns: Vec<Pattern>,
    hash: bool,
}

impl Scrubber {
    fn new(args: &ScrubArgs) -> Result<Self, CliError> {
        let headers = if args.headers.is_empty() {
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
        let patterns = match &args.rules {
            Some(file) => text_rules(file)?,
            None => DEFAULT_PATTERNS
                .iter()
                .filter_map(|(pattern, replace, luhn)| {
                    Some(Pattern {
                        regex: Regex::new(pattern).ok()?,
                        replace: (*replace).to_owned(),
                        luhn: *luhn,
                    })
                })
                .collect(),
        };
        Ok(Self {
            headers,
            paths,
            patterns,
            hash: args.hash,
        })
    }

    /// The edits that redact one JSON document.
    fn plan(&self, text: &str) -> serde_json::Result<Plan> {
        let root: &RawValue = serde_json::from_str(text)?;
        let mut walk = Walk {
            doc: text,
            scrubber: self,
            plan: Plan::default(),
        };
        walk.value(root)?;
        Ok(walk.plan)
    }

    /// What a redacted header or body field becomes.
    fn replacement(&self, value: &str) -> String {
        if self.hash {
            let digest = Sha256::digest(value.as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        } else {
            REDACTED.to_owned()
        }
    }

    /// Whether a value is already what scrubbing makes of it (so scrubbing twice changes
    /// nothing the second time).
    fn is_redacted(value: &str) -> bool {
        value == REDACTED
            || value
                .strip_prefix("sha256:")
                .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// A span attribute's new string value, and how many redactions it took.
    fn attribute(&self, key: &str, value: &str) -> (String, usize) {
        let header = key
            .strip_prefix(keys::REQUEST_HEADER_PREFIX)
            .or_else(|| key.strip_prefix(keys::RESPONSE_HEADER_PREFIX));
        if header.is_some_and(|h| self.headers.iter().any(|n| n.eq_ignore_ascii_case(h))) {
            return if Self::is_redacted(value) {
                (value.to_owned(), 0)
            } else {
                (self.replacement(value), 1)
            };
        }
        let (mut text, mut count) = (value.to_owned(), 0);
        if (key == keys::REQUEST_BODY || key == keys::RESPONSE_BODY) && !self.paths.is_empty() {
            (text, count) = self.body(value);
        }
        let (text, matches) = self.text(&text);
        (text, count + matches)
    }

    /// A JSON body with the `--json-path` values replaced in place (a body that is not JSON
    /// is left alone).
    fn body(&self, body: &str) -> (String, usize) {
        let Ok(root) = serde_json::from_str::<&RawValue>(body) else {
            return (body.to_owned(), 0);
        };
        let mut edits = Vec::new();
        for path in &self.paths {
            let Some(target) = path.find(root) else {
                continue;
            };
            let value = match serde_json::from_str::<Value>(target.get()) {
                Ok(Value::String(text)) => text,
                Ok(Value::Null) | Err(_) => continue,
                Ok(other) => other.to_string(),
            };
            if !Self::is_redacted(&value) {
                edits.push(Edit {
                    range: range_in(body, target),
                    text: Value::String(self.replacement(&value)).to_string(),
                });
            }
        }
        let count = edits.len();
        (splice(body, edits), count)
    }

    /// A string with every text rule applied, and how many matches changed.
    fn text(&self, value: &str) -> (String, usize) {
        let mut text = value.to_owned();
        let mut count = 0;
        for pattern in &self.patterns {
            let replaced = pattern.regex.replace_all(&text, |caps: &Captures<'_>| {
                let found = &caps[0];
                if pattern.luhn && !luhn(found) {
                    return found.to_owned();
                }
                let mut out = String::new();
                caps.expand(&pattern.replace, &mut out);
                if out != found {
                    count += 1;
                }
                out
            });
            text = replaced.into_owned();
        }
        (text, count)
    }
}

/// Reads a `--rules` file: `{rules: [{pattern, replace}]}` or the bare list, JSON or YAML.
fn text_rules(file: &Path) -> Result<Vec<Pattern>, CliError> {
    let document = read_document(file)?;
    let name = file.display();
    let hint = "write {\"rules\": [{\"pattern\": \"<regex>\", \"replace\": \"<text>\"}]} (or YAML)";
    let value: Value = serde_json::from_slice(&document.json)
        .map_err(|err| CliError::invalid(format!("{name}: not JSON: {err}"), hint))?;
    let rules = match &value {
        Value::Array(_) => from_value::<Vec<TextRule>>(&value),
        Value::Object(map) if map.contains_key("pattern") && !map.contains_key("rules") => {
            return Err(CliError::invalid(
                format!("{name}: holds a single rule (`pattern`), not a rules document"),
                "wrap it: {\"rules\": [ <the rule> ]}, or make the file a list",
            ));
        }
        _ => from_value::<TextRules>(&value).map(|document| document.rules),
    }
    .map_err(|err| CliError::invalid(format!("{name}: {err}"), hint))?;
    rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| {
            let regex = Regex::new(&rule.pattern).map_err(|err| {
                CliError::invalid(
                    format!("{name}: rules[{index}].pattern: {err}"),
                    "fix the regular expression (RE2 syntax)",
                )
            })?;
            Ok(Pattern {
                regex,
                replace: rule.replace,
                luhn: false,
            })
        })
        .collect()
}

/// The Luhn checksum every payment card number passes.
fn luhn(candidate: &str) -> bool {
    let sum: u32 = candidate
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(index, digit)| match (index % 2, digit * 2) {
            (0, _) => digit,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a member holds OTLP structure rather than recorded data (ids, timestamps), which
/// text rules must not touch: a 19-digit `startTimeUnixNano` is not a card number.
fn structural(key: &str) -> bool {
    matches!(key, "traceId" | "spanId" | "parentSpanId") || key.ends_with("UnixNano")
}

/// A walk over one document, collecting edits.
struct Walk<'a> {
    doc: &'a str,
    scrubber: &'a Scrubber,
    plan: Plan,
}

impl Walk<'_> {
    fn value(&mut self, raw: &RawValue) -> serde_json::Result<()> {
        match raw.get().as_bytes().first() {
            Some(b'{') => {
                let members = members(raw)?;
                if self.attribute(&members)? {
                    return Ok(());
                }
                for (key, value) in members {
                    if !structural(&key) {
                        self.value(value)?;
                    }
                }
            }
            Some(b'[') => {
                for item in serde_json::from_str::<Vec<&RawValue>>(raw.get())? {
                    self.value(item)?;
                }
            }
            Some(b'"') => {
                let text: String = serde_json::from_str(raw.get())?;
                let (new, count) = self.scrubber.text(&text);
                self.edit(raw, &new, count);
            }
            _ => {}
        }
        Ok(())
    }

    /// Redacts an OTLP attribute with a string value (`{"key": …, "value": {"stringValue":
    /// …}}`); false when `object` is something else.
    fn attribute(&mut self, object: &BTreeMap<String, &RawValue>) -> serde_json::Result<bool> {
        let (Some(key), Some(value)) = (object.get("key"), object.get("value")) else {
            return Ok(false);
        };
        let (Ok(key), Ok(value)) = (serde_json::from_str::<String>(key.get()), members(value))
        else {
            return Ok(false);
        };
        let Some(raw) = value.get("stringValue") else {
            return Ok(false);
        };
        let text: String = serde_json::from_str(raw.get())?;
        let (new, count) = self.scrubber.attribute(&key, &text);
        self.edit(raw, &new, count);
        Ok(true)
    }

    fn edit(&mut self, raw: &RawValue, new: &str, count: usize) {
        if count > 0 {
            self.plan.edits.push(Edit {
                range: range_in(self.doc, raw),
                text: Value::String(new.to_owned()).to_string(),
            });
            self.plan.count += count;
        }
    }
}

/// A `$.a.b[0]` path whose target value gets replaced.
struct JsonPath(Vec<String>);

impl JsonPath {
    fn parse(path: &str) -> Result<Self, String> {
        // Reuse the rule syntax checker, then keep the steps.
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

    /// The raw value the path names in `root`, if any.
    fn find<'a>(&self, root: &'a RawValue) -> Option<&'a RawValue> {
        self.0
            .iter()
            .try_fold(root, |current, step| raw_child(current, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(&ScrubArgs {
            files: Vec::new(),
            rules: None,
            headers: Vec::new(),
            json_paths: vec!["$.card".to_owned()],
            hash: false,
        })
        .expect("defaults")
    }

    #[test]
    fn default_patterns_redact_emails_tokens_and_cards_only() {
        let (text, count) = scrubber()
            .text("mail ann.lee@example.co.uk, auth Bearer eyJ.a-b_c=, card 4111 1111 1111 1111");
        assert_eq!(
            text,
            "mail REDACTED_EMAIL, auth Bearer REDACTED, card REDACTED_CARD"
        );
        assert_eq!(count, 3);
        for untouched in [
            "1764380000000000000",
            "1764380000000",
            "4111111111111112",
            "order 12345",
        ] {
            assert_eq!(scrubber().text(untouched), (untouched.to_owned(), 0));
        }
        let (again, count) = scrubber().text(&text);
        assert_eq!((again.as_str(), count), (text.as_str(), 0), "idempotent");
    }

    #[test]
    fn only_redacted_values_change() {
        let doc = "{\n    \"z\": 1,\n    \"a\": [\"x@y.io\",\n 2],\n    \"startTimeUnixNano\": \"4111111111111111\"\n}\n";
        let plan = scrubber().plan(doc).expect("JSON");
        assert_eq!(
            splice(doc, plan.edits),
            doc.replace("x@y.io", "REDACTED_EMAIL")
        );
    }

    #[test]
    fn body_paths_keep_the_body_layout() {
        let (body, count) = scrubber().body(r#"{ "z": 1, "card": "4111", "a": {"card": 2} }"#);
        assert_eq!(
            body,
            r#"{ "z": 1, "card": "[REDACTED]", "a": {"card": 2} }"#
        );
        assert_eq!(count, 1);
    }
}
